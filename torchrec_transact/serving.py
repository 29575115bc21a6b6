#!/usr/bin/env python3
"""Serving: score one request (a user's raw recent events and N candidates) with a trained
TransAct-DCN or TransAct-DLRM.

    raw events, request time --RequestFeatureProcessor--> sequence [L] (no leakage, deduped)
    candidates [N], their dense [N, W] and categorical [N, F] features
          '---------- packed into one host buffer (pinned on CUDA) ----------'
                                   |  one host-to-device copy
                       RequestScorer (plain tensors: exportable, CUDA-graph capturable)
          one fused categorical lookup | one item lookup of L + N ids | RequestTransAct
                                   model.rank(...) -> sigmoid -> [N, T]

The paper's GPU serving rests on four things, all here: fused embedding lookups (every
categorical table concatenated into one, with per-feature row offsets), one combined
host-to-device copy per request, large batches (a request's N candidates are one batch;
the user's sequence is looked up and projected once, see
:mod:`torchrec_transact.modules.request`), and CUDA graphs (one per candidate-count and
sequence-length bucket, inputs padded to the bucket). On CPU the scorer runs eagerly under
``torch.inference_mode``, optionally under bfloat16 autocast.

What a request may hold, and what happens to it (never a crash deep in the model, never a
NaN score):

* no candidates: :class:`RequestError`;
* a candidate or categorical id outside its table: :class:`RequestError` naming the
  feature, the candidate and the value;
* events logged at or after the request time (the future, or leakage in replay), events
  with a non-finite time, and events with an action type or item the model does not know
  (newer than its tables): dropped, and counted in ``ScoringResult.dropped_events``;
* non-finite dense values: replaced by 0, the value the data loaders give a missing
  feature, and counted in ``ScoringResult.repaired_dense``;
* a dense width other than the model's, a missing categorical feature, a non-finite
  request time: :class:`RequestError`.

Categorical features carry one id per candidate (or one per request, shared by every
candidate), as every data source of this package does; pooling one id is the lookup.
"""

import json
import os
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchrec.modules.embedding_modules import EmbeddingBagCollection

from torchrec_transact.data.features import RequestFeatureProcessor, UserEvents
from torchrec_transact.data.sequences import sequence_kjt
from torchrec_transact.modules.baselines import NoSequence
from torchrec_transact.modules.request import RequestTransAct
from torchrec_transact.modules.sequence import ITEM_TABLE
from torchrec_transact.modules.transact import TransActSequenceArch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

ArrayLike = Union[np.ndarray, Sequence[float], Sequence[int], torch.Tensor]


class RequestError(ValueError):
    """A request that cannot be scored; the message names the field and the value."""


@dataclass
class ScoringRequest:
    """One user's request.

    Args:
        events (UserEvents): the user's raw recent events, in any order.
        request_time (float): seconds, on the events' clock.
        candidate_ids (ArrayLike): int [N], the items to score.
        dense (ArrayLike): float [N, W], or [W] shared by every candidate (user and
            request features, the precomputed user embedding last for DCN).
        sparse (Mapping[str, Union[int, ArrayLike]]): per categorical feature, one id
            per candidate ([N]) or one id for the request.
    """

    events: UserEvents
    request_time: float
    candidate_ids: ArrayLike
    dense: ArrayLike
    sparse: Mapping[str, Union[int, ArrayLike]] = field(default_factory=dict)


@dataclass
class ScoringResult:
    """Per-task probabilities of each candidate.

    Args:
        tasks (List[str]): task names, the columns of ``probabilities``.
        probabilities (torch.Tensor): float [N, T] on the CPU.
        sequence_length (int): actions the model saw.
        dropped_events (int): events left out: unknown action or item, non-finite
            time, logged at or after the request time.
        repaired_dense (int): non-finite dense values replaced by 0.
    """

    tasks: List[str]
    probabilities: torch.Tensor
    sequence_length: int
    dropped_events: int
    repaired_dense: int

    def __getitem__(self, task: str) -> torch.Tensor:
        """float [N], the probabilities of one task."""
        return self.probabilities[:, self.tasks.index(task)]


class FusedEmbeddingLookup(nn.Module):
    """Every categorical feature of an ``EmbeddingBagCollection`` in one lookup per width.

    The tables of one width are concatenated into one matrix and each feature's ids are
    offset to its table's rows, so F features take one gather (one kernel on a GPU)
    instead of F. The collection's tables are then re-pointed to views of the fused
    matrices: one copy of the weights in memory, and the collection still works.

    Args:
        ebc (EmbeddingBagCollection): the trained, unsharded collection.

    Example::

        ebc = EmbeddingBagCollection(tables=[
            EmbeddingBagConfig(name="a", embedding_dim=4, num_embeddings=10, feature_names=["f1"]),
            EmbeddingBagConfig(name="b", embedding_dim=4, num_embeddings=5, feature_names=["f2"]),
        ])
        lookup = FusedEmbeddingLookup(ebc)
        lookup(torch.tensor([[3, 1], [9, 4]])).shape  # torch.Size([2, 8])
    """

    def __init__(self, ebc: EmbeddingBagCollection) -> None:
        super().__init__()
        self.feature_names: List[str] = []
        self.num_embeddings: List[int] = []
        group_of_width: Dict[int, int] = {}
        tables: List[List[torch.Tensor]] = []
        offsets: List[List[int]] = []
        columns: List[List[int]] = []
        # (group, index within group) of every feature, in feature order.
        self._placement: List[Tuple[int, int]] = []
        for config in ebc.embedding_bag_configs():
            weight = ebc.embedding_bags[config.name].weight.detach()
            group = group_of_width.setdefault(config.embedding_dim, len(group_of_width))
            if group == len(tables):
                tables.append([])
                offsets.append([])
                columns.append([])
            start = sum(t.shape[0] for t in tables[group])
            tables[group].append(weight)
            for name in config.feature_names:
                self._placement.append((group, len(columns[group])))
                columns[group].append(len(self.feature_names))
                offsets[group].append(start)
                self.feature_names.append(name)
                self.num_embeddings.append(config.num_embeddings)
        self.weights = nn.ParameterList(
            [nn.Parameter(torch.cat(t), requires_grad=False) for t in tables]
        )
        starts = {g: 0 for g in range(len(tables))}
        for config in ebc.embedding_bag_configs():
            group = group_of_width[config.embedding_dim]
            rows = slice(starts[group], starts[group] + config.num_embeddings)
            ebc.embedding_bags[config.name].weight = nn.Parameter(
                self.weights[group][rows], requires_grad=False
            )
            starts[group] = rows.stop
        for group in range(len(tables)):
            device = self.weights[group].device
            self.register_buffer(
                f"offsets_{group}", torch.tensor(offsets[group], device=device), persistent=False
            )
            self.register_buffer(
                f"columns_{group}", torch.tensor(columns[group], device=device), persistent=False
            )
        self._single_group_in_order = len(tables) == 1

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """
        Args:
            ids (torch.Tensor): int64 [B, F], one id per feature, ``feature_names`` order.

        Returns:
            torch.Tensor: [B, sum of widths], the features' embeddings side by side.
        """
        if self._single_group_in_order:
            return F.embedding(ids + self.offsets_0, self.weights[0]).flatten(1)
        looked_up = [
            F.embedding(
                ids.index_select(1, getattr(self, f"columns_{g}")) + getattr(self, f"offsets_{g}"),
                weight,
            )
            for g, weight in enumerate(self.weights)
        ]
        return torch.cat([looked_up[g][:, i] for g, i in self._placement], dim=1)


def _ranking_ebc(model: nn.Module) -> EmbeddingBagCollection:
    if hasattr(model, "embedding_bag_collection"):  # TransActDCN
        return model.embedding_bag_collection
    return model.sparse_arch.embedding_bag_collection  # TransActDLRM


def supports_request_scoring(model: nn.Module) -> bool:
    """Whether :class:`RequestScorer` can serve the model's sequence encoder: the
    transformer family (TransAct, VanillaTransformer, BST) and NoSequence."""
    encoder = model.sequence_encoder
    return isinstance(encoder, NoSequence) or isinstance(
        getattr(encoder, "sequence_arch", None), TransActSequenceArch
    )


class RequestScorer(nn.Module):
    """A ranking model (``TransActDCN`` / ``TransActDLRM``) on one request's tensors.

    Takes plain tensors with shapes fixed by (N, L) and no data-dependent control flow:
    ``torch.export`` saves it, a CUDA graph captures it. Its probabilities equal the
    model's on the batch that repeats the request's sequence for each candidate.

    Args:
        model (nn.Module): the trained, unsharded model, in evaluation mode.
        dedup (bool): share the first encoder layer's user part across candidates.

    Example::

        ebc = EmbeddingBagCollection(tables=[
            EmbeddingBagConfig(name="t", embedding_dim=8, num_embeddings=10, feature_names=["c1"]),
        ])
        transact = TransAct(TransActConfig(num_action_types=3, num_items=10, latest_k=2))
        model = TransActDCN(ebc, transact, 4, [8], [16], user_embedding_dim=0, tasks=["click"])
        scorer = RequestScorer(model.eval())
        probabilities = scorer(
            dense=torch.randn(5, 4), sparse_ids=torch.randint(0, 10, (5, 1)),
            candidate_ids=torch.randint(0, 10, (5,)),
            action_types=torch.tensor([1, 0, 2]), item_ids=torch.tensor([4, 4, 7]),
        )  # [5, 1]
    """

    def __init__(self, model: nn.Module, dedup: bool = True) -> None:
        super().__init__()
        if not supports_request_scoring(model):
            raise ValueError(
                f"RequestScorer serves the transformer encoders and NoSequence, not "
                f"{type(model.sequence_encoder).__name__}; score it with the model's own "
                "forward (Predictor.score_naive)"
            )
        self.model = model
        self.sparse_lookup = FusedEmbeddingLookup(_ranking_ebc(model))
        encoder = model.sequence_encoder
        self.request_encoder: Optional[RequestTransAct] = None
        if not isinstance(encoder, NoSequence):
            self.request_encoder = RequestTransAct(encoder.sequence_arch, dedup)

    def forward(
        self,
        dense: torch.Tensor,
        sparse_ids: torch.Tensor,
        candidate_ids: torch.Tensor,
        action_types: torch.Tensor,
        item_ids: torch.Tensor,
        length: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """
        Args:
            dense (torch.Tensor): float [N, W].
            sparse_ids (torch.Tensor): int64 [N, F], ``sparse_lookup.feature_names`` order.
            candidate_ids (torch.Tensor): int64 [N].
            action_types (torch.Tensor): int64 [L], most recent first.
            item_ids (torch.Tensor): int64 [L].
            length (Optional[torch.Tensor]): int64 [], real actions; None: all L.

        Returns:
            torch.Tensor: float [N, T], per-task probabilities.
        """
        num_candidates = candidate_ids.shape[0]
        if self.request_encoder is None:
            sequence = dense.new_zeros(num_candidates, 0)
        else:
            table = self.model.sequence_encoder.item_embedding_collection.embeddings[ITEM_TABLE].weight
            # One lookup for the sequence and the candidates, each item once.
            items = F.embedding(torch.cat([item_ids, candidate_ids]), table)
            sequence_items, candidates = items.split([item_ids.shape[0], num_candidates])
            sequence = self.request_encoder(action_types, sequence_items, candidates, length)
        logits = self.model.rank(dense, self.sparse_lookup(sparse_ids), sequence)
        return torch.sigmoid(logits.float())


# --------------------------------------------------------------------- one packed copy

_ALIGN = 64


def pack(tensors: Sequence[torch.Tensor], pin_memory: bool = False) -> Tuple[torch.Tensor, List[Tuple[torch.dtype, torch.Size, int]]]:
    """Copies tensors into one contiguous byte buffer (64-byte aligned slots).

    Returns:
        Tuple[torch.Tensor, List[Tuple[torch.dtype, torch.Size, int]]]: the uint8 buffer
        and each tensor's (dtype, shape, byte offset), for :func:`unpack`.
    """
    layout: List[Tuple[torch.dtype, torch.Size, int]] = []
    offset = 0
    for t in tensors:
        layout.append((t.dtype, t.shape, offset))
        offset += -(-t.numel() * t.element_size() // _ALIGN) * _ALIGN
    buffer = torch.empty(max(offset, _ALIGN), dtype=torch.uint8, pin_memory=pin_memory)
    for t, view in zip(tensors, unpack(buffer, layout)):
        view.copy_(t)
    return buffer, layout


def unpack(buffer: torch.Tensor, layout: Sequence[Tuple[torch.dtype, torch.Size, int]]) -> List[torch.Tensor]:
    """Views of ``buffer`` (on any device) laid out by :func:`pack`."""
    views = []
    for dtype, shape, offset in layout:
        nbytes = int(np.prod(shape, dtype=np.int64)) * torch.empty(0, dtype=dtype).element_size()
        views.append(buffer[offset : offset + nbytes].view(dtype).view(shape))
    return views


# --------------------------------------------------------------------- the predictor


def load_trained_model(path: str) -> Tuple[nn.Module, Dict[str, object]]:
    """The unsharded model of a ``transact-train`` checkpoint, and its ``model.json``.

    Args:
        path (str): a checkpoint (``.../checkpoints/step_N``), a run's ``checkpoints``
            directory or the run's output directory (the latest checkpoint of either).

    Returns:
        Tuple[nn.Module, Dict[str, object]]: the ranking model (``TransActDCN`` /
        ``TransActDLRM``) and the description it was rebuilt from (``config``, ``spec``,
        ``encoder``, ``tasks``).
    """
    from torchrec_transact.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint
    from torchrec_transact.train import build_model, ModelSpec, MODEL_JSON, TrainConfig

    if not os.path.exists(os.path.join(path, ".metadata")):
        for directory in (os.path.join(path, "checkpoints"), path):
            found = latest_checkpoint(directory) if os.path.isdir(directory) else None
            if found is not None:
                path = found
                break
        else:
            raise CheckpointError(f"{path}: no checkpoint there (no .metadata, no latest)")
    description = os.path.join(path, MODEL_JSON)
    if not os.path.exists(description):
        raise CheckpointError(
            f"{description} is missing: the checkpoint predates model descriptions; "
            "build the model yourself and use Predictor(model)"
        )
    with open(description) as f:
        info = json.load(f)
    train_model = build_model(
        TrainConfig(**info["config"]), ModelSpec(**info["spec"]), info["encoder"], info["tasks"]
    )
    state = {"model": train_model.state_dict()}
    load_checkpoint(path, state)
    train_model.load_state_dict(state["model"])
    return train_model.model, info


@dataclass
class ServingConfig:
    """How a :class:`Predictor` runs.

    Args:
        device (str): "cpu" or "cuda" (or "cuda:1").
        bfloat16 (bool): run under bfloat16 autocast.
        dedup (bool): share the user's part of the first encoder layer.
        pad_to_buckets (Optional[bool]): pad the candidates and the sequence up to the
            next bucket (None: on CUDA only, where each bucket is a CUDA graph).
        cuda_graphs (bool): on CUDA, capture each bucket once and replay it.
        candidate_buckets (Tuple[int, ...]): candidate counts a batch is padded to.
        sequence_buckets (Tuple[int, ...]): sequence lengths; () means the model's
            ``max_seq_len`` only.
        max_candidates_per_batch (Optional[int]): larger requests are scored in batches
            of this many candidates (each one host-to-device copy); None: 128 on CPU,
            where a [128 * L, d] activation stays in cache and in the allocator's heap
            (1,000 candidates at once ran about 1.5x slower, on either path), and the
            largest bucket on CUDA. With buckets, at most the largest bucket.
    """

    device: str = "cpu"
    bfloat16: bool = False
    dedup: bool = True
    pad_to_buckets: Optional[bool] = None
    cuda_graphs: bool = True
    candidate_buckets: Tuple[int, ...] = (1, 16, 64, 256, 1024)
    sequence_buckets: Tuple[int, ...] = ()
    max_candidates_per_batch: Optional[int] = None


@dataclass
class PreparedRequest:
    """A validated request as host tensors, in the scorer's argument order."""

    dense: torch.Tensor  # float32 [N, W]
    sparse_ids: torch.Tensor  # int64 [N, F]
    candidate_ids: torch.Tensor  # int64 [N]
    action_types: torch.Tensor  # int64 [L]
    item_ids: torch.Tensor  # int64 [L]
    ages_s: torch.Tensor  # float32 [L]
    dropped_events: int
    repaired_dense: int

    @property
    def num_candidates(self) -> int:
        return self.candidate_ids.shape[0]


class Predictor:
    """A trained model in evaluation mode, scoring one request at a time.

    Args:
        model (nn.Module): a ``TransActDCN`` or ``TransActDLRM``, unsharded.
        config (ServingConfig): device, precision, buckets.

    ``Predictor.from_checkpoint("outputs/main")`` loads what ``transact-train`` saved. The
    model's categorical tables become views of the fused lookup's matrices (one copy of the
    weights, frozen): serve a copy of a model you still train.

    Example::

        ebc = EmbeddingBagCollection(tables=[
            EmbeddingBagConfig(name="t", embedding_dim=8, num_embeddings=100, feature_names=["user_id"]),
        ])
        transact = TransAct(TransActConfig(num_action_types=3, num_items=50, latest_k=2))
        model = TransActDCN(ebc, transact, 2, [8], [16], tasks=["click", "save"])
        predictor = Predictor(model)
        request = ScoringRequest(
            events=UserEvents(  # raw events, any order; the one at 130 s is in the future
                timestamps=[100.0, 40.0, 90.0, 130.0], action_types=[1, 0, 2, 1],
                item_ids=[7, 8, 9, 10],
            ),
            request_time=120.0,
            candidate_ids=[17, 42, 7],
            dense=[0.5, -1.0],            # one row shared by the candidates, or [3, 2]
            sparse={"user_id": 5},        # one id per request, or one per candidate
        )
        result = predictor.score(request)
        result["save"]            # tensor of 3 probabilities
        result.dropped_events     # 1
    """

    def __init__(self, model: nn.Module, config: Optional[ServingConfig] = None) -> None:
        self.config = config or ServingConfig()
        self.device = torch.device(self.config.device)
        self.model = model.eval().to(self.device)
        encoder = model.sequence_encoder
        self.sequence_config = encoder.config
        self.tasks: List[str] = list(model.tasks)
        self.dense_width: int = (
            model.dense_in_features + getattr(model, "user_embedding_dim", 0)
        )
        self.processor = RequestFeatureProcessor(
            self.sequence_config.max_seq_len,
            (
                self.sequence_config.action_feature,
                self.sequence_config.item_feature,
                self.sequence_config.candidate_feature,
            ),
        )
        self.scorer: Optional[RequestScorer] = (
            RequestScorer(self.model, self.config.dedup).eval().to(self.device)
            if supports_request_scoring(model)
            else None
        )
        # Feature order of the collection: what the model's rank() and the fused lookup use.
        configs = _ranking_ebc(model).embedding_bag_configs()
        self.sparse_feature_names = [n for c in configs for n in c.feature_names]
        self.sparse_sizes = {n: c.num_embeddings for c in configs for n in c.feature_names}
        pad = self.config.pad_to_buckets
        self.pad_to_buckets = self.device.type == "cuda" if pad is None else pad
        size = self.config.max_candidates_per_batch
        if size is None:  # CPU: intermediates that stay in cache and in the heap
            size = self.config.candidate_buckets[-1] if self.device.type == "cuda" else 128
        self.max_candidates_per_batch = (
            min(size, self.config.candidate_buckets[-1]) if self.pad_to_buckets else size
        )
        self.use_cuda_graphs = self.device.type == "cuda" and self.config.cuda_graphs
        self._graphs: Dict[Tuple[int, int], "_CapturedBucket"] = {}

    @classmethod
    def from_checkpoint(cls, path: str, config: Optional[ServingConfig] = None) -> "Predictor":
        """Loads the model a ``transact-train`` run saved (see :func:`load_trained_model`).

        Args:
            path (str): a checkpoint (``.../checkpoints/step_N``), a run's ``checkpoints``
                directory or the run's output directory (the latest checkpoint of either).
            config (Optional[ServingConfig]): how to serve.
        """
        model, _ = load_trained_model(path)
        return cls(model, config)

    # ------------------------------------------------------------------ requests

    def prepare(self, request: ScoringRequest) -> PreparedRequest:
        """Validates a request and builds its host tensors (see the module docstring for
        what is refused and what is repaired)."""
        candidates = np.asarray(request.candidate_ids, dtype=np.int64).reshape(-1)
        n = candidates.size
        if n == 0:
            raise RequestError("the request has no candidates")
        num_items = self.sequence_config.num_items
        bad = np.flatnonzero((candidates < 0) | (candidates >= num_items))
        if bad.size:
            raise RequestError(
                f"candidate {bad[0]} has item id {candidates[bad[0]]}, expected "
                f"0 <= id < {num_items}"
            )
        if not np.isfinite(request.request_time):
            raise RequestError(f"request_time is {request.request_time}")

        dense = np.asarray(request.dense, dtype=np.float32)
        if dense.ndim == 1:
            dense = np.broadcast_to(dense, (n, dense.shape[0]))
        if dense.shape != (n, self.dense_width):
            raise RequestError(
                f"dense has shape {dense.shape}, expected [{n}, {self.dense_width}] or "
                f"[{self.dense_width}]"
            )
        finite = np.isfinite(dense)
        repaired = int(dense.size - finite.sum())
        if repaired:
            dense = np.where(finite, dense, np.float32(0.0))

        sparse = np.empty((n, len(self.sparse_feature_names)), dtype=np.int64)
        for column, name in enumerate(self.sparse_feature_names):
            if name not in request.sparse:
                raise RequestError(
                    f"categorical feature {name!r} is missing (expected {self.sparse_feature_names})"
                )
            ids = np.asarray(request.sparse[name], dtype=np.int64)
            if ids.ndim == 0 or ids.size == 1:
                ids = np.full(n, int(ids.reshape(-1)[0]), dtype=np.int64)
            if ids.shape != (n,):
                raise RequestError(f"categorical feature {name!r} has {ids.size} ids, expected 1 or {n}")
            size = self.sparse_sizes[name]
            bad = np.flatnonzero((ids < 0) | (ids >= size))
            if bad.size:
                raise RequestError(
                    f"categorical feature {name!r}, candidate {bad[0]}: id {ids[bad[0]]}, "
                    f"expected 0 <= id < {size}"
                )
            sparse[:, column] = ids

        events = request.events
        known = (
            np.isfinite(events.timestamps)
            & (events.action_types >= 0)
            & (events.action_types < self.sequence_config.num_action_types)
            & (events.item_ids >= 0)
            & (events.item_ids < num_items)
        )
        usable = UserEvents(events.timestamps[known], events.action_types[known], events.item_ids[known])
        actions, items, ages = self.processor.sequence(usable, float(request.request_time))
        # Dropped: unknown ids, non-finite times, logged at or after the request.
        # (Exact repeats are one event logged twice; events beyond max_seq_len are older
        # than the window; neither is counted.)
        future = int((usable.timestamps >= request.request_time).sum())
        dropped = int(events.timestamps.size - known.sum()) + future
        return PreparedRequest(
            dense=torch.from_numpy(np.array(dense, dtype=np.float32)),  # a writable copy
            sparse_ids=torch.from_numpy(sparse),
            candidate_ids=torch.from_numpy(candidates),
            action_types=torch.from_numpy(np.ascontiguousarray(actions)),
            item_ids=torch.from_numpy(np.ascontiguousarray(items)),
            ages_s=torch.from_numpy(np.ascontiguousarray(ages)),
            dropped_events=dropped,
            repaired_dense=repaired,
        )

    def random_request(
        self, num_candidates: int, num_events: int, seed: int = 0, request_time: float = 1.7e9
    ) -> ScoringRequest:
        """A valid request with random ids and features, for smoke and load tests.

        Events are spread over the last week, and the candidates' categorical features are
        random ids per candidate (request-level features vary too: this is not a real
        user, only a well-formed request of the right size)."""
        rng = np.random.default_rng(seed)
        config = self.sequence_config
        events = UserEvents(
            timestamps=request_time - rng.exponential(86400.0, num_events) - 1.0,
            action_types=rng.integers(0, config.num_action_types, num_events),
            item_ids=rng.integers(0, config.num_items, num_events),
        )
        return ScoringRequest(
            events=events,
            request_time=request_time,
            candidate_ids=rng.integers(0, config.num_items, num_candidates),
            dense=rng.standard_normal(self.dense_width).astype(np.float32),
            sparse={
                name: rng.integers(0, self.sparse_sizes[name], num_candidates)
                for name in self.sparse_feature_names
            },
        )

    def _autocast(self):  # type: ignore[no-untyped-def]
        # cache_enabled=False: cached weight casts must not outlive a CUDA-graph capture.
        return torch.autocast(
            self.device.type if self.device.type != "meta" else "cpu",
            dtype=torch.bfloat16,
            enabled=self.config.bfloat16,
            cache_enabled=False,
        )

    def score(self, request: ScoringRequest) -> ScoringResult:
        """Per-task probabilities of each of the request's candidates.

        Raises:
            RequestError: for a request that cannot be scored (see the module docstring).
        """
        prepared = self.prepare(request)
        if self.scorer is None:
            probabilities = self._score_model(prepared)
        else:
            probabilities = self.score_prepared(prepared).cpu()
        return self._result(prepared, probabilities)

    def score_naive(self, request: ScoringRequest) -> ScoringResult:
        """The same scores through the model's own batched forward: the processor repeats
        the sequence once per candidate and the model looks it up and encodes it N times
        (the path that serving without dedup takes; the reference for tests)."""
        prepared = self.prepare(request)
        return self._result(prepared, self._score_model(prepared))

    def _result(self, prepared: PreparedRequest, probabilities: torch.Tensor) -> ScoringResult:
        return ScoringResult(
            self.tasks,
            probabilities,
            int(prepared.item_ids.shape[0]),
            prepared.dropped_events,
            prepared.repaired_dense,
        )

    def _chunks(self, prepared: PreparedRequest) -> List[PreparedRequest]:
        """The request in batches of at most ``max_candidates_per_batch`` candidates."""
        n, size = prepared.num_candidates, self.max_candidates_per_batch
        if n <= size:
            return [prepared]
        return [_slice_candidates(prepared, s, min(s + size, n)) for s in range(0, n, size)]

    def _score_model(self, prepared: PreparedRequest) -> torch.Tensor:
        outputs = []
        for chunk in self._chunks(prepared):
            n = chunk.num_candidates
            length = chunk.item_ids.shape[0]
            sequence = sequence_kjt(
                chunk.action_types.repeat(n),
                chunk.item_ids.repeat(n),
                chunk.ages_s.repeat(n),
                torch.full((n,), length, dtype=torch.long),
                chunk.candidate_ids,
                keys=self.processor.keys,
            )
            sparse = KeyedJaggedTensor.from_lengths_sync(
                keys=self.sparse_feature_names,
                values=chunk.sparse_ids.t().reshape(-1),
                lengths=torch.ones(chunk.sparse_ids.numel(), dtype=torch.int32),
            )
            with torch.inference_mode(), self._autocast():
                logits = self.model(
                    chunk.dense.to(self.device), sparse.to(self.device), sequence.to(self.device)
                )
            outputs.append(torch.sigmoid(logits.float()).cpu())
        return torch.cat(outputs)

    def score_prepared(self, prepared: PreparedRequest) -> torch.Tensor:
        """The scorer on a prepared request; float [N, T] on the serving device."""
        if self.scorer is None:
            raise ValueError("this model's sequence encoder has no request scorer; use score()")
        outputs = [
            self._score_bucket(chunk) if self.pad_to_buckets else self._score_exact(chunk)
            for chunk in self._chunks(prepared)
        ]
        return outputs[0] if len(outputs) == 1 else torch.cat(outputs)

    def _score_exact(self, prepared: PreparedRequest) -> torch.Tensor:
        """No padding beyond one position for an empty sequence."""
        length = int(prepared.item_ids.shape[0])
        inputs = self._host_inputs(prepared, prepared.num_candidates, max(length, 1))
        if length > 0:  # every position is real: no mask to apply
            inputs[-1] = None
        if self.device.type != "cpu":
            inputs = self._to_device(inputs)
        with torch.inference_mode(), self._autocast():
            return self.scorer(*inputs)

    def _host_inputs(
        self, prepared: PreparedRequest, num_candidates: int, length: int
    ) -> List[Optional[torch.Tensor]]:
        """The scorer's arguments on the host, padded to (num_candidates, length)."""
        real_length = prepared.item_ids.shape[0]

        def pad(t: torch.Tensor, size: int) -> torch.Tensor:
            if t.shape[0] == size:
                return t
            return torch.cat([t, t.new_zeros(size - t.shape[0], *t.shape[1:])])

        return [
            pad(prepared.dense, num_candidates),
            pad(prepared.sparse_ids, num_candidates),
            pad(prepared.candidate_ids, num_candidates),
            pad(prepared.action_types, length),
            pad(prepared.item_ids, length),
            torch.tensor(real_length, dtype=torch.long),
        ]

    def _to_device(self, inputs: List[Optional[torch.Tensor]]) -> List[Optional[torch.Tensor]]:
        """One host-to-device copy for all of a request's tensors."""
        present = [t for t in inputs if t is not None]
        buffer, layout = pack(present, pin_memory=self.device.type == "cuda")
        on_device = iter(unpack(buffer.to(self.device, non_blocking=True), layout))
        return [None if t is None else next(on_device) for t in inputs]

    def _bucket(self, n: int, length: int) -> Tuple[int, int]:
        candidates = next(b for b in self.config.candidate_buckets if b >= n)
        sequences = self.config.sequence_buckets or (self.sequence_config.max_seq_len,)
        latest_k = max(self.sequence_config.latest_k, 1)
        sequence = next((b for b in sequences if b >= max(length, latest_k)), max(sequences))
        return candidates, max(sequence, length)

    def _score_bucket(self, prepared: PreparedRequest) -> torch.Tensor:
        n = prepared.num_candidates
        key = self._bucket(n, int(prepared.item_ids.shape[0]))
        inputs = self._host_inputs(prepared, *key)
        if not self.use_cuda_graphs:
            with torch.inference_mode(), self._autocast():
                return self.scorer(*self._to_device(inputs))[:n]
        if key not in self._graphs:
            self._graphs[key] = _CapturedBucket(self, inputs)
        return self._graphs[key].replay(inputs)[:n].clone()  # the next replay overwrites it

    def export(self, path: str) -> None:
        """Saves the scorer with ``torch.export`` (dynamic N and L, L > latest_k),
        loadable without this package: ``torch.export.load(path).module()(dense,
        sparse_ids, candidate_ids, action_types, item_ids, length)`` returns [N, T]
        probabilities; pad a shorter sequence to that minimum and pass its real length.
        """
        if self.scorer is None:
            raise ValueError(f"no request scorer for {type(self.model.sequence_encoder).__name__}")
        example = self.prepare(self.random_request(4, self.sequence_config.max_seq_len + 1))
        # A slice of the first latest_k tokens is contiguous exactly when L == latest_k;
        # export cannot keep that case dynamic, so sequences are longer than latest_k.
        min_length = self.sequence_config.latest_k + 1
        inputs = self._host_inputs(example, 4, self.sequence_config.max_seq_len)
        candidates = torch.export.Dim("candidates", min=1)
        length = torch.export.Dim("sequence_length", min=min_length, max=max(min_length, 4096))
        dynamic = ({0: candidates}, {0: candidates}, {0: candidates}, {0: length}, {0: length}, {})
        scorer = self.scorer.cpu()
        try:
            with torch.no_grad():
                program = torch.export.export(scorer, tuple(inputs), dynamic_shapes=dynamic)
        finally:
            scorer.to(self.device)
        torch.export.save(program, path)


def _slice_candidates(prepared: PreparedRequest, start: int, stop: int) -> PreparedRequest:
    return PreparedRequest(
        prepared.dense[start:stop],
        prepared.sparse_ids[start:stop],
        prepared.candidate_ids[start:stop],
        prepared.action_types,
        prepared.item_ids,
        prepared.ages_s,
        prepared.dropped_events,
        prepared.repaired_dense,
    )


class _CapturedBucket:
    """One (candidates, sequence length) bucket captured as a CUDA graph.

    Its inputs live in one static device buffer; a replay copies the request's packed,
    pinned host buffer into it (the one host-to-device copy), replays and returns the
    static output."""

    def __init__(self, predictor: Predictor, inputs: List[Optional[torch.Tensor]]) -> None:
        self.host, self.layout = pack(inputs, pin_memory=True)
        self.host_views = unpack(self.host, self.layout)
        self.device_buffer = self.host.to(predictor.device)
        device_inputs = unpack(self.device_buffer, self.layout)
        scorer = predictor.scorer
        stream = torch.cuda.Stream(predictor.device)
        stream.wait_stream(torch.cuda.current_stream(predictor.device))
        with torch.cuda.stream(stream), torch.inference_mode(), predictor._autocast():
            for _ in range(3):  # warm up kernels and allocator outside the capture
                scorer(*device_inputs)
        torch.cuda.current_stream(predictor.device).wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph), torch.inference_mode(), predictor._autocast():
            self.output = scorer(*device_inputs)

    def replay(self, inputs: List[Optional[torch.Tensor]]) -> torch.Tensor:
        for view, value in zip(self.host_views, inputs):
            view.copy_(value)
        self.device_buffer.copy_(self.host, non_blocking=True)
        self.graph.replay()
        return self.output
