#!/usr/bin/env python3
"""TransAct: a transformer over a user's realtime action sequence (arXiv 2306.00248).

Input is one ``KeyedJaggedTensor`` with three keys, one value per action, most recent
action first, and the action's age in seconds as the KJT weight::

    key                 example 0          example 1   example 2
    action_type         [1, 0, 2]          []          [1]
    item_id             [17, 5, 9]         []          [3]
    candidate_item_id   [42]               [7]         [5]
    weights (ages, s)   [30, 600, 86400]   []          [12]   (+ any value on candidates)

Each kept action becomes one token. With ``early_fusion="concat"`` a token is
``[action embedding; item embedding; candidate embedding]`` (width 32 + 32 + 32); the
transformer encoder attends over the tokens of one example only; its first ``latest_k``
output tokens (the most recent interests) and a max pool over all its tokens (the longer
term) are flattened into ``(latest_k + 1) * d_model`` features for the ranking model.
"""

from dataclasses import dataclass
from typing import Dict, List, Optional

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingConfig
from torchrec.modules.embedding_modules import EmbeddingCollection
from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedJaggedTensor

from torchrec_transact.modules.encoder import EncoderConfig, TransformerEncoder
from torchrec_transact.modules.jagged import length_buckets, pad_into_buckets
from torchrec_transact.modules.masks import compact, keep_actions, segment_ids

EARLY_FUSION_MODES = ("concat", "append", "none")


@dataclass
class TransActConfig:
    """Everything that shapes a :class:`TransAct` module.

    Args:
        num_action_types (int): size of the action-type vocabulary (click, save, hide, ...).
        num_items (int): size of the item-id vocabulary, shared by sequence and candidate.
        action_feature (str): KJT key of the action types.
        item_feature (str): KJT key of the engaged item ids; its weights are action ages.
        candidate_feature (str): KJT key of the candidate item id (one per example).
        action_embedding_dim (int): width of the trainable action-type embedding.
        item_embedding_dim (int): width of the item embedding table.
        max_seq_len (int): only the most recent ``max_seq_len`` actions are kept.
        latest_k (int): how many of the most recent output tokens are kept as features.
        max_pool (bool): append a max pool over all output tokens.
        num_layers (int): transformer encoder layers.
        num_heads (int): attention heads.
        ffn_dim (int): feed-forward width of each layer.
        dropout (float): dropout of the encoder layers.
        early_fusion (str): ``"concat"`` (candidate embedding concatenated to every
            token), ``"append"`` (the candidate is one more token, first in the
            sequence, as in BST) or ``"none"`` (the encoder never sees the candidate).
        time_window_s (float): upper bound, in seconds, of the random time window that
            hides the newest actions in training; 0 disables it.
        positional_encoding (bool): add a learned embedding of each token's position
            (0 = most recent). Off by default, as in the paper.
        max_length_buckets (int): at most this many length buckets per batch; each is
            padded only to its own longest sequence. 1 pads the batch to its longest.
        validate_inputs (bool): check keys, lengths, id ranges and ages on every call.
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

    def __post_init__(self) -> None:
        if self.early_fusion not in EARLY_FUSION_MODES:
            raise ValueError(
                f"early_fusion={self.early_fusion!r}, expected one of {EARLY_FUSION_MODES}"
            )
        for name in ("num_action_types", "num_items", "max_seq_len", "num_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}, expected >= 1")
        if self.latest_k < 0 or (self.latest_k == 0 and not self.max_pool):
            raise ValueError(
                f"latest_k={self.latest_k}, max_pool={self.max_pool}: the output would be "
                "empty; keep at least one latest token or the max pool"
            )
        if self.time_window_s < 0:
            raise ValueError(f"time_window_s={self.time_window_s}, expected >= 0")

    @property
    def d_model(self) -> int:
        """Token width: action + item (+ candidate with concat fusion)."""
        d = self.action_embedding_dim + self.item_embedding_dim
        return d + self.item_embedding_dim if self.early_fusion == "concat" else d

    @property
    def output_dim(self) -> int:
        return (self.latest_k + int(self.max_pool)) * self.d_model


def _first_bad_example(bad: torch.Tensor, lengths: torch.Tensor) -> int:
    """Example index of the first True in a jagged bool vector."""
    first = int(bad.nonzero()[0, 0])
    offsets = torch.cumsum(lengths, 0)
    return int(torch.searchsorted(offsets, torch.tensor(first, device=offsets.device), right=True))


def _check_ids(
    name: str, jt: JaggedTensor, num_ids: int, lengths: torch.Tensor
) -> None:
    ids = jt.values()
    bad = (ids < 0) | (ids >= num_ids)
    if bool(bad.any()):
        example = _first_bad_example(bad, lengths)
        value = int(ids[bad.nonzero()[0, 0]])
        raise ValueError(
            f"TransAct: feature {name!r} example {example} has id {value}, "
            f"expected 0 <= id < {num_ids}"
        )


def validate_sequence_features(
    features: KeyedJaggedTensor, config: TransActConfig
) -> None:
    """Raises ``ValueError`` naming the key and the example for malformed input.

    Args:
        features (KeyedJaggedTensor): the TransAct input.
        config (TransActConfig): keys and vocabulary sizes.
    """
    keys = features.keys()
    for key in (config.action_feature, config.item_feature, config.candidate_feature):
        if key not in keys:
            raise ValueError(f"TransAct: key {key!r} is missing from the KJT (keys: {keys})")
    if features.weights_or_none() is None:
        raise ValueError(
            f"TransAct: the KJT has no weights; {config.item_feature!r} needs each "
            "action's age in seconds as its weight"
        )
    jts = features.to_dict()
    actions, items = jts[config.action_feature], jts[config.item_feature]
    candidates = jts[config.candidate_feature]
    mismatch = actions.lengths() != items.lengths()
    if bool(mismatch.any()):
        example = int(mismatch.nonzero()[0, 0])
        raise ValueError(
            f"TransAct: example {example} has {int(actions.lengths()[example])} "
            f"{config.action_feature!r} values but {int(items.lengths()[example])} "
            f"{config.item_feature!r} values; they must be equal"
        )
    not_one = candidates.lengths() != 1
    if bool(not_one.any()):
        example = int(not_one.nonzero()[0, 0])
        raise ValueError(
            f"TransAct: example {example} has {int(candidates.lengths()[example])} "
            f"{config.candidate_feature!r} values, expected exactly 1"
        )
    _check_ids(config.action_feature, actions, config.num_action_types, actions.lengths())
    _check_ids(config.item_feature, items, config.num_items, items.lengths())
    _check_ids(
        config.candidate_feature, candidates, config.num_items, candidates.lengths()
    )
    ages = items.weights()
    not_finite = ~torch.isfinite(ages)
    if bool(not_finite.any()):
        example = _first_bad_example(not_finite, items.lengths())
        raise ValueError(
            f"TransAct: example {example} of {config.item_feature!r} has a non-finite "
            "action age (weight); ages are seconds before the request"
        )


# A leaf for torch.fx: its checks read tensor values, which a symbolic trace cannot.
torch.fx.wrap("validate_sequence_features")


class TransActSequenceArch(nn.Module):
    """Action sequence -> compressed transformer output, after the item lookup.

    Builds the tokens of the kept actions (see :mod:`torchrec_transact.modules.masks`),
    runs the encoder on length buckets and compresses each example to its first
    ``latest_k`` output tokens plus a max pool. It holds no sharded module, so torchrec's
    pipeline tracer treats it as a leaf and its data-dependent shapes never reach fx.

    Args:
        config (TransActConfig): module configuration.
        device (Optional[torch.device]): device of the parameters.

    Example::

        config = TransActConfig(num_action_types=3, num_items=10, latest_k=2)
        arch = TransActSequenceArch(config)
        features = KeyedJaggedTensor.from_lengths_sync(
            keys=["action_type", "item_id", "candidate_item_id"],
            values=torch.tensor([1, 0, 4, 5, 6, 7]),
            lengths=torch.tensor([1, 1, 1, 1, 1, 1]),
            weights=torch.tensor([10.0, 20.0, 10.0, 20.0, 0.0, 0.0]),
        )
        items = JaggedTensor(values=torch.randn(2, 32), lengths=torch.tensor([1, 1]))
        candidates = JaggedTensor(values=torch.randn(2, 32), lengths=torch.tensor([1, 1]))
        out = arch(features, items, candidates)  # [2, 3 * 96]
    """

    def __init__(
        self, config: TransActConfig, device: Optional[torch.device] = None
    ) -> None:
        super().__init__()
        self.config = config
        self.action_embedding = nn.Embedding(
            config.num_action_types, config.action_embedding_dim, device=device
        )
        # "append" fusion: the candidate token has no action; it gets a learned one.
        self.candidate_action: Optional[nn.Parameter] = (
            nn.Parameter(torch.zeros(config.action_embedding_dim, device=device))
            if config.early_fusion == "append"
            else None
        )
        num_positions = config.max_seq_len + int(config.early_fusion == "append")
        self.positional_embedding: Optional[nn.Embedding] = (
            nn.Embedding(num_positions, config.d_model, device=device)
            if config.positional_encoding
            else None
        )
        self.encoder = TransformerEncoder(
            EncoderConfig(
                d_model=config.d_model,
                num_layers=config.num_layers,
                num_heads=config.num_heads,
                ffn_dim=config.ffn_dim,
                dropout=config.dropout,
            ),
            device=device,
        )

    def forward(
        self,
        features: KeyedJaggedTensor,
        item_embeddings: JaggedTensor,
        candidate_embeddings: JaggedTensor,
    ) -> torch.Tensor:
        """
        Args:
            features (KeyedJaggedTensor): the TransAct input (action types and ages).
            item_embeddings (JaggedTensor): [N, item_dim], one per sequence action.
            candidate_embeddings (JaggedTensor): [B, item_dim], one per example.

        Returns:
            torch.Tensor: float [B, output_dim]; zeros for an example with no kept action
            (and no candidate token).
        """
        config = self.config
        actions = features[config.action_feature]
        items = features[config.item_feature]
        lengths = items.lengths().long()
        batch_size = lengths.numel()
        segments = segment_ids(lengths)
        keep = keep_actions(
            items.weights(),
            segments,
            batch_size,
            config.max_seq_len,
            config.time_window_s,
            self.training,
        )
        kept_index, position, kept_lengths = compact(keep, segments, batch_size)
        example = segments[kept_index]
        tokens = torch.cat(
            [
                self.action_embedding(actions.values()[kept_index].long()),
                item_embeddings.values()[kept_index],
            ],
            dim=1,
        )
        candidates = candidate_embeddings.values()
        if config.early_fusion == "concat":
            tokens = torch.cat([tokens, candidates[example]], dim=1)
        elif self.candidate_action is not None:
            candidate_tokens = torch.cat(
                [self.candidate_action.expand(batch_size, -1), candidates], dim=1
            )
            everyone = torch.arange(batch_size, device=lengths.device)
            tokens = torch.cat([candidate_tokens, tokens])
            example = torch.cat([everyone, example])
            position = torch.cat([torch.zeros_like(everyone), position + 1])
            kept_lengths = kept_lengths + 1
        if self.positional_embedding is not None:
            tokens = tokens + self.positional_embedding(position)
        return self._encode(tokens, example, position, kept_lengths)

    def _encode(
        self,
        tokens: torch.Tensor,
        example: torch.Tensor,
        position: torch.Tensor,
        lengths: torch.Tensor,
    ) -> torch.Tensor:
        device_type = tokens.device.type
        if torch.is_autocast_enabled(device_type):
            # Autocast runs matmuls in low precision but leaves the residual stream in the
            # dtype it enters with; entering in that precision saves a cast before every
            # projection and halves the memory traffic of the elementwise ops.
            tokens = tokens.to(torch.get_autocast_dtype(device_type))
        buckets = length_buckets(
            lengths, example, position, self.config.max_length_buckets
        )
        compressed: List[torch.Tensor] = [
            self._compress(self.encoder(x, valid), valid)
            for x, valid in pad_into_buckets(tokens, buckets)
        ]
        out = tokens.new_zeros(lengths.numel(), self.config.output_dim, dtype=torch.float32)
        if not compressed:
            # Nothing left to encode; stay on the autograd graph so backward still runs.
            return out + tokens.sum() * 0.0
        return out.index_copy(0, buckets.order, torch.cat(compressed).float())

    def _compress(self, x: torch.Tensor, valid: Optional[torch.Tensor]) -> torch.Tensor:
        """[b, L, d] encoder output -> [b, (latest_k + max_pool) * d]."""
        k = self.config.latest_k
        parts: List[torch.Tensor] = []
        if valid is not None:
            # Padding must neither be a latest token nor win the max pool.
            x = x.masked_fill(~valid[:, :, None], float("-inf"))
        if k > 0:
            latest = x[:, :k]
            if valid is not None:
                latest = latest.masked_fill(~valid[:, :k, None], 0.0)
            if latest.shape[1] < k:  # every sequence of this bucket is shorter than k
                latest = torch.cat(
                    [latest, latest.new_zeros(x.shape[0], k - latest.shape[1], x.shape[2])],
                    dim=1,
                )
            parts.append(latest.flatten(1))
        if self.config.max_pool:
            # max() routes each gradient to one position; amax's backward spreads it
            # over ties and costs several passes over [b, L, d].
            parts.append(x.max(dim=1).values)
        return torch.cat(parts, dim=1)


class TransAct(nn.Module):
    """TransAct realtime user-action sequence module on a ``KeyedJaggedTensor``.

    The item table is a torchrec ``EmbeddingCollection`` shared by the sequence items and
    the candidate, so ``DistributedModelParallel`` shards it and runs it on FBGEMM's
    kernels; the input KJT is handed to it untouched, so ``TrainPipelineSparseDist`` can
    prefetch its input distribution. The action-type table is small (tens of rows) and
    stays a dense, data-parallel ``nn.Embedding``.

    Which actions are seen:

    * leakage (negative age: logged after the request) never, in training or evaluation;
    * only the ``max_seq_len`` most recent of the remaining ones;
    * in training only, each example draws T ~ U[0, time_window_s) from torch's generator
      and drops its actions younger than T (against the "rabbit hole").

    A dropped action is absent, not just unattended: the output equals that of the same
    sequence with the action removed. An example with no action left has a sequence part
    of zeros (finite values and gradients). Outputs never depend on the other examples of
    the batch beyond float rounding.

    Args:
        config (TransActConfig): module configuration.
        device (Optional[torch.device]): device of the parameters.

    Returns (of ``forward``):
        torch.Tensor: [B, output_dim] with ``output_dim = (latest_k + max_pool) * d_model``.

    Example::

        config = TransActConfig(num_action_types=4, num_items=100)
        transact = TransAct(config)
        #                 example 0    example 1
        features = KeyedJaggedTensor.from_lengths_sync(
            keys=["action_type", "item_id", "candidate_item_id"],
            values=torch.tensor([1, 0, 2,   3, 17, 5,   42, 7]),
            lengths=torch.tensor([2, 1,   2, 1,   1, 1]),
            weights=torch.tensor([30.0, 600.0, 5.0,   30.0, 600.0, 5.0,   0.0, 0.0]),
        )
        out = transact(features)  # [2, transact.output_dim] == [2, 11 * 96]
    """

    def __init__(
        self, config: TransActConfig, device: Optional[torch.device] = None
    ) -> None:
        super().__init__()
        self.config = config
        self.item_embedding_collection = EmbeddingCollection(
            tables=[
                EmbeddingConfig(
                    name="transact_items",
                    num_embeddings=config.num_items,
                    embedding_dim=config.item_embedding_dim,
                    feature_names=[config.item_feature, config.candidate_feature],
                )
            ],
            device=device,
        )
        self.sequence_arch = TransActSequenceArch(config, device)

    @property
    def output_dim(self) -> int:
        return self.config.output_dim

    def forward(self, features: KeyedJaggedTensor) -> torch.Tensor:
        """
        Args:
            features (KeyedJaggedTensor): action types, item ids (weights: ages in seconds)
                and one candidate id per example; other keys are ignored.

        Returns:
            torch.Tensor: float [B, output_dim].
        """
        if self.config.validate_inputs:
            validate_sequence_features(features, self.config)
        embeddings: Dict[str, JaggedTensor] = self.item_embedding_collection(features)
        return self.sequence_arch(
            features,
            embeddings[self.config.item_feature],
            embeddings[self.config.candidate_feature],
        )

    @torch.no_grad()
    def load_item_embeddings(self, weights: torch.Tensor, freeze: bool = True) -> None:
        """Loads a pretrained item embedding matrix (the paper's PinSage setting).

        Freezing sets ``requires_grad=False`` on the unsharded table, so dense optimizers
        skip it; under ``DistributedModelParallel`` give the table a fused optimizer with
        learning rate 0 instead (fused tables update in their own backward).

        Args:
            weights (torch.Tensor): [num_items, item_embedding_dim].
            freeze (bool): keep the table fixed during training.
        """
        table = self.item_embedding_collection.embeddings["transact_items"].weight
        if tuple(weights.shape) != tuple(table.shape):
            raise ValueError(
                f"pretrained item embeddings have shape {tuple(weights.shape)}, expected "
                f"{tuple(table.shape)} (num_items, item_embedding_dim)"
            )
        table.copy_(weights)
        table.requires_grad_(not freeze)
