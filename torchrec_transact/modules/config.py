#!/usr/bin/env python3
"""The configuration of TransAct and the baseline encoders (needs only torch's standard
library: the encoder core imports it without torchrec)."""

from dataclasses import dataclass
from typing import Optional

EARLY_FUSION_MODES = ("concat", "append", "none")
LIFELONG_SELECTIONS = ("nearest", "recent")
IMPRESSION_ITEM_FEATURE = "impression_item_id"  # the key the package's data sources use


@dataclass
class TransActConfig:
    """Everything that shapes a :class:`TransAct` module (and the baseline encoders,
    which read the fields that apply to them).

    Args:
        num_action_types (int): size of the action-type vocabulary (click, save, hide, ...).
        num_items (int): size of the item-id vocabulary, shared by sequence and candidate.
        action_feature (str): KJT key of the action types.
        item_feature (str): KJT key of the engaged item ids; its weights are action ages.
        candidate_feature (str): KJT key of the candidate item id (one per example).
        action_embedding_dim (int): width of the trainable action-type embedding; 0 leaves
            action types out of the tokens.
        item_embedding_dim (int): width of the item embedding table.
        max_seq_len (int): only the most recent ``max_seq_len`` actions are kept.
        latest_k (int): how many of the most recent output tokens are kept as features.
        max_pool (bool): append a max pool over all output tokens.
        num_layers (int): transformer encoder layers.
        num_heads (int): attention heads.
        ffn_dim (int): feed-forward width of each layer.
        dropout (float): dropout of the encoder layers.
        early_fusion (str): ``"concat"`` (candidate embedding concatenated to every
            token), ``"append"`` (the candidate is one more token, as in BST) or
            ``"none"`` (the encoder never sees the candidate). With ``"append"`` the
            candidate token comes first (position 0): it is one of the ``latest_k``
            output tokens (followed by the latest_k - 1 most recent actions) and is in
            the max pool, and an example with no action still has a non-zero output.
        time_window_s (float): upper bound, in seconds, of the random time window that
            hides the newest actions in training; 0 disables it.
        positional_encoding (bool): add a learned embedding of each token's position
            (0 = most recent). Off by default, as in the paper.
        max_length_buckets (int): at most this many length buckets per batch; each is
            padded only to its own longest sequence. 1 pads the batch to its longest.
        validate_inputs (bool): check keys, lengths, id ranges and ages on every call.
        lifelong_action_feature (str): KJT key of the lifelong sequence's action types
            (TransAct V2, arXiv 2506.02267).
        lifelong_item_feature (str): KJT key of the lifelong sequence's item ids; weights
            are ages; the item table is shared.
        lifelong_max_len (int): only the most recent ``lifelong_max_len`` non-leakage
            lifelong actions are eligible.
        lifelong_select_k (int): lifelong actions selected per example and joined to the
            realtime tokens; 0 (default): no lifelong sequence, V1.
        lifelong_selection (str): ``"nearest"`` (the actions whose items are nearest to
            the candidate, by dot product; ties to the more recent) or ``"recent"`` (the
            most recent: the control).
        lifelong_frozen_items (bool): look the lifelong items up, and the candidate for
            the selection, in a frozen row-wise int8 table of pretrained item vectors
            held by the encoder (``SequenceModule.load_lifelong_items``) instead of the
            trained item table: no gradient and no optimizer work for the thousands of
            lifelong ids of an example, 48 bytes a row at width 32 (32 codes, a float16
            scale and bias, FBGEMM's alignment) instead of 128, and a similarity
            that means something for items the model never trained (V2's frozen
            pretrained vectors). The realtime sequence and the candidate token keep the
            trained table.
        impression_item_feature (Optional[str]): KJT key of the impression sequence (items
            shown and not engaged with; weights are ages); None (default): none.
        impression_max_len (int): most recent non-leakage impressions kept.
        next_action (bool): add the head of TransAct V2's Next Action Loss: in training,
            the realtime sequence is also encoded without the candidate and projected to
            an item vector (:meth:`TransActSequenceArch.next_action_inputs`).
    """

    num_action_types: int
    num_items: int
    action_feature: str = "action_type"
    item_feature: str = "item_id"
    candidate_feature: str = "candidate_item_id"
    action_embedding_dim: int = 32
    item_embedding_dim: int = 32
    max_seq_len: int = 100
    latest_k: int = 10
    max_pool: bool = True
    num_layers: int = 2
    num_heads: int = 1
    ffn_dim: int = 32
    dropout: float = 0.1
    early_fusion: str = "concat"
    time_window_s: float = 86400.0
    positional_encoding: bool = False
    max_length_buckets: int = 8
    validate_inputs: bool = True
    lifelong_action_feature: str = "lifelong_action_type"
    lifelong_item_feature: str = "lifelong_item_id"
    lifelong_max_len: int = 10_000
    lifelong_select_k: int = 0
    lifelong_selection: str = "nearest"
    lifelong_frozen_items: bool = False
    impression_item_feature: Optional[str] = None
    impression_max_len: int = 100
    next_action: bool = False

    def __post_init__(self) -> None:
        if self.early_fusion not in EARLY_FUSION_MODES:
            raise ValueError(
                f"early_fusion={self.early_fusion!r}, expected one of {EARLY_FUSION_MODES}"
            )
        if self.action_embedding_dim < 0 or self.item_embedding_dim < 1:
            raise ValueError(
                f"action_embedding_dim={self.action_embedding_dim} (>= 0) and "
                f"item_embedding_dim={self.item_embedding_dim} (>= 1)"
            )
        for name in ("num_action_types", "num_items", "max_seq_len", "num_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}, expected >= 1")
        if self.latest_k < 0 or (self.latest_k == 0 and not self.max_pool):
            raise ValueError(
                f"latest_k={self.latest_k}, max_pool={self.max_pool}: the output would be "
                "empty; keep at least one latest token or the max pool"
            )
        if self.num_heads < 1 or not 0.0 <= self.dropout < 1.0:
            raise ValueError(
                f"num_heads={self.num_heads} (>= 1), dropout={self.dropout} (in [0, 1))"
            )
        if self.time_window_s < 0:
            raise ValueError(f"time_window_s={self.time_window_s}, expected >= 0")
        if self.lifelong_select_k < 0 or self.lifelong_max_len < 1 or self.impression_max_len < 1:
            raise ValueError(
                f"lifelong_select_k={self.lifelong_select_k} (>= 0), lifelong_max_len="
                f"{self.lifelong_max_len} and impression_max_len={self.impression_max_len} (>= 1)"
            )
        if self.lifelong_selection not in LIFELONG_SELECTIONS:
            raise ValueError(
                f"lifelong_selection={self.lifelong_selection!r}, expected one of {LIFELONG_SELECTIONS}"
            )
        if self.lifelong_frozen_items and self.lifelong_select_k == 0:
            raise ValueError("lifelong_frozen_items needs a lifelong sequence: lifelong_select_k > 0")
        if self.side_sequences and self.action_embedding_dim == 0:
            raise ValueError(
                "lifelong and impression sequences mark their tokens with a sequence-type "
                "embedding in the action part: action_embedding_dim must be > 0"
            )

    @property
    def side_sequences(self) -> bool:
        """True when TransAct V2's lifelong or impression sequence is on."""
        return self.lifelong_select_k > 0 or self.impression_item_feature is not None

    @property
    def d_model(self) -> int:
        """Token width: action + item (+ candidate with concat fusion)."""
        d = self.action_embedding_dim + self.item_embedding_dim
        return d + self.item_embedding_dim if self.early_fusion == "concat" else d

    @property
    def output_dim(self) -> int:
        return (self.latest_k + int(self.max_pool)) * self.d_model
