#!/usr/bin/env python3
"""The request-time feature processor: a user's raw recent events -> the sequence KJT.

At serving time (and when building training examples from logs) the realtime sequence is
computed from raw events as they are at the request:

1. events at or after the request time are dropped (not yet known to the server; in logs
   they would be leakage),
2. exact duplicates (same time, action and item: double-logged events) are dropped,
3. the rest are sorted most recent first and truncated to ``max_seq_len``,
4. each action's age is the request time minus its time, in seconds.
"""

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from torchrec_transact.data.kjt import repeat_per_candidate, sequence_kjt


def integer_ids(values: object, what: str) -> np.ndarray:
    """int64 ids from integers, or from floats that hold whole numbers (JSON numbers).

    Raises:
        ValueError: naming ``what`` and the first value that is not a whole number (3.7,
            NaN, a string, a boolean), so an id is never truncated into another id.

    Example::

        integer_ids([3, 4.0], "candidate_ids")  # array([3, 4])
    """
    array = np.asarray(values)
    if array.size == 0:
        return array.astype(np.int64).reshape(array.shape)
    if array.dtype.kind in "iu":
        return array.astype(np.int64)
    if array.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            bad = ~np.isfinite(array) | (array != np.round(array)) | (np.abs(array) >= 2.0**63)
        if not bad.any():
            return array.astype(np.int64)
        first = int(np.flatnonzero(bad.reshape(-1))[0])
        raise ValueError(f"{what}[{first}] = {array.reshape(-1)[first].item()!r} is not an integer id")
    raise ValueError(f"{what} holds {array.dtype} values, expected integer ids")


@dataclass
class UserEvents:
    """A user's raw events, in any order.

    Args:
        timestamps (np.ndarray): float64 [E], seconds (e.g. unix time).
        action_types (np.ndarray): int64 [E].
        item_ids (np.ndarray): int64 [E].
    """

    timestamps: np.ndarray
    action_types: np.ndarray
    item_ids: np.ndarray

    def __post_init__(self) -> None:
        self.timestamps = np.asarray(self.timestamps, dtype=np.float64)
        self.action_types = integer_ids(self.action_types, "UserEvents.action_types")
        self.item_ids = integer_ids(self.item_ids, "UserEvents.item_ids")
        n = self.timestamps.shape[0]
        if self.action_types.shape != (n,) or self.item_ids.shape != (n,):
            raise ValueError(
                f"UserEvents: {n} timestamps, {self.action_types.shape[0]} action types and "
                f"{self.item_ids.shape[0]} item ids; they must be equal"
            )


def most_recent(
    events: UserEvents, request_time: float, max_len: int, usable: Optional[np.ndarray] = None
) -> np.ndarray:
    """Positions of the ``max_len`` most recent events before ``request_time`` (and
    ``usable``, when given), most recent first; equal times keep their order (TransAct
    V2's lifelong and impression sequences, in training and serving alike).

    Example::

        events = UserEvents(np.array([5.0, 9.0, 7.0, 12.0]), np.zeros(4, dtype=np.int64), np.arange(4))
        most_recent(events, request_time=10.0, max_len=2)  # array([1, 2])
    """
    before = events.timestamps < request_time
    index = np.flatnonzero(before if usable is None else before & usable)
    return index[np.argsort(-events.timestamps[index], kind="stable")][:max_len]


class RequestFeatureProcessor:
    """Builds TransAct's input from raw events and a request time.

    Args:
        max_seq_len (int): most recent actions kept.
        keys (Tuple[str, str, str]): action, item and candidate KJT keys.

    Example::

        processor = RequestFeatureProcessor(max_seq_len=2)
        events = UserEvents(
            timestamps=[100.0, 50.0, 100.0, 300.0], action_types=[1, 0, 1, 2],
            item_ids=[7, 8, 7, 9],
        )
        actions, items, ages = processor.sequence(events, request_time=200.0)
        # duplicate (100, 1, 7) and the future event at 300 are gone:
        # actions [1, 0], items [7, 8], ages [100.0, 150.0]
    """

    def __init__(
        self,
        max_seq_len: int = 100,
        keys: Tuple[str, str, str] = ("action_type", "item_id", "candidate_item_id"),
    ) -> None:
        self.max_seq_len = max_seq_len
        self.keys = keys

    def sequence(
        self, events: UserEvents, request_time: float
    ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The kept events, most recent first.

        Returns:
            Tuple[np.ndarray, np.ndarray, np.ndarray]: action types, item ids and ages (s).
        """
        before = events.timestamps < request_time
        times = events.timestamps[before]
        actions = events.action_types[before]
        items = events.item_ids[before]
        if times.size:
            # Sort by time descending, ties by action then item, and drop exact repeats.
            order = np.lexsort((items, actions, -times))
            times, actions, items = times[order], actions[order], items[order]
            repeat = np.zeros(times.size, dtype=bool)
            repeat[1:] = (
                (times[1:] == times[:-1])
                & (actions[1:] == actions[:-1])
                & (items[1:] == items[:-1])
            )
            keep = ~repeat
            times, actions, items = times[keep], actions[keep], items[keep]
        n = min(times.size, self.max_seq_len)
        return actions[:n], items[:n], (request_time - times[:n]).astype(np.float32)

    def __call__(
        self,
        requests: Sequence[Tuple[UserEvents, float, Sequence[int]]],
    ) -> KeyedJaggedTensor:
        """One example per candidate: ``(events, request_time, candidate_ids)`` per request.

        Returns:
            KeyedJaggedTensor: the TransAct input, each request's sequence repeated for
            each of its candidates.
        """
        sequences = [self.sequence(events, request_time) for events, request_time, _ in requests]
        candidates = [integer_ids(c, "candidate_ids").reshape(-1) for _, _, c in requests]
        index, lengths = repeat_per_candidate(
            torch.tensor([a.size for a, _, _ in sequences], dtype=torch.long),
            torch.tensor([c.size for c in candidates], dtype=torch.long),
        )

        def flat(column: int, dtype: type) -> torch.Tensor:
            parts = [s[column] for s in sequences]
            return torch.from_numpy(np.concatenate(parts) if parts else np.zeros(0, dtype))[index]

        return sequence_kjt(
            flat(0, np.int64), flat(1, np.int64), flat(2, np.float32), lengths,
            torch.from_numpy(np.concatenate(candidates) if candidates else np.zeros(0, np.int64)),
            keys=self.keys,
        )
