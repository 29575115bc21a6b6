#!/usr/bin/env python3
"""Requests in a log's own ids: raw user, item and categorical ids and action names, as the
model was trained on them (the vocabularies saved with the checkpoint,
``vocabulary.json``).

A raw id the training log never had is not another item: candidates and categorical
features take the table's shared out-of-vocabulary row 0 and are counted
(``ScoringResult.unknown_ids``). Events with an unknown action name are dropped and
counted (``ScoringResult.dropped_events``); so are events with an unknown item, unless
the model was trained with rare ids on row 0 (``min_id_count`` > 1), whose sequences held
such tokens: then the event keeps its token on row 0. Without ``dense``, the request's
dense features are computed as the log sources compute them (``DENSE_FEATURES``).
"""

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from torchrec_transact.data.batch import CANDIDATE_ITEM_FEATURE
from torchrec_transact.data.vocabulary import Vocabulary
from torchrec_transact.data.features import UserEvents
from torchrec_transact.serving.request import ArrayLike, RequestError, ScoringRequest


@dataclass
class RawRequest:
    """One user's request in raw ids.

    Args:
        event_times (Sequence[float]): the user's events, seconds, any order.
        event_actions (Sequence[str]): their action names (``vocabulary.json``'s actions).
        event_items (Sequence[object]): their raw item ids.
        request_time (float): seconds, on the events' clock.
        candidates (Sequence[object]): raw item ids to score.
        dense (Optional[ArrayLike]): float [N, W] or [W]; None: computed from the events
            and the request time, as the log sources do.
        sparse (Mapping[str, object]): raw ids per categorical feature (one per request
            or one per candidate); the candidate's own item is filled in.
    """

    event_times: Sequence[float]
    event_actions: Sequence[str]
    event_items: Sequence[object]
    request_time: float
    candidates: Sequence[object]
    dense: Optional[ArrayLike] = None
    sparse: Mapping[str, object] = field(default_factory=dict)


class RawIdTranslator:
    """Raw ids -> table rows, by the vocabularies a log-trained model was saved with.

    Args:
        vocabularies (Dict[str, List[str]]): per feature, the raw id of each row from
            row 1 (``vocabulary.json``'s ``features``).
        action_names (Sequence[str]): the action types in id order.
        unknown_items_as_tokens (bool): keep events with an unknown item as row-0 tokens
            (a model trained with ``min_id_count`` > 1); else drop them.

    Example::

        translator = RawIdTranslator({"candidate_item": ["a", "b"], "user_id": ["u1"]}, ["click"])
        request, unknown = translator.translate(RawRequest(
            event_times=[1.0], event_actions=["click"], event_items=["b"], request_time=5.0,
            candidates=["a", "zz"], dense=[0.0], sparse={"user_id": "u1"},
        ))
        request.candidate_ids, unknown  # [1 0], 1
    """

    def __init__(
        self, vocabularies: Dict[str, List[str]], action_names: Sequence[str], unknown_items_as_tokens: bool = False
    ) -> None:
        self.unknown_items_as_tokens = unknown_items_as_tokens
        if CANDIDATE_ITEM_FEATURE not in vocabularies:
            raise ValueError(f"the vocabularies have no {CANDIDATE_ITEM_FEATURE!r} (items)")
        self.vocabularies = {name: Vocabulary(raw) for name, raw in vocabularies.items()}
        self.actions = {name: k for k, name in enumerate(action_names)}

    def translate(self, raw: RawRequest) -> Tuple[ScoringRequest, int]:
        """The request in table rows, and how many raw ids took the unknown row."""
        items = self.vocabularies[CANDIDATE_ITEM_FEATURE]
        candidates = items.lookup(np.asarray(raw.candidates, dtype=object).reshape(-1))
        unknown = int((candidates == Vocabulary.OOV).sum())
        sizes = {len(raw.event_times), len(raw.event_actions), len(raw.event_items)}
        if len(sizes) != 1:
            raise RequestError(f"events: {len(raw.event_times)} times, {len(raw.event_actions)} actions and "
                               f"{len(raw.event_items)} items; they must be equal")
        event_items = items.lookup(raw.event_items)
        event_actions = np.array([self.actions.get(str(a), -1) for a in raw.event_actions], dtype=np.int64)
        # Unknown items and actions: ids outside the tables, which the request checks drop and count.
        if not self.unknown_items_as_tokens:
            event_items = np.where(event_items == Vocabulary.OOV, -1, event_items)
        sparse: Dict[str, object] = {}
        for name, values in raw.sparse.items():
            vocabulary = self.vocabularies.get(name)
            if name == CANDIDATE_ITEM_FEATURE or vocabulary is None:
                sparse[name] = values
                continue
            rows = vocabulary.lookup(np.asarray(values, dtype=object).reshape(-1))
            unknown += int((rows == Vocabulary.OOV).sum())
            sparse[name] = rows
        request = ScoringRequest(
            events=UserEvents(np.asarray(raw.event_times, dtype=np.float64), event_actions, event_items),
            request_time=raw.request_time,
            candidate_ids=candidates,
            dense=np.zeros(1, dtype=np.float32) if raw.dense is None else raw.dense,
            sparse=sparse,
        )
        return request, unknown
