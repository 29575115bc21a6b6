#!/usr/bin/env python3
"""Real logs as ranking examples: requests, their candidates and labels, and each request's
sequence, split in time into training, validation and evaluation.

Event logs (:class:`SessionRequests`): a *request* is one user's session, consecutive rows
less than ``session_gap_s`` apart (at most ``max_request_size`` rows; longer sessions are
cut into parts whose sequences include the earlier parts). Every row of the session is a
candidate, labelled by its actions; the sequence is the user's actions strictly before the
session (built by :class:`RequestFeatureProcessor`: most recent first, at most
``max_seq_len``, ages in seconds before the session start), so no example sees its own
row or a later one::

    user 7:  e1 e2      e3 e4 e5            e6 e7       (time ->)
             |session 1| |---session 2---|  |session 3|
    request 2 (session 2): candidates e3, e4, e5; sequence e2, e1 (most recent first)

Impression logs (:class:`ImpressionRequests`, MIND): a request is one row; its candidates
are the shown items, labelled clicked or not; its sequence is the user's history of
clicked items, which has no times: the most recent gets the age ``history_age_s`` of the
format (a week by default) and each older one a second more, so the sequence keeps its
order and the random training window (at most a day) never hides it.

Splits: requests before the ``train_fraction`` quantile of request times train, those up
to the ``train_fraction + valid_fraction`` quantile validate (the end of the training
period: settings and early stopping are chosen there), the rest evaluate.
"""

import math
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from torchrec_transact.data.batch import (
    CANDIDATE_ITEM_FEATURE, IMPRESSION_ITEM_FEATURE, LIFELONG_ACTION_FEATURE, LIFELONG_ITEM_FEATURE, TransActBatch,
)
from torchrec_transact.data.event_format import EventFormat
from torchrec_transact.data.event_log import EventLog, ImpressionLog, preset_for_file, read_event_log, read_impression_log
from torchrec_transact.data.features import most_recent, RequestFeatureProcessor, UserEvents
from torchrec_transact.data.kjt import (
    categorical_kjt, repeat_per_candidate, sequence_kjt, SideSequenceValues, with_side_sequences,
)

DENSE_FEATURES = ("log_history_length", "log_hours_since_last_action", "hour_sin", "hour_cos")
SPLITS = ("train", "valid", "eval")


def dense_features(ages: np.ndarray, request_time: float) -> List[float]:
    """The request's ``DENSE_FEATURES`` from its sequence's ages (most recent first)."""
    hours = (float(ages[0]) / 3600.0) if ages.size else 0.0
    hour_of_day = (request_time % 86400.0) / 86400.0 * 2 * math.pi
    return [math.log1p(ages.size), math.log1p(hours), math.sin(hour_of_day), math.cos(hour_of_day)]


def span_positions(starts: np.ndarray, requests: Sequence[int]) -> np.ndarray:
    """Positions ``starts[r]:starts[r + 1]`` of each of ``requests``, in order (int64)."""
    parts = [np.arange(starts[r], starts[r + 1]) for r in requests]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _side_values(
    sequences: List[Tuple[np.ndarray, np.ndarray, np.ndarray]], per_request: torch.Tensor, keys: Tuple[str, ...]
) -> SideSequenceValues:
    """Per-request (action types, items, ages) repeated for each candidate, under
    ``keys``: (action, item) for a lifelong sequence, (item,) for impressions."""
    index, lengths = repeat_per_candidate(torch.tensor([s[0].size for s in sequences]), per_request)

    def flat(column: int) -> torch.Tensor:
        return torch.from_numpy(np.concatenate([s[column] for s in sequences]))[index]

    values = (flat(0), flat(1)) if len(keys) == 2 else (flat(1),)
    return SideSequenceValues(keys, values, flat(2), lengths)


def _first_of_runs(values: np.ndarray) -> np.ndarray:
    """bool [n]: True where a sorted array's value differs from the one before (and at 0)."""
    new = np.ones(values.size, dtype=bool)
    new[1:] = values[1:] != values[:-1]
    return new


def _run_starts(new_run: np.ndarray) -> np.ndarray:
    """int [n]: the position where each element's run begins (``new_run`` marks the first
    element of every run)."""
    return np.maximum.accumulate(np.where(new_run, np.arange(new_run.size), 0))


def task_matrix(fmt: EventFormat) -> np.ndarray:
    """bool [T, A]: which actions make each task positive."""
    names = fmt.action_names
    return np.array([[a in fmt.tasks[t] for a in names] for t in fmt.tasks], dtype=bool)


class LogRequests:
    """What both kinds of log share: the time split and the batches of whole requests.

    Subclasses set ``request_time`` (float64 [R]), ``request_user`` (int64 [R]) and
    ``request_size`` (int64 [R], candidates) and implement :meth:`history` and
    :meth:`candidates`.
    """

    def __init__(self, fmt: EventFormat, max_seq_len: int, train_fraction: float, valid_fraction: float) -> None:
        if not (0.0 < train_fraction and valid_fraction >= 0.0 and train_fraction + valid_fraction < 1.0):
            raise ValueError(
                f"train_fraction={train_fraction}, valid_fraction={valid_fraction}: need 0 < train, "
                "0 <= valid and train + valid < 1 (the rest evaluates)"
            )
        self.format = fmt
        self.processor = RequestFeatureProcessor(max_seq_len)
        self.train_fraction, self.valid_fraction = train_fraction, valid_fraction
        self._tasks = task_matrix(fmt)

    def _cut(self) -> None:
        times = self.request_time
        self.time_cut = float(np.quantile(times, self.train_fraction)) if times.size else 0.0
        self.valid_cut = (
            float(np.quantile(times, self.train_fraction + self.valid_fraction)) if self.valid_fraction else self.time_cut
        )

    @property
    def tasks(self) -> List[str]:
        return list(self.format.tasks)

    @property
    def categorical_features(self) -> List[str]:
        return []

    @property
    def sparse_features(self) -> List[str]:
        return ["user_id", CANDIDATE_ITEM_FEATURE] + self.categorical_features

    def split(self, name: str) -> np.ndarray:
        """Indices of the ``"train"``, ``"valid"`` or ``"eval"`` requests."""
        times = self.request_time
        if name == "train":
            return np.flatnonzero(times < self.time_cut)
        if name == "valid":
            return np.flatnonzero((times >= self.time_cut) & (times < self.valid_cut))
        if name == "eval":
            return np.flatnonzero(times >= self.valid_cut)
        raise ValueError(f"split {name!r}: expected one of {list(SPLITS)}")

    # TransAct V2: lifelong actions and impressions per request (0: none);
    # open_log(lifelong_len=..., impression_len=...).
    lifelong_len: int = 0
    impression_len: int = 0

    def history(self, request: int) -> UserEvents:
        raise NotImplementedError

    def lifelong_history(self, request: int) -> Optional[UserEvents]:
        """The user's events before the request for the lifelong sequence (at least its
        ``lifelong_len`` most recent); None where the log has no such history."""
        return None

    def impression_history(self, request: int) -> Optional[UserEvents]:
        """Items shown to the user before the request and not engaged with (the
        ``impression_len`` most recent rows before the request's own; rows at the
        request's time are dropped afterwards); None where the log has no impressions."""
        return None

    def lifelong_sequences(self, requests: Sequence[int]) -> List[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Each request's lifelong sequence: action types, item ids and ages (s), the
        ``lifelong_len`` most recent events before the request, most recent first."""
        return self._recent(requests, self.lifelong_history, self.lifelong_len, "lifelong history")

    def impression_sequences(self, requests: Sequence[int]) -> List[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Each request's impression sequence, as :meth:`lifelong_sequences` (action types
        are zeros)."""
        return self._recent(requests, self.impression_history, self.impression_len, "impressions")

    def _recent(
        self, requests: Sequence[int], history: Callable[[int], Optional[UserEvents]], count: int, what: str
    ) -> List[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
        out = []
        for r in requests:
            events = history(r)
            if events is None:
                raise ValueError(f"{type(self).__name__} has no {what}")
            order = most_recent(events, self.request_time[r], count)
            out.append((events.action_types[order], events.item_ids[order],
                        (self.request_time[r] - events.timestamps[order]).astype(np.float32)))
        return out

    def candidates(self, requests: Sequence[int]) -> Tuple[np.ndarray, np.ndarray, List[np.ndarray]]:
        """The requests' candidates in order: item ids [N], labels [N, T] and the
        categorical features' ids ([N] each)."""
        raise NotImplementedError

    def request_ids(self, requests: Sequence[int]) -> np.ndarray:
        """int64 ids of ``requests``, unique within the data (HIT@K groups examples by them)."""
        return np.asarray(requests, dtype=np.int64)

    def sequences(self, requests: Sequence[int]) -> List[Tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Each request's sequence: action types, item ids and ages (s), most recent first."""
        return [self.processor.sequence(self.history(r), self.request_time[r]) for r in requests]

    def batch(self, requests: Sequence[int]) -> TransActBatch:
        """The examples (one per candidate) of whole requests."""
        sequences = self.sequences(requests)
        dense = [dense_features(s[2], self.request_time[r]) for s, r in zip(sequences, requests)]
        items, labels, categoricals = self.candidates(requests)
        per_request = torch.from_numpy(self.request_size[np.asarray(requests, dtype=np.int64)])
        index, lengths = repeat_per_candidate(torch.tensor([s[0].size for s in sequences]), per_request)

        def flat(column: int) -> torch.Tensor:
            return torch.from_numpy(np.concatenate([s[column] for s in sequences]))[index]

        sequence = sequence_kjt(flat(0), flat(1), flat(2), lengths, torch.from_numpy(items))
        sides = []
        if self.lifelong_len > 0:
            sides.append(_side_values(self.lifelong_sequences(requests), per_request,
                                      (LIFELONG_ACTION_FEATURE, LIFELONG_ITEM_FEATURE)))
        if self.impression_len > 0:
            sides.append(_side_values(self.impression_sequences(requests), per_request, (IMPRESSION_ITEM_FEATURE,)))
        if sides:
            sequence = with_side_sequences(sequence, sides)
        users = np.repeat(self.request_user[np.asarray(requests, dtype=np.int64)], per_request.numpy())
        sparse = categorical_kjt(self.sparse_features, torch.from_numpy(np.stack([users, items, *categoricals], 1)))
        return TransActBatch(
            dense_features=torch.tensor(dense, dtype=torch.float32).repeat_interleave(per_request, dim=0),
            sparse_features=sparse,
            sequence_features=sequence,
            labels=torch.from_numpy(labels.astype(np.float32)),
            weights=torch.ones(items.size),
            request_ids=torch.from_numpy(self.request_ids(requests)).repeat_interleave(per_request),
        )

    def batches(
        self, split: str, batch_size: int, shuffle: bool = False, seed: int = 0, rank: int = 0, world_size: int = 1
    ) -> Iterator[TransActBatch]:
        """Batches of whole requests, about ``batch_size`` examples each (a request larger
        than the batch is a batch of its own). Rank ``r`` of ``world_size`` reads every
        world_size-th request."""
        requests = self.split(split)
        if shuffle:
            requests = np.random.default_rng(seed).permutation(requests)
        requests = requests[rank::world_size]
        pending: List[int] = []
        pending_size = 0
        for request, size in zip(requests.tolist(), self.request_size[requests].tolist()):
            if pending and pending_size + size > batch_size:
                yield self.batch(pending)
                pending, pending_size = [], 0
            pending.append(request)
            pending_size += size
        if pending:
            yield self.batch(pending)


class SessionRequests(LogRequests):
    """Sessions of an event log as requests (see the module docstring).

    Args:
        log (EventLog): the rows.
        max_seq_len (int): most recent actions in a sequence.
        session_gap_s (float): a gap longer than this starts a new session.
        max_request_size (Optional[int]): at most this many candidates per request.
        train_fraction, valid_fraction (float): the time split.

    Example::

        import os
        from torchrec_transact.data.event_format import preset
        from torchrec_transact.data.event_log import read_event_log
        data_dir = os.environ["TRANSACT_DATA_DIR"]
        log = read_event_log(f"{data_dir}/movielens_100k/ml-100k.inter", preset("movielens"))
        requests = SessionRequests(log, max_seq_len=50)
        batch = next(requests.batches("train", batch_size=256))
    """

    def __init__(
        self,
        log: EventLog,
        max_seq_len: int = 100,
        session_gap_s: float = 3600.0,
        max_request_size: Optional[int] = None,
        train_fraction: float = 0.7,
        valid_fraction: float = 0.1,
    ) -> None:
        super().__init__(log.format, max_seq_len, train_fraction, valid_fraction)
        self.log = log
        order = np.lexsort((log.timestamps, log.users))  # by user, then time
        self._order = order
        users, times = log.users[order], log.timestamps[order]
        n = len(order)
        new_user = _first_of_runs(users)
        new_session = new_user.copy()
        new_session[1:] |= (times[1:] - times[:-1]) > session_gap_s
        if max_request_size is not None:
            new_session |= (np.arange(n) - _run_starts(new_session)) % max_request_size == 0
        self.request_start = np.flatnonzero(new_session)  # positions in sorted order
        self.request_end = np.append(self.request_start[1:], n)
        self.history_start = _run_starts(new_user)[self.request_start]
        self.request_time = times[self.request_start]
        self.request_user = users[self.request_start]
        labels = (log.action_mask[order].astype(np.float32) @ self._tasks.T.astype(np.float32)) > 0
        # One candidate per item of a request (a page view, then a purchase of the same item
        # is one candidate, positive for buy), at the item's first row, labels OR'd.
        request_of = np.repeat(np.arange(self.request_start.size), self.request_end - self.request_start)
        key = request_of * (int(log.items.max(initial=0)) + 1) + log.items[order]
        _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
        self._candidate_position = first  # sorted by (request, item)
        self._candidate_labels = np.zeros((first.size, labels.shape[1]), dtype=bool)
        np.logical_or.at(self._candidate_labels, inverse, labels)
        self.candidate_rows = np.bincount(inverse, minlength=first.size)  # log rows per candidate
        self.request_size = np.bincount(request_of[first], minlength=self.request_start.size).astype(np.int64)
        self._candidate_start = np.concatenate([[0], np.cumsum(self.request_size)])
        # Every action of every row, in sorted row order: the tokens of the sequences (a
        # row with several actions is several tokens at one time; a row without is none).
        row, action = np.nonzero(log.action_mask[order])
        self._event_row, self._event_action = row, action
        self._event_item, self._event_time = log.items[order][row], times[row]
        # Rows without an action: shown, not engaged with (TransAct V2's impressions).
        self._shown_row = np.flatnonzero(~log.action_mask[order].any(axis=1))
        self._cut()

    @property
    def categorical_features(self) -> List[str]:
        return list(self.log.categoricals)

    def history(self, request: int) -> UserEvents:
        # The user's actions before the session; only the last ~2 * max_seq_len rows can
        # be kept after dropping duplicates, so older ones are not even looked at.
        return self._events_before(request, 2 * self.processor.max_seq_len)

    def lifelong_history(self, request: int) -> UserEvents:
        return self._events_before(request, self.lifelong_len)

    def impression_history(self, request: int) -> UserEvents:
        """The user's last ``impression_len`` rows without an action before the session."""
        lo, hi = np.searchsorted(self._shown_row, [self.history_start[request], self.request_start[request]])
        rows = self._order[self._shown_row[max(lo, hi - self.impression_len):hi]]
        return UserEvents(self.log.timestamps[rows], np.zeros(rows.size, dtype=np.int64), self.log.items[rows])

    def _events_before(self, request: int, count: int) -> UserEvents:
        """The user's last ``count`` actions before the request's session, counted in
        tokens, not rows: rows without an action (impressions) are no tokens."""
        lo, hi = np.searchsorted(self._event_row, [self.history_start[request], self.request_start[request]])
        lo = max(lo, hi - count)
        return UserEvents(self._event_time[lo:hi], self._event_action[lo:hi], self._event_item[lo:hi])

    def candidates(self, requests: Sequence[int]) -> Tuple[np.ndarray, np.ndarray, List[np.ndarray]]:
        spans = span_positions(self._candidate_start, requests)
        rows = self._order[self._candidate_position[spans]]
        categoricals = [self.log.categoricals[name][rows] for name in self.categorical_features]
        return self.log.items[rows], self._candidate_labels[spans], categoricals


class ImpressionRequests(LogRequests):
    """The rows of an impression log as requests (see the module docstring).

    Args:
        log (ImpressionLog): the rows.
        max_seq_len (int): most recent history items in a sequence.
        train_fraction, valid_fraction (float): the time split.
    """

    def __init__(
        self, log: ImpressionLog, max_seq_len: int = 100, train_fraction: float = 0.7, valid_fraction: float = 0.1
    ) -> None:
        super().__init__(log.format, max_seq_len, train_fraction, valid_fraction)
        self.log = log
        self.request_time, self.request_user = log.timestamps, log.users
        self.request_size = log.candidate_lengths
        self._candidate_start = np.concatenate([[0], np.cumsum(log.candidate_lengths)])
        self._history_start = np.concatenate([[0], np.cumsum(log.history_lengths)])
        names = log.format.action_names
        self._history_action = names.index(log.format.history_action)
        # A clicked impression is the impression action: positive for the tasks it is in.
        self._clicked_labels = self._tasks[:, names.index(log.format.impression_action)]
        self._shown: Optional[Tuple[np.ndarray, ...]] = None  # impression_history(), built on first use
        self._cut()

    def history(self, request: int) -> UserEvents:
        items = self.log.history[self._history_start[request] : self._history_start[request + 1]]
        ages = self.log.format.history_age_s + np.arange(items.size)[::-1]  # oldest first
        return UserEvents(self.request_time[request] - ages, np.full(items.size, self._history_action), items)

    def impression_history(self, request: int) -> UserEvents:
        """The items shown to the user in earlier rows and not clicked (the last
        ``impression_len`` of them)."""
        if self._shown is None:
            self._shown = self._unclicked_by_user()
        position, first, start, times, items = self._shown
        p = position[request]
        lo, hi = start[first[p]], start[p]
        lo = max(lo, hi - self.impression_len)
        return UserEvents(times[lo:hi], np.zeros(hi - lo, dtype=np.int64), items[lo:hi])

    def _unclicked_by_user(self) -> Tuple[np.ndarray, ...]:
        """Every row's unclicked items, rows ordered by user then time: each row's sorted
        position, the sorted position of its user's first row, where each sorted row's
        items start, and the items' times and ids."""
        order = np.lexsort((self.request_time, self.request_user))
        n = order.size
        spans = span_positions(self._candidate_start, order)
        unclicked = ~self.log.clicked[spans]
        sorted_row = np.repeat(np.arange(n), self.request_size[order])[unclicked]
        position = np.empty(n, dtype=np.int64)
        position[order] = np.arange(n)
        return (position, _run_starts(_first_of_runs(self.request_user[order])),
                np.searchsorted(sorted_row, np.arange(n + 1)),
                np.repeat(self.request_time[order], self.request_size[order])[unclicked],
                self.log.candidates[spans][unclicked])

    def candidates(self, requests: Sequence[int]) -> Tuple[np.ndarray, np.ndarray, List[np.ndarray]]:
        spans = span_positions(self._candidate_start, requests)
        clicked = self.log.clicked[spans]
        return self.log.candidates[spans], clicked[:, None] & self._clicked_labels[None, :], []


def open_log(
    fmt: EventFormat, path: str, skip_bad_rows: bool = False, session_gap_s: float = 3600.0,
    max_request_size: Optional[int] = None, min_id_count: int = 1, lifelong_len: int = 0, impression_len: int = 0,
    **split_args: object,
) -> Tuple[object, LogRequests]:
    """Reads a log in ``fmt`` and builds its requests: (the log, its requests).
    ``min_id_count`` > 1: ids seen fewer times in the training requests share the
    out-of-vocabulary row (:func:`keep_frequent_ids`). ``lifelong_len`` > 0: each batch
    also carries every request's lifelong sequence (TransAct V2; session logs only);
    ``impression_len`` > 0: its impressions (an impression log's earlier unclicked
    items, a session log's earlier rows without an action)."""
    if fmt.is_impression_log and lifelong_len:
        raise ValueError("an impression log has no lifelong history (its histories are the realtime sequences)")
    if fmt.is_impression_log:
        impressions = read_impression_log(path, fmt, skip_bad_rows)
        requests: LogRequests = ImpressionRequests(impressions, **split_args)  # type: ignore[arg-type]
        requests.impression_len = impression_len
        if min_id_count > 1:
            keep_frequent_ids(impressions, requests, min_id_count)
        return impressions, requests
    log = read_event_log(path, fmt, skip_bad_rows)

    def sessions() -> SessionRequests:
        return SessionRequests(log, session_gap_s=session_gap_s, max_request_size=max_request_size, **split_args)  # type: ignore[arg-type]

    requests = sessions()
    requests.lifelong_len, requests.impression_len = lifelong_len, impression_len
    if min_id_count > 1:
        keep_frequent_ids(log, requests, min_id_count)
    return log, requests


def keep_frequent_ids(log: object, requests: LogRequests, min_count: int) -> None:
    """In place: every table keeps the ids seen at least ``min_count`` times in the
    training requests (as candidates, or in an impression log's histories); the rest
    share row 0, which so gets trained and serves unseen ids too. The vocabularies shrink
    to match, so serving maps a rare raw id to row 0 as training did. Sessions, splits and
    histories stay as they were built from the raw ids: only the features' ids change."""
    train = requests.split("train")
    if isinstance(requests, SessionRequests):
        rows = requests._order[span_positions(np.append(requests.request_start, requests._order.size), train)]
        kept_users, user_remap = log.vocabularies["user_id"].keep_frequent(log.users[rows], min_count)  # type: ignore[attr-defined]
        kept_items, item_remap = log.vocabularies["item"].keep_frequent(log.items[rows], min_count)  # type: ignore[attr-defined]
        log.vocabularies.update(user_id=kept_users, item=kept_items)  # type: ignore[attr-defined]
        requests.request_user = user_remap[requests.request_user]
        requests._event_item = item_remap[requests._event_item]
        log.items = item_remap[log.items]  # type: ignore[attr-defined]
        for name in log.categoricals:  # type: ignore[attr-defined]
            kept, remap = log.vocabularies[name].keep_frequent(log.categoricals[name][rows], min_count)  # type: ignore[attr-defined]
            log.vocabularies[name] = kept  # type: ignore[attr-defined]
            log.categoricals[name] = remap[log.categoricals[name]]  # type: ignore[attr-defined]
        return
    assert isinstance(requests, ImpressionRequests) and isinstance(log, ImpressionLog)
    seen_items = np.concatenate([log.candidates[span_positions(requests._candidate_start, train)],
                                 log.history[span_positions(requests._history_start, train)]])
    users, user_remap = log.vocabularies["user_id"].keep_frequent(log.users[train], min_count)
    items, item_remap = log.vocabularies["item"].keep_frequent(seen_items, min_count)
    log.vocabularies.update(user_id=users, item=items)
    log.candidates, log.history = item_remap[log.candidates], item_remap[log.history]
    requests.request_user = user_remap[log.users]


def load_preset(name: str, path: str, skip_bad_rows: bool = False, **request_args: object) -> Tuple[object, LogRequests]:
    """Reads a preset log (``movielens``, ``taobao``, ``kuairand``, ``kuairand_likehate``,
    ``mind``) and builds its requests."""
    return open_log(preset_for_file(name, path), path, skip_bad_rows, **request_args)  # type: ignore[arg-type]
