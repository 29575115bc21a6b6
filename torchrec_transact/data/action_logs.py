#!/usr/bin/env python3
"""Real action logs (CSV/TSV of user, item, action, time) as ranking examples.

A *request* is one user's session: consecutive events less than ``session_gap_s`` apart.
Every event of the session is one candidate of that request, labelled by its action; the
request's sequence is the user's events strictly before the session's first event (built
by :class:`RequestFeatureProcessor`: most recent first, at most ``max_seq_len``, ages in
seconds before the session start). So no example sees its own event or any later one.
Train and evaluation requests are split by one global time cut::

    user 7:  e1 e2      e3 e4 e5            e6 e7       (time ->)
             |session 1| |---session 2---|  |session 3|
    request 2 (session 2): candidates e3, e4, e5; sequence e2, e1 (most recent first)

Presets read MovieLens 100K (ratings become dislike / neutral / like; tasks ``save`` =
like and ``hide`` = dislike, as in the paper) and Taobao UserBehavior (pv, cart, fav, buy).
"""

import csv
import math
import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch

from torchrec_transact.data.batch import CANDIDATE_ITEM_FEATURE, TransActBatch
from torchrec_transact.data.features import RequestFeatureProcessor, UserEvents
from torchrec_transact.data.kjt import categorical_kjt, repeat_per_candidate, sequence_kjt


@dataclass
class EventLogFormat:
    """How to read one event-log file.

    Args:
        name (str): for error messages and logs.
        delimiter (str): field separator.
        header (Optional[bool]): the first line names the columns (and is skipped); None:
            decide by content, a first line whose timestamp field is not a number is the
            header (a data row is never taken for one).
        user_column, item_column, action_column, timestamp_column (int): 0-based columns.
        action_names (Sequence[str]): the action types, in id order.
        parse_action (Callable[[str], str]): raw field -> one of ``action_names``; raises
            ``ValueError`` for a value it does not know.
        tasks (Sequence[str]): label columns.
        task_actions (Dict[str, Sequence[str]]): the actions that make each task positive.
        categorical_columns (Dict[str, int]): extra columns that become categorical
            features of the candidate, by feature name.
    """

    name: str
    delimiter: str
    header: Optional[bool]
    user_column: int
    item_column: int
    action_column: int
    timestamp_column: int
    action_names: Sequence[str]
    parse_action: Callable[[str], str]
    tasks: Sequence[str]
    task_actions: Dict[str, Sequence[str]]
    categorical_columns: Dict[str, int] = field(default_factory=dict)


def _movielens_action(raw: str) -> str:
    rating = float(raw)
    if not 1.0 <= rating <= 5.0:
        raise ValueError(f"rating {raw!r} outside 1..5")
    return "dislike" if rating <= 2.0 else ("neutral" if rating < 4.0 else "like")


def _taobao_action(raw: str) -> str:
    if raw not in ("pv", "cart", "fav", "buy"):
        raise ValueError(f"behavior {raw!r} is not one of pv, cart, fav, buy")
    return raw


MOVIELENS = EventLogFormat(
    name="movielens",
    delimiter="\t",
    header=None,  # RecBole's .inter has one, the 100K release's u.data has none
    user_column=0,
    item_column=1,
    action_column=2,
    timestamp_column=3,
    action_names=("dislike", "neutral", "like"),
    parse_action=_movielens_action,
    tasks=("save", "hide"),
    task_actions={"save": ("like",), "hide": ("dislike",)},
)

TAOBAO = EventLogFormat(
    name="taobao",
    delimiter=",",
    header=False,
    user_column=0,
    item_column=1,
    action_column=3,
    timestamp_column=4,
    action_names=("pv", "cart", "fav", "buy"),
    parse_action=_taobao_action,
    tasks=("cart", "fav", "buy"),
    task_actions={"cart": ("cart",), "fav": ("fav",), "buy": ("buy",)},
    categorical_columns={"candidate_category": 2},
)

PRESETS: Dict[str, EventLogFormat] = {"movielens": MOVIELENS, "taobao": TAOBAO}


@dataclass
class EventLog:
    """Parsed events; ids are remapped to 0..n-1 in order of first appearance.

    Args:
        users, items, actions (np.ndarray): int64 [E].
        timestamps (np.ndarray): float64 [E], seconds.
        categoricals (Dict[str, np.ndarray]): int64 [E] per extra categorical column.
        num_users, num_items (int): vocabulary sizes.
        categorical_sizes (Dict[str, int]): vocabulary size of each extra column.
        format (EventLogFormat): how it was read.
        skipped_rows (int): bad rows skipped (with ``skip_bad_rows=True``).
        blank_rows (int): empty lines passed over.
        header (bool): the file's first line was a header.
    """

    users: np.ndarray
    items: np.ndarray
    actions: np.ndarray
    timestamps: np.ndarray
    categoricals: Dict[str, np.ndarray]
    num_users: int
    num_items: int
    categorical_sizes: Dict[str, int]
    format: EventLogFormat
    skipped_rows: int = 0
    blank_rows: int = 0
    header: bool = False

    def __len__(self) -> int:
        return int(self.users.shape[0])

    def report(self) -> Dict[str, int]:
        """What the reader skipped, by kind (nothing is dropped uncounted)."""
        return {
            "events": len(self), "skipped_malformed_rows": self.skipped_rows,
            "blank_rows": self.blank_rows, "header_rows": int(self.header),
        }


def _is_header(row: List[str], fmt: EventLogFormat) -> bool:
    if fmt.header is not None:
        return fmt.header
    field = row[fmt.timestamp_column] if len(row) > fmt.timestamp_column else ""
    try:
        float(field)
    except ValueError:
        return any(c.isalpha() for c in field)  # a name, not a broken number
    return False


def _numbered_rows(reader: Iterator[List[str]], path: str) -> Iterator[Tuple[int, List[str]]]:
    """``(line, row)`` pairs; a file that is not text or not delimited text is a
    ``ValueError`` naming the file and line."""
    line_number = 0
    try:
        for line_number, row in enumerate(reader, start=1):
            yield line_number, row
    except UnicodeDecodeError as error:
        raise ValueError(
            f"{path}:{line_number + 1}: not a UTF-8 text file (byte {error.object[error.start]:#04x})"
        ) from None
    except csv.Error as error:
        raise ValueError(f"{path}:{line_number + 1}: {error}") from None


def read_event_log(
    path: str, log_format: EventLogFormat, skip_bad_rows: bool = False
) -> EventLog:
    """Reads an event log; a bad row raises ``ValueError`` naming the file and line, or is
    skipped and counted (``EventLog.skipped_rows``, with a warning past a tenth of the
    rows) with ``skip_bad_rows=True``. A file that is not text or holds no event is a
    ``ValueError`` naming it.

    Args:
        path (str): the file.
        log_format (EventLogFormat): its layout (see ``PRESETS``).
        skip_bad_rows (bool): skip rows with a missing field, an unparsable timestamp or
            an unknown action instead of failing.

    Returns:
        EventLog: the parsed events, in file order.
    """
    fmt = log_format
    action_ids = {name: i for i, name in enumerate(fmt.action_names)}
    user_ids: Dict[str, int] = {}
    item_ids: Dict[str, int] = {}
    extra_ids: Dict[str, Dict[str, int]] = {name: {} for name in fmt.categorical_columns}
    users: List[int] = []
    items: List[int] = []
    actions: List[int] = []
    times: List[float] = []
    extras: Dict[str, List[int]] = {name: [] for name in fmt.categorical_columns}
    needed = 1 + max(
        [fmt.user_column, fmt.item_column, fmt.action_column, fmt.timestamp_column]
        + list(fmt.categorical_columns.values())
    )
    skipped = blank = 0
    header = False
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f, delimiter=fmt.delimiter)
        rows = _numbered_rows(reader, path)
        for line_number, row in rows:
            if not row or row == [""]:
                blank += 1
                continue
            if line_number == 1 and _is_header(row, fmt):
                header = True
                continue
            try:
                if len(row) < needed or any(
                    not row[c].strip()
                    for c in (fmt.user_column, fmt.item_column, fmt.action_column, fmt.timestamp_column)
                ):
                    raise ValueError(f"expected {needed} non-empty fields, got {row!r}")
                try:
                    timestamp = float(row[fmt.timestamp_column])
                except ValueError:
                    raise ValueError(
                        f"unparsable timestamp {row[fmt.timestamp_column]!r}"
                    ) from None
                if not math.isfinite(timestamp):
                    raise ValueError(f"non-finite timestamp {row[fmt.timestamp_column]!r}")
                action = action_ids[fmt.parse_action(row[fmt.action_column].strip())]
            except ValueError as error:
                if skip_bad_rows:
                    skipped += 1
                    continue
                raise ValueError(f"{path}:{line_number}: {fmt.name} row: {error}") from None
            users.append(user_ids.setdefault(row[fmt.user_column], len(user_ids)))
            items.append(item_ids.setdefault(row[fmt.item_column], len(item_ids)))
            actions.append(action)
            times.append(timestamp)
            for name, column in fmt.categorical_columns.items():
                vocabulary = extra_ids[name]
                extras[name].append(vocabulary.setdefault(row[column], len(vocabulary)))
    if not users:
        what = f"all {skipped} rows were malformed and skipped" if skipped else "no events"
        raise ValueError(f"{path}: {what}")
    if skipped > 0.1 * (skipped + len(users)):
        warnings.warn(f"{path}: skipped {skipped} malformed rows of {skipped + len(users)}")
    return EventLog(
        users=np.asarray(users, dtype=np.int64),
        items=np.asarray(items, dtype=np.int64),
        actions=np.asarray(actions, dtype=np.int64),
        timestamps=np.asarray(times, dtype=np.float64),
        categoricals={name: np.asarray(v, dtype=np.int64) for name, v in extras.items()},
        num_users=len(user_ids),
        num_items=len(item_ids),
        categorical_sizes={name: len(v) for name, v in extra_ids.items()},
        format=fmt,
        skipped_rows=skipped,
        blank_rows=blank,
        header=header,
    )


DENSE_FEATURES = ("log_history_length", "log_hours_since_last_action", "hour_sin", "hour_cos")


class ActionLogRequests:
    """Sessions of an event log as requests, split by a global time cut.

    Args:
        log (EventLog): the events.
        max_seq_len (int): most recent actions in a sequence.
        session_gap_s (float): a gap longer than this starts a new session (request).
        max_request_size (Optional[int]): split longer sessions into requests of at most
            this many events (MovieLens users rate hundreds of films in one sitting);
            each part's sequence then includes the earlier parts.
        train_fraction (float): the time cut is this quantile of request times; requests
            before it are training data, the rest evaluation.
        time_cut (Optional[float]): an explicit cut (seconds), instead of the quantile.

    Example::

        import os
        data_dir = os.environ["TRANSACT_DATA_DIR"]
        log = read_event_log(f"{data_dir}/movielens_100k/ml-100k.inter", MOVIELENS)
        requests = ActionLogRequests(log, max_seq_len=50)
        batch = next(requests.batches("train", batch_size=256))
    """

    def __init__(
        self,
        log: EventLog,
        max_seq_len: int = 100,
        session_gap_s: float = 3600.0,
        max_request_size: Optional[int] = None,
        train_fraction: float = 0.8,
        time_cut: Optional[float] = None,
    ) -> None:
        self.log = log
        self.processor = RequestFeatureProcessor(max_seq_len)
        order = np.lexsort((log.timestamps, log.users))  # by user, then time
        self._order = order
        users, times = log.users[order], log.timestamps[order]
        n = len(order)
        new_user = np.ones(n, dtype=bool)
        new_user[1:] = users[1:] != users[:-1]
        new_session = new_user.copy()
        new_session[1:] |= (times[1:] - times[:-1]) > session_gap_s
        if max_request_size is not None:
            session_start = np.maximum.accumulate(np.where(new_session, np.arange(n), 0))
            new_session |= (np.arange(n) - session_start) % max_request_size == 0
        self.request_start = np.flatnonzero(new_session)  # positions in sorted order
        self.request_end = np.append(self.request_start[1:], n)
        user_start = np.maximum.accumulate(np.where(new_user, np.arange(n), 0))
        self.history_start = user_start[self.request_start]
        self.request_time = times[self.request_start]
        self.request_user = users[self.request_start]
        if time_cut is None:
            time_cut = float(np.quantile(self.request_time, train_fraction)) if n else 0.0
        self.time_cut = time_cut
        task_masks = []
        for task in log.format.tasks:
            positive = [log.format.action_names.index(a) for a in log.format.task_actions[task]]
            task_masks.append(np.isin(log.actions, positive))
        self._labels = np.stack(task_masks, axis=1).astype(np.float32)

    @property
    def tasks(self) -> List[str]:
        return list(self.log.format.tasks)

    @property
    def sparse_features(self) -> List[str]:
        return ["user_id", CANDIDATE_ITEM_FEATURE] + list(self.log.categoricals)

    def split(self, name: str) -> np.ndarray:
        """Indices of the ``"train"`` or ``"eval"`` requests."""
        if name == "train":
            return np.flatnonzero(self.request_time < self.time_cut)
        if name == "eval":
            return np.flatnonzero(self.request_time >= self.time_cut)
        raise ValueError(f"split {name!r}: expected 'train' or 'eval'")

    def _history(self, request: int) -> UserEvents:
        # The user's events before the session; only the last ~2 * max_seq_len can be
        # kept after dropping duplicates, so older ones are not even looked at.
        start = max(self.history_start[request], self.request_start[request] - 2 * self.processor.max_seq_len)
        index = self._order[start : self.request_start[request]]
        return UserEvents(self.log.timestamps[index], self.log.actions[index], self.log.items[index])

    def batch(self, requests: Sequence[int]) -> TransActBatch:
        """The examples (one per event) of whole requests."""
        actions: List[np.ndarray] = []
        items: List[np.ndarray] = []
        ages: List[np.ndarray] = []
        events: List[np.ndarray] = []
        dense: List[List[float]] = []
        for request in requests:
            a, i, t = self.processor.sequence(self._history(request), self.request_time[request])
            hours = (t[0] / 3600.0) if t.size else 0.0
            hour_of_day = (self.request_time[request] % 86400.0) / 86400.0 * 2 * math.pi
            dense.append([math.log1p(a.size), math.log1p(hours), math.sin(hour_of_day), math.cos(hour_of_day)])
            actions.append(a)
            items.append(i)
            ages.append(t)
            events.append(self._order[self.request_start[request] : self.request_end[request]])
        event_index = np.concatenate(events)
        batch_size = event_index.size
        per_request = torch.tensor([e.size for e in events], dtype=torch.long)
        index, lengths = repeat_per_candidate(torch.tensor([a.size for a in actions]), per_request)
        sequence = sequence_kjt(
            torch.from_numpy(np.concatenate(actions))[index],
            torch.from_numpy(np.concatenate(items))[index],
            torch.from_numpy(np.concatenate(ages))[index],
            lengths,
            torch.from_numpy(self.log.items[event_index]),
        )
        sparse_values = [self.log.users[event_index], self.log.items[event_index]]
        sparse_values += [v[event_index] for v in self.log.categoricals.values()]
        return TransActBatch(
            dense_features=torch.tensor(dense, dtype=torch.float32).repeat_interleave(per_request, dim=0),
            sparse_features=categorical_kjt(self.sparse_features, torch.from_numpy(np.stack(sparse_values, 1))),
            sequence_features=sequence,
            labels=torch.from_numpy(self._labels[event_index]),
            weights=torch.ones(batch_size),
            request_ids=torch.tensor(requests, dtype=torch.long).repeat_interleave(per_request),
        )

    def batches(
        self,
        split: str,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> Iterator[TransActBatch]:
        """Batches of whole requests, about ``batch_size`` examples each (a request larger
        than the batch is a batch of its own). Rank ``r`` of ``world_size`` reads every
        world_size-th request."""
        requests = self.split(split)
        if shuffle:
            requests = np.random.default_rng(seed).permutation(requests)
        requests = requests[rank::world_size]
        sizes = self.request_end[requests] - self.request_start[requests]
        pending: List[int] = []
        pending_size = 0
        for request, size in zip(requests.tolist(), sizes.tolist()):
            if pending and pending_size + size > batch_size:
                yield self.batch(pending)
                pending, pending_size = [], 0
            pending.append(request)
            pending_size += size
        if pending:
            yield self.batch(pending)


def load_preset(
    name: str, path: str, skip_bad_rows: bool = False, **request_args: object
) -> Tuple[EventLog, ActionLogRequests]:
    """Reads a preset log (``movielens`` or ``taobao``) and builds its requests."""
    if name not in PRESETS:
        raise ValueError(f"unknown event-log preset {name!r}; known: {sorted(PRESETS)}")
    log = read_event_log(path, PRESETS[name], skip_bad_rows)
    return log, ActionLogRequests(log, **request_args)  # type: ignore[arg-type]
