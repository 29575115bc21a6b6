#!/usr/bin/env python3
"""How to read a log: the event format, a JSON object a user writes for their own file,
and the presets, which are formats like any user's.

Two kinds of log:

* an **event log**: one row per user action (or per impression with action flags); a
  request is a user's session (see :mod:`torchrec_transact.data.action_logs`);
* an **impression log**: one row per request, with the shown items and their labels in one
  column and the user's earlier engaged items in another (MIND's ``behaviors.tsv``).

Example of an event format (``clicks.json``)::

    {"name": "clicks", "delimiter": ",", "header": true,
     "user": "user", "item": "item", "timestamp": "ts", "timestamp_unit": "ms",
     "action": {"column": "event", "values": {"click": "click", "hide": "hide"}},
     "action_flags": {"liked": "like"},
     "tasks": {"click": ["click", "like"], "hide": ["hide"]},
     "categorical": {"candidate_category": "category"}}

Columns are header names (with ``"header": true``) or 0-based indices (always allowed).
``timestamp_unit``: ``s``, ``ms``, ``iso8601`` (a zone suffix such as ``Z``, ``+02:00`` or
`` UTC`` is honoured; none means UTC) or a ``strptime`` pattern (``%m/%d/%Y %I:%M:%S %p``).
``action.values`` maps raw values to action names (numeric keys match numerically, so
``"4"`` matches ``4.0``); each ``action_flags`` column equal to 1 adds its action at the
same time, so one row can carry several actions (a KuaiRand row: click, long view, like).
A row with no action at all is an impression: a candidate with all labels 0, and no token
in anyone's sequence. ``delimiter: "auto"`` picks the one of ``::``, tab, ``,``, ``;``,
``|`` found in the most of the first lines; ``header: null`` tells a header by content (a
format that names a column has one; otherwise a first line whose timestamp field is a
name, not a number, is one).
"""

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Union

Column = Union[str, int]
TIMESTAMP_UNITS = ("s", "ms", "iso8601")
AUTO_DELIMITERS = ("::", "\t", ",", ";", "|")


@dataclass
class ActionColumn:
    """A column whose raw values name the row's action."""

    column: Column
    values: Dict[str, str]


@dataclass
class ListColumn:
    """A column holding a list of items (impression logs).

    Args:
        column (Column): the column.
        separator (str): between items.
        label_separator (Optional[str]): splits ``item<sep>label`` (MIND: ``N123-1``).
    """

    column: Column
    separator: str = " "
    label_separator: Optional[str] = None


@dataclass
class EventFormat:
    """A log's layout; :meth:`from_json` reads it from the JSON object described above.

    Impression logs set ``impressions`` (and usually ``history``) instead of ``item``:
    every row is one request whose candidates are the impression list; a positive label
    is the action ``impression_action``; the history items are actions
    ``history_action``, oldest first, without times: the most recent gets the age
    ``history_age_s`` and each older one a second more.
    """

    name: str
    user: Column
    timestamp: Column
    tasks: Dict[str, List[str]]
    item: Optional[Column] = None
    delimiter: str = ","
    header: Optional[bool] = None
    timestamp_unit: str = "s"
    action: Optional[ActionColumn] = None
    action_flags: Dict[Column, str] = field(default_factory=dict)
    categorical: Dict[str, Column] = field(default_factory=dict)
    impressions: Optional[ListColumn] = None
    impression_action: str = "click"
    history: Optional[ListColumn] = None
    history_action: str = "click"
    history_age_s: float = 7 * 86400.0

    @property
    def action_names(self) -> List[str]:
        """Every action, in id order: the action column's, the flags', then impression and
        history actions."""
        names: List[str] = []
        candidates = list(self.action.values.values()) if self.action else []
        candidates += list(self.action_flags.values())
        if self.impressions is not None:
            candidates += [self.impression_action, self.history_action]
        for name in candidates:
            if name not in names:
                names.append(name)
        return names

    @property
    def is_impression_log(self) -> bool:
        return self.impressions is not None

    def __post_init__(self) -> None:
        where = f"event format {self.name!r}"
        if (self.item is None) == (self.impressions is None):
            raise ValueError(f"{where}: give either 'item' (an event log) or 'impressions' (an impression log)")
        if not self.action_names:
            raise ValueError(f"{where}: no action: give 'action', 'action_flags' or 'impressions'")
        if self.timestamp_unit not in TIMESTAMP_UNITS and "%" not in self.timestamp_unit:
            raise ValueError(
                f"{where}: timestamp_unit {self.timestamp_unit!r}: expected one of {list(TIMESTAMP_UNITS)} "
                "or a strptime pattern"
            )
        if not self.delimiter:
            raise ValueError(f"{where}: empty delimiter")
        if not self.tasks:
            raise ValueError(f"{where}: no tasks")
        for task, actions in self.tasks.items():
            unknown = [a for a in actions if a not in self.action_names]
            if unknown:
                raise ValueError(f"{where}: task {task!r} names unknown actions {unknown} (known: {self.action_names})")
        for column in self.columns():
            if isinstance(column, str) and self.header is False:
                raise ValueError(f"{where}: column {column!r} is a name but the file has no header; use an index")

    def columns(self) -> List[Column]:
        """Every column the format reads."""
        listed = [self.user, self.timestamp, self.item, *self.action_flags, *self.categorical.values()]
        listed += [self.action.column] if self.action else []
        listed += [c.column for c in (self.impressions, self.history) if c is not None]
        return [c for c in listed if c is not None]

    @classmethod
    def from_json(cls, spec: Dict[str, Any], source: str = "event format") -> "EventFormat":
        """Builds a format from its JSON object; a wrong key or value is a ``ValueError``
        naming it."""
        if not isinstance(spec, dict):
            raise ValueError(f"{source}: expected a JSON object")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(spec) - names)
        if unknown:
            raise ValueError(f"{source}: unknown keys {unknown} (known: {sorted(names)})")
        values = dict(spec)
        values.setdefault("name", source)
        try:
            if values.get("action") is not None:
                values["action"] = ActionColumn(**values["action"])
                values["action"].values = {str(k): v for k, v in values["action"].values.items()}
            for key in ("impressions", "history"):
                if values.get(key) is not None:
                    values[key] = ListColumn(**values[key])
            values["action_flags"] = {_column(k): v for k, v in values.get("action_flags", {}).items()}
            return cls(**values)
        except TypeError as error:
            raise ValueError(f"{source}: {error}") from None


def _column(key: Column) -> Column:
    """JSON object keys are strings: "3" names column 3."""
    return int(key) if isinstance(key, str) and key.isdigit() else key


def load_event_format(path: str) -> EventFormat:
    """Reads an event format JSON file (errors name the file and the key)."""
    try:
        with open(path) as f:
            spec = json.load(f)
    except (OSError, ValueError) as error:
        raise ValueError(f"--event-format {path}: {error}") from None
    return EventFormat.from_json(spec, source=path)


# MovieLens ratings, whole or half stars: 0.5-2 dislike (hide), 2.5-3.5 neutral, 4-5 like (save).
_RATINGS = {f"{r / 2:g}": ("dislike" if r <= 4 else "neutral" if r <= 7 else "like") for r in range(1, 11)}

PRESETS: Dict[str, Dict[str, Any]] = {
    # Every official ratings layout: 100K u.data (tab, no header), RecBole .inter (tab,
    # typed header), 1M/10M ratings.dat (::), latest/20M/25M/32M ratings.csv (header).
    "movielens": {
        "delimiter": "auto", "header": None, "user": 0, "item": 1, "timestamp": 3,
        "action": {"column": 2, "values": _RATINGS},
        "tasks": {"save": ["like"], "hide": ["dislike"]},
    },
    # Taobao UserBehavior: user, item, category, behavior, unix time; no header.
    "taobao": {
        "delimiter": ",", "header": False, "user": 0, "item": 1, "timestamp": 4,
        "action": {"column": 3, "values": {"pv": "pv", "cart": "cart", "fav": "fav", "buy": "buy"}},
        "tasks": {"cart": ["cart"], "fav": ["fav"], "buy": ["buy"]},
        "categorical": {"candidate_category": 2},
    },
    # KuaiRand's official log columns; a row is an impression with its action flags.
    "kuairand": {
        "delimiter": "\t", "header": True, "user": "user_id", "item": "video_id", "timestamp": "time_ms",
        "timestamp_unit": "ms",
        "action_flags": {"is_click": "click", "long_view": "long_view", "is_like": "like", "is_hate": "hate",
                         "is_comment": "comment", "is_follow": "follow", "is_forward": "forward"},
        "tasks": {"like": ["like"], "hate": ["hate"], "click": ["click"], "long_view": ["long_view"]},
    },
    # MIND behaviors.tsv: impression id, user, time, history (clicked ids, oldest first),
    # impressions ("N123-1": shown, clicked).
    "mind": {
        "delimiter": "\t", "header": False, "user": 1, "timestamp": 2,
        "timestamp_unit": "%m/%d/%Y %I:%M:%S %p",
        "impressions": {"column": 4, "separator": " ", "label_separator": "-"},
        "history": {"column": 3, "separator": " "},
        "tasks": {"click": ["click"]},
    },
}


# The published KuaiRand like/hate sample: the like and hate flags folded into `label`
# (1 = like, 0 = hate).
PRESETS["kuairand_likehate"] = {
    **PRESETS["kuairand"],
    "action": {"column": "label", "values": {"1": "like", "0": "hate"}},
    "action_flags": {k: v for k, v in PRESETS["kuairand"]["action_flags"].items() if k not in ("is_like", "is_hate")},
}


def preset(name: str) -> EventFormat:
    """A preset's format."""
    if name not in PRESETS:
        raise ValueError(f"unknown event-log preset {name!r}; known: {sorted(PRESETS)}")
    return EventFormat.from_json({"name": name, **PRESETS[name]}, source=f"preset {name!r}")
