#!/usr/bin/env python3
"""Scoring requests: what a request holds, how it is checked, and the host tensors it
becomes.

What a request may hold, and what happens to it (never a crash deep in the model, never a
NaN score):

* no candidates: :class:`RequestError`;
* a candidate or categorical id outside its table, or one that is not a whole number (3.7
  never becomes item 3): :class:`RequestError` naming the feature, the candidate and the
  value;
* the ``candidate_item`` categorical feature (the candidate's own id): filled from
  ``candidate_ids`` when the request leaves it out, a :class:`RequestError` when it
  disagrees with them;
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

from dataclasses import dataclass, field
from typing import List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from torchrec_transact.data.batch import CANDIDATE_ITEM_FEATURE
from torchrec_transact.data.features import integer_ids, most_recent, RequestFeatureProcessor, UserEvents
from torchrec_transact.modules.transact import TransActConfig

ArrayLike = Union[np.ndarray, Sequence[float], Sequence[int], torch.Tensor]


class RequestError(ValueError):
    """A request that cannot be scored; the message names the field and the value."""


def _ids(values: object, what: str) -> np.ndarray:
    try:
        return integer_ids(values, what)
    except ValueError as error:
        raise RequestError(str(error)) from None


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
        lifelong (Optional[UserEvents]): TransAct V2's lifelong history, any order (a
            model with ``lifelong_select_k`` > 0; None: empty).
        impressions (Optional[UserEvents]): items shown and not engaged with (a model
            with an impression sequence; action types are ignored; None: empty).
    """

    events: UserEvents
    request_time: float
    candidate_ids: ArrayLike
    dense: ArrayLike
    sparse: Mapping[str, Union[int, ArrayLike]] = field(default_factory=dict)
    lifelong: Optional[UserEvents] = None
    impressions: Optional[UserEvents] = None


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
        unknown_ids (int): raw ids the training log never had, scored with the shared
            out-of-vocabulary row (:meth:`Predictor.score_raw`).
    """

    tasks: List[str]
    probabilities: torch.Tensor
    sequence_length: int
    dropped_events: int
    repaired_dense: int
    unknown_ids: int = 0

    def __getitem__(self, task: str) -> torch.Tensor:
        """float [N], the probabilities of one task."""
        return self.probabilities[:, self.tasks.index(task)]


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
    # TransAct V2, most recent first, leakage and unknown ids removed, truncated:
    lifelong_action_types: Optional[torch.Tensor] = None  # int64 [Ll]
    lifelong_item_ids: Optional[torch.Tensor] = None  # int64 [Ll]
    impression_item_ids: Optional[torch.Tensor] = None  # int64 [Li]

    @property
    def num_candidates(self) -> int:
        return self.candidate_ids.shape[0]

    def candidates(self, start: int, stop: int) -> "PreparedRequest":
        """The candidates ``start:stop`` with the whole (shared) sequence."""
        return PreparedRequest(
            self.dense[start:stop],
            self.sparse_ids[start:stop],
            self.candidate_ids[start:stop],
            self.action_types,
            self.item_ids,
            self.ages_s,
            self.dropped_events,
            self.repaired_dense,
            self.lifelong_action_types,
            self.lifelong_item_ids,
            self.impression_item_ids,
        )


class RequestSchema:
    """The requests a model accepts: checks them into :class:`PreparedRequest` (see the
    module docstring for what is refused and what is repaired), and makes random valid
    ones.

    Args:
        sequence_config (TransActConfig): the sequence encoder's vocabularies and length.
        dense_width (int): dense columns the model takes.
        sparse_feature_names (Sequence[str]): categorical features, in the order of the
            model's lookups (the columns of ``PreparedRequest.sparse_ids``).
        sparse_sizes (Mapping[str, int]): rows of each categorical feature's table.
        processor (RequestFeatureProcessor): turns raw events into the sequence.

    Example::

        schema = RequestSchema(
            TransActConfig(num_action_types=3, num_items=50), dense_width=2,
            sparse_feature_names=["user_id"], sparse_sizes={"user_id": 100},
            processor=RequestFeatureProcessor(max_seq_len=10),
        )
        prepared = schema.prepare(schema.random_request(num_candidates=4, num_events=20))
        prepared.sparse_ids.shape  # torch.Size([4, 1])
    """

    def __init__(
        self,
        sequence_config: TransActConfig,
        dense_width: int,
        sparse_feature_names: Sequence[str],
        sparse_sizes: Mapping[str, int],
        processor: RequestFeatureProcessor,
    ) -> None:
        self.sequence_config = sequence_config
        self.dense_width = dense_width
        self.sparse_feature_names = list(sparse_feature_names)
        self.sparse_sizes = dict(sparse_sizes)
        self.processor = processor

    def prepare(self, request: ScoringRequest) -> PreparedRequest:
        """Validates a request and builds its host tensors.

        Raises:
            RequestError: for a request that cannot be scored.
        """
        candidates = _ids(request.candidate_ids, "candidate_ids").reshape(-1)
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
            sparse[:, column] = self._categorical(request, name, candidates)

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
        config = self.sequence_config
        lifelong_actions = lifelong_items = impression_items = None
        if config.lifelong_select_k > 0:
            lifelong_actions, lifelong_items, lost = self._side_events(
                request.lifelong, float(request.request_time), config.lifelong_max_len, True)
            dropped += lost
        if config.impression_item_feature is not None:
            _, impression_items, lost = self._side_events(
                request.impressions, float(request.request_time), config.impression_max_len, False)
            dropped += lost
        return PreparedRequest(
            dense=torch.from_numpy(np.array(dense, dtype=np.float32)),  # a writable copy
            sparse_ids=torch.from_numpy(sparse),
            candidate_ids=torch.from_numpy(candidates),
            action_types=torch.from_numpy(np.ascontiguousarray(actions)),
            item_ids=torch.from_numpy(np.ascontiguousarray(items)),
            ages_s=torch.from_numpy(np.ascontiguousarray(ages)),
            dropped_events=dropped,
            repaired_dense=repaired,
            lifelong_action_types=lifelong_actions,
            lifelong_item_ids=lifelong_items,
            impression_item_ids=impression_items,
        )

    def _side_events(
        self, events: Optional[UserEvents], request_time: float, max_len: int, with_actions: bool
    ) -> Tuple[torch.Tensor, torch.Tensor, int]:
        """A lifelong or impression sequence as the model sees it: known ids, before the
        request, the ``max_len`` most recent, most recent first; and how many were dropped
        (unknown, non-finite time, at or after the request)."""
        if events is None:
            empty = torch.zeros(0, dtype=torch.long)
            return empty, empty, 0
        config = self.sequence_config
        usable = np.isfinite(events.timestamps) & (events.item_ids >= 0) & (events.item_ids < config.num_items)
        if with_actions:
            usable &= (events.action_types >= 0) & (events.action_types < config.num_action_types)
        index = most_recent(events, request_time, max_len, usable)
        actions = torch.from_numpy(np.ascontiguousarray(events.action_types[index]))
        items = torch.from_numpy(np.ascontiguousarray(events.item_ids[index]))
        dropped = int(events.timestamps.size - (usable & (events.timestamps < request_time)).sum())
        return actions, items, dropped

    def _categorical(self, request: ScoringRequest, name: str, candidates: np.ndarray) -> np.ndarray:
        """int64 [n], the ids of one categorical feature, checked against its table."""
        n = candidates.size
        if name == CANDIDATE_ITEM_FEATURE:  # one source of truth: the candidate ids
            given = request.sparse.get(name)
            if given is not None:
                flat = _ids(given, f"categorical feature {name!r}").reshape(-1)
                if flat.size not in (1, n):
                    raise RequestError(f"categorical feature {name!r} has {flat.size} ids, expected 1 or {n}")
                ids = np.broadcast_to(flat, (n,))
                differ = np.flatnonzero(ids != candidates)
                if differ.size:
                    raise RequestError(
                        f"categorical feature {name!r}, candidate {differ[0]}: id {ids[differ[0]]} "
                        f"differs from candidate_ids ({candidates[differ[0]]}); leave it out, it "
                        "is filled from candidate_ids"
                    )
            return candidates
        if name not in request.sparse:
            raise RequestError(
                f"categorical feature {name!r} is missing (expected {self.sparse_feature_names})"
            )
        ids = _ids(request.sparse[name], f"categorical feature {name!r}")
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
        return ids

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
        candidates = rng.integers(0, config.num_items, num_candidates)
        return ScoringRequest(
            events=events,
            request_time=request_time,
            candidate_ids=candidates,
            dense=rng.standard_normal(self.dense_width).astype(np.float32),
            sparse={
                name: candidates if name == CANDIDATE_ITEM_FEATURE else rng.integers(0, self.sparse_sizes[name], num_candidates)
                for name in self.sparse_feature_names
            },
        )
