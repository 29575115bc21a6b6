#!/usr/bin/env python3
"""What every action-sequence encoder shares: its config, input checks, the selection of
the actions it may see, and the module shell around a shardable item table.

Input is one ``KeyedJaggedTensor`` with three keys, one value per action, most recent
action first, and the action's age in seconds as the KJT weight::

    key                 example 0          example 1   example 2
    action_type         [1, 0, 2]          []          [1]
    item_id             [17, 5, 9]         []          [3]
    candidate_item_id   [42]               [7]         [5]
    weights (ages, s)   [30, 600, 86400]   []          [12]   (+ any value on candidates)

Encoders (TransAct and the baselines in :mod:`torchrec_transact.modules.baselines`) are a
:class:`SequenceModule`: an ``EmbeddingCollection`` for the items, handed the input KJT
untouched so that ``DistributedModelParallel`` shards it and ``TrainPipelineSparseDist``
prefetches its input distribution, followed by a ``sequence_arch`` that holds no sharded
module (torchrec's pipeline tracer treats it as a leaf, so its data-dependent shapes never
reach fx). Every encoder returns ``[B, output_dim]`` made of ``output_tokens`` rows of
``token_dim`` features, which is how DLRM turns it into interaction rows.
"""

from typing import Dict, List, Optional, Protocol, runtime_checkable, TYPE_CHECKING

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingConfig
from torchrec.modules.embedding_modules import EmbeddingCollection
from torchrec.quant.embedding_modules import EmbeddingCollection as QuantEmbeddingCollection
from torchrec.sparse.jagged_tensor import JaggedTensor, KeyedJaggedTensor

from torchrec_transact.modules.config import TransActConfig
from torchrec_transact.modules.masks import kept_actions, KeptActions

if TYPE_CHECKING:
    from torchrec_transact.modules.arch import TransActSequenceArch

ITEM_TABLE = "transact_items"
LIFELONG_TABLE = "transact_lifelong_items"


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


def _check_equal_lengths(action_key: str, actions: JaggedTensor, item_key: str, items: JaggedTensor) -> None:
    mismatch = actions.lengths() != items.lengths()
    if bool(mismatch.any()):
        example = int(mismatch.nonzero()[0, 0])
        raise ValueError(
            f"TransAct: example {example} has {int(actions.lengths()[example])} {action_key!r} values "
            f"but {int(items.lengths()[example])} {item_key!r} values; they must be equal"
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
    values = features.values()
    if values.is_floating_point() or values.is_complex() or values.dtype == torch.bool:
        raise ValueError(
            f"TransAct: the KJT values are {values.dtype}; the {config.action_feature!r}, "
            f"{config.item_feature!r} and {config.candidate_feature!r} ids must be integers"
        )
    lengths = features.lengths()
    negative = lengths < 0
    if bool(negative.any()):
        first = int(negative.nonzero()[0, 0])
        stride = max(lengths.numel() // max(len(keys), 1), 1)
        raise ValueError(
            f"TransAct: feature {keys[first // stride]!r} example {first % stride} has "
            f"length {int(lengths[first])}; lengths must be >= 0"
        )
    if features.stride() == 0:
        return
    jts = features.to_dict()
    actions, items = jts[config.action_feature], jts[config.item_feature]
    candidates = jts[config.candidate_feature]
    _check_equal_lengths(config.action_feature, actions, config.item_feature, items)
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
    _check_ages(config.item_feature, items)
    _validate_side_sequences(jts, config)


def _check_ages(name: str, items: JaggedTensor) -> None:
    not_finite = ~torch.isfinite(items.weights())
    if bool(not_finite.any()):
        example = _first_bad_example(not_finite, items.lengths())
        raise ValueError(
            f"TransAct: example {example} of {name!r} has a non-finite "
            "action age (weight); ages are seconds before the request"
        )


def _validate_side_sequences(jts: Dict[str, JaggedTensor], config: TransActConfig) -> None:
    """The lifelong and impression keys of TransAct V2, when the config turns them on."""
    item_keys = []
    if config.lifelong_select_k > 0:
        item_keys.append(config.lifelong_item_feature)
        for key in (config.lifelong_action_feature, config.lifelong_item_feature):
            if key not in jts:
                raise ValueError(f"TransAct: key {key!r} is missing from the KJT (lifelong_select_k > 0)")
        actions, items = jts[config.lifelong_action_feature], jts[config.lifelong_item_feature]
        _check_equal_lengths(config.lifelong_action_feature, actions, config.lifelong_item_feature, items)
        _check_ids(config.lifelong_action_feature, actions, config.num_action_types, actions.lengths())
    if config.impression_item_feature is not None:
        if config.impression_item_feature not in jts:
            raise ValueError(f"TransAct: key {config.impression_item_feature!r} is missing from the KJT")
        item_keys.append(config.impression_item_feature)
    for key in item_keys:
        _check_ids(key, jts[key], config.num_items, jts[key].lengths())
        _check_ages(key, jts[key])


def side_item_features(config: TransActConfig) -> List[str]:
    """The item keys of TransAct V2's lifelong and impression sequences that the config
    turns on and that share the trained item table (a frozen lifelong table takes its
    key out)."""
    keys = [config.lifelong_item_feature] if config.lifelong_select_k > 0 and not config.lifelong_frozen_items else []
    return keys + ([config.impression_item_feature] if config.impression_item_feature is not None else [])


def frozen_item_collection(
    config: TransActConfig, weights: Optional[torch.Tensor] = None
) -> QuantEmbeddingCollection:
    """TransAct V2's frozen lifelong item table: torchrec's quantised
    ``EmbeddingCollection``, row-wise int8 with a float16 scale and bias per row (FBGEMM's
    int8 table-batched lookup, which gathers and dequantises in one kernel: 3.7x faster
    than gathering and dequantising in separate passes, and 2x faster than gathering
    float32 rows, at 640,000 lookups on the 2-core CPU, 2026-12-01). It looks up the
    lifelong items and, for the nearest selection, the candidate.

    Args:
        config (TransActConfig): vocabulary, width and keys.
        weights (Optional[torch.Tensor]): float [num_items, item_embedding_dim], the
            pretrained vectors to quantise; None: zeros (every similarity ties).

    Returns:
        QuantEmbeddingCollection: its table's weight is a uint8 buffer (no gradient).

    Example::

        config = TransActConfig(num_action_types=3, num_items=100, lifelong_select_k=4)
        table = frozen_item_collection(config, torch.randn(100, 32))
    """
    features = [config.lifelong_item_feature, config.candidate_feature]
    float_collection = EmbeddingCollection(tables=[EmbeddingConfig(
        name=LIFELONG_TABLE, num_embeddings=config.num_items, embedding_dim=config.item_embedding_dim,
        feature_names=features)], device=torch.device("cpu"))
    with torch.no_grad():
        float_collection.embeddings[LIFELONG_TABLE].weight.copy_(
            torch.zeros(config.num_items, config.item_embedding_dim) if weights is None else weights)
    float_collection.qconfig = torch.ao.quantization.QConfig(
        activation=torch.ao.quantization.PlaceholderObserver.with_args(dtype=torch.float),
        weight=torch.ao.quantization.PlaceholderObserver.with_args(dtype=torch.qint8),
    )
    return QuantEmbeddingCollection.from_float(float_collection)


# A leaf for torch.fx: its checks read tensor values, which a symbolic trace cannot.
torch.fx.wrap("validate_sequence_features")


def select_actions(
    items: JaggedTensor, max_seq_len: int, time_window_s: float, training: bool
) -> KeptActions:
    """:func:`~torchrec_transact.modules.masks.kept_actions` on the item key of the input
    (``items``: its weights are the action ages); the other arguments and the result are
    that function's.

    Example::

        items = JaggedTensor(
            values=torch.tensor([3, 4, 5]),
            lengths=torch.tensor([2, 1]),
            weights=torch.tensor([-1.0, 60.0, 5.0]),
        )
        kept = select_actions(items, max_seq_len=10, time_window_s=0.0, training=False)
        kept.index  # tensor([1, 2])
    """
    return kept_actions(items.lengths(), items.weights(), max_seq_len, time_window_s, training)


def _is_empty_batch(features: KeyedJaggedTensor) -> bool:
    """A KJT of zero examples (torchrec's lookups cannot split it). Under fx tracing the
    input is a Proxy, not a KJT: the traced model (torchrec's train pipeline) never sees
    an empty batch, so the check stays out of its graph."""
    return isinstance(features, KeyedJaggedTensor) and features.stride() == 0


@runtime_checkable
class SequenceEncoder(Protocol):
    """What ranking models and serving rely on in a sequence encoder (TransAct, every
    baseline, and ``NoSequence``).

    ``encoder(features)`` maps the input KJT to ``[B, output_dim]``, ``output_tokens``
    rows of ``token_dim`` features (DLRM turns each row into an interaction feature).
    ``item_table`` is the item embedding weight ``[num_items, item_embedding_dim]`` (None
    without a sequence); ``transformer`` is the transformer arch that serving's user-side
    dedup runs (None for encoders it cannot serve that way).
    """

    config: TransActConfig
    output_tokens: int
    token_dim: int

    @property
    def output_dim(self) -> int: ...

    @property
    def item_table(self) -> Optional[torch.Tensor]: ...

    @property
    def transformer(self) -> Optional["TransActSequenceArch"]: ...

    def __call__(self, features: KeyedJaggedTensor) -> torch.Tensor: ...


class SequenceModule(nn.Module):
    """Shell of an action-sequence encoder: input checks, item table, sequence arch.

    Subclasses build ``sequence_arch``: a module called as
    ``sequence_arch(features, item_embeddings, candidate_embeddings)`` that returns
    ``[B, output_tokens * token_dim]``.

    Args:
        config (TransActConfig): keys, vocabularies and sizes.
        sequence_arch (nn.Module): the encoder proper.
        output_tokens (int): rows of the output.
        token_dim (int): width of each row.
        device (Optional[torch.device]): device of the item table.
    """

    def __init__(
        self,
        config: TransActConfig,
        sequence_arch: nn.Module,
        output_tokens: int,
        token_dim: int,
        device: Optional[torch.device] = None,
    ) -> None:
        super().__init__()
        if config.side_sequences and not getattr(sequence_arch, "supports_side_sequences", False):
            raise ValueError(
                f"{type(sequence_arch).__name__} has no lifelong or impression sequence "
                "(TransAct V2); set lifelong_select_k=0 and impression_item_feature=None"
            )
        self.config = config
        self.output_tokens = output_tokens
        self.token_dim = token_dim
        self.item_embedding_collection = EmbeddingCollection(
            tables=[
                EmbeddingConfig(
                    name=ITEM_TABLE,
                    num_embeddings=config.num_items,
                    embedding_dim=config.item_embedding_dim,
                    feature_names=[config.item_feature, config.candidate_feature] + side_item_features(config),
                )
            ],
            device=device,
        )
        self.sequence_arch = sequence_arch
        # TransAct V2's frozen pretrained lifelong item vectors (zeros until loaded:
        # every similarity ties, so the selection falls back to the most recent).
        self.lifelong_items: Optional[QuantEmbeddingCollection] = (
            frozen_item_collection(config) if config.lifelong_frozen_items else None
        )

    @property
    def output_dim(self) -> int:
        return self.output_tokens * self.token_dim

    @property
    def item_table(self) -> torch.Tensor:
        """The item embedding weight, [num_items, item_embedding_dim] (unsharded)."""
        return self.item_embedding_collection.embeddings[ITEM_TABLE].weight

    @property
    def transformer(self) -> Optional["TransActSequenceArch"]:
        """The transformer arch serving's user-side dedup runs; None here (pooling and
        recurrent encoders), TransAct's arch in the transformer family."""
        return None

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
        if _is_empty_batch(features):
            return torch.zeros(0, self.output_dim, device=features.values().device)
        embeddings: Dict[str, JaggedTensor] = self.item_embedding_collection(features)
        config = self.config
        if not config.side_sequences:
            return self.sequence_arch(features, embeddings[config.item_feature], embeddings[config.candidate_feature])
        lifelong = lifelong_candidates = None
        if self.lifelong_items is not None:
            frozen = self.lifelong_items(features)
            lifelong = frozen[config.lifelong_item_feature]
            lifelong_candidates = frozen[config.candidate_feature].values()
        elif config.lifelong_select_k > 0:
            lifelong = embeddings[config.lifelong_item_feature]
        return self.sequence_arch(
            features,
            embeddings[config.item_feature],
            embeddings[config.candidate_feature],
            lifelong_embeddings=lifelong,
            impression_embeddings=(
                embeddings[config.impression_item_feature] if config.impression_item_feature is not None else None
            ),
            lifelong_candidates=lifelong_candidates,
        )

    @torch.no_grad()
    def load_lifelong_items(self, weights: torch.Tensor) -> None:
        """Stores pretrained item vectors, row-wise int8, as the frozen lifelong table
        (a config with ``lifelong_frozen_items``; see :func:`frozen_item_collection`).

        Args:
            weights (torch.Tensor): float [num_items, item_embedding_dim].
        """
        if self.lifelong_items is None:
            raise ValueError("this encoder has no frozen lifelong table (lifelong_frozen_items=False)")
        expected = (self.config.num_items, self.config.item_embedding_dim)
        if tuple(weights.shape) != expected:
            raise ValueError(f"lifelong item vectors have shape {tuple(weights.shape)}, expected {expected}")
        self.lifelong_items.load_state_dict(frozen_item_collection(self.config, weights.detach().cpu()).state_dict())

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
        table = self.item_table
        if tuple(weights.shape) != tuple(table.shape):
            raise ValueError(
                f"pretrained item embeddings have shape {tuple(weights.shape)}, expected "
                f"{tuple(table.shape)} (num_items, item_embedding_dim)"
            )
        table.copy_(weights)
        table.requires_grad_(not freeze)
