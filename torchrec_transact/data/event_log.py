#!/usr/bin/env python3
"""Reading a log (:class:`~torchrec_transact.data.event_format.EventFormat`) with pyarrow's
CSV reader into id arrays, keeping the raw-id vocabularies.

Every raw id (user, item, categorical value) gets a table row; row 0 of each table is the
shared out-of-vocabulary row, for ids never seen in training (serving counts them). A bad
row (missing field, unparsable time, unknown action, wrong field count) raises
``ValueError`` naming the file and line, or with ``skip_bad_rows`` is skipped and counted;
nothing is dropped without a number (:attr:`EventLog.report`).
"""

import csv
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from torchrec_transact.data.event_format import AUTO_DELIMITERS, Column, EventFormat, preset
from torchrec_transact.data.text_files import check_text, sample_lines, SEPARATOR, Transcoded
from torchrec_transact.data.vocabulary import Vocabulary

_FLOAT = r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$"
_OFFSET = r"([+-]\d\d(:?\d\d)?|Z)$"


@dataclass
class _Log:
    """What both kinds of log carry besides their rows.

    Args:
        vocabularies (Dict[str, Vocabulary]): ``user_id``, ``item`` and each categorical.
        format (EventFormat): how it was read.
        report (Dict[str, int]): rows read, skipped, blank; header rows.
    """

    vocabularies: Dict[str, Vocabulary]
    format: EventFormat
    report: Dict[str, int]

    def __len__(self) -> int:
        return int(self.users.shape[0])  # type: ignore[attr-defined]


@dataclass
class EventLog(_Log):
    """An event log: one entry per row (an action, or an impression with its actions).

    Args:
        users, items (np.ndarray): int64 [E], vocabulary rows.
        timestamps (np.ndarray): float64 [E], seconds.
        action_mask (np.ndarray): bool [E, A], the row's actions (``format.action_names``).
        categoricals (Dict[str, np.ndarray]): int64 [E] per categorical feature.
    """

    users: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    items: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    timestamps: np.ndarray = field(default_factory=lambda: np.zeros(0))
    action_mask: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), bool))
    categoricals: Dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class ImpressionLog(_Log):
    """An impression log: one request per row.

    Args:
        users (np.ndarray): int64 [R].
        timestamps (np.ndarray): float64 [R].
        candidates, candidate_lengths (np.ndarray): the shown items, jagged (int64 [N], [R]).
        clicked (np.ndarray): bool [N], the label of each shown item.
        history, history_lengths (np.ndarray): earlier engaged items, oldest first, jagged.
    """

    users: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    timestamps: np.ndarray = field(default_factory=lambda: np.zeros(0))
    candidates: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    candidate_lengths: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    clicked: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    history: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    history_lengths: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))


def _resolve(column: Column, names: List[str], path: str) -> str:
    if isinstance(column, int):
        if column >= len(names):
            raise ValueError(f"{path}: column {column} does not exist (the first line has {len(names)} fields)")
        return names[column]
    if column not in names:
        raise ValueError(f"{path}: no column {column!r} (columns: {names})")
    return column


def _is_header(fields: List[str], fmt: EventFormat) -> bool:
    if fmt.header is not None:
        return fmt.header
    if any(isinstance(c, str) for c in fmt.columns()):
        return True
    value = fields[fmt.timestamp].strip() if isinstance(fmt.timestamp, int) and fmt.timestamp < len(fields) else ""
    if not value or not any(c.isalpha() for c in value) or _is_float(value):
        return False  # a number, even a broken one (nan, 1e400), is data
    return bool(_timestamps(pa.array([value]), fmt.timestamp_unit)[1][0])


def _timestamps(values: pa.Array, unit: str) -> Tuple[np.ndarray, np.ndarray]:
    """Seconds, and the mask of values that are not times in ``unit``."""
    values = pc.utf8_trim_whitespace(values)
    if unit in ("s", "ms"):
        bad = ~pc.fill_null(pc.match_substring_regex(values, _FLOAT), False).to_numpy(zero_copy_only=False)
        numbers = np.zeros(len(values))
        if (~bad).any():
            good = pc.cast(pc.filter(values, pa.array(~bad)), pa.float64()).to_numpy()
            numbers[~bad] = good / (1000.0 if unit == "ms" else 1.0)
        bad |= ~np.isfinite(numbers)
        return np.where(bad, 0.0, numbers), bad
    if unit == "iso8601":
        return _iso8601(values)
    parsed = pc.strptime(values, format=unit, unit="s", error_is_null=True)
    bad = pc.is_null(parsed).to_numpy(zero_copy_only=False)
    seconds = pc.fill_null(pc.cast(parsed, pa.int64()), 0).to_numpy(zero_copy_only=False).astype(np.float64)
    return seconds, bad


def _iso8601(values: pa.Array) -> Tuple[np.ndarray, np.ndarray]:
    named = pc.replace_substring_regex(values, r"\s*(UTC|GMT)$", "+00:00")
    zoned = pc.if_else(pc.match_substring_regex(named, _OFFSET), named, pc.binary_join_element_wise(named, "+00:00", ""))
    try:
        parsed = pc.cast(zoned, pa.timestamp("us", tz="UTC"))
        seconds = pc.cast(parsed, pa.int64()).to_numpy(zero_copy_only=False) / 1e6
        return seconds.astype(np.float64), np.zeros(len(values), dtype=bool)
    except pa.ArrowInvalid:  # some are not ISO-8601: the slow path finds which
        seconds, bad = np.zeros(len(values)), np.zeros(len(values), dtype=bool)
        for k, text in enumerate(zoned.to_pylist()):
            try:
                seconds[k] = datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(timezone.utc).timestamp()
            except (ValueError, AttributeError):
                bad[k] = True
        return seconds, bad


@dataclass
class _Csv:
    """How to read a log's text: pyarrow's CSV options, the columns, and the rows of the
    wrong width seen so far as (line, message)."""

    path: str
    source: object
    names: List[str]
    header: bool
    read_options: "pa_csv.ReadOptions"
    parse_options: "pa_csv.ParseOptions"
    convert_options: "pa_csv.ConvertOptions"
    columns: Dict[Column, str]
    ragged: List[Tuple[int, str]]


def _csv(path: str, fmt: EventFormat, block_size: Optional[int] = None) -> _Csv:
    check_text(path)
    sample = sample_lines(path)
    if not sample:
        raise ValueError(f"{path}: no events")
    delimiter = fmt.delimiter
    if delimiter == "auto":
        # The candidate found in the most of the first lines (a broken first line decides nothing).
        counts = [sum(d in line for line in sample) for d in AUTO_DELIMITERS]
        delimiter = AUTO_DELIMITERS[counts.index(max(counts))] if max(counts) else ","
    source: object = path
    if len(delimiter) > 1:
        source, sample, delimiter = Transcoded(path, delimiter), [s.replace(delimiter, SEPARATOR) for s in sample], SEPARATOR
    fields = sample[0].split(delimiter)
    header = _is_header(fields, fmt)
    if header:
        names = [f.strip() for f in fields]
    else:  # the usual width of the first lines, so that one broken first line is one bad row
        widths = [len(row) for row in csv.reader(sample, delimiter=delimiter)] if delimiter == "," else [
            len(line.split(delimiter)) for line in sample]  # quoted fields may hold commas
        needed = 1 + max(c for c in fmt.columns() if isinstance(c, int))
        names = [f"f{k}" for k in range(max(max(set(widths), key=lambda w: (widths.count(w), w)), needed))]
    if len(set(names)) != len(names):
        names = [f"{n}#{k}" for k, n in enumerate(names)]
    ragged: List[Tuple[int, str]] = []

    def invalid(row: "pa_csv.InvalidRow") -> str:
        ragged.append((row.number or 0, f"expected {row.expected_columns} fields, got {row.actual_columns}"))
        return "skip"

    read = pa_csv.ReadOptions(use_threads=False, column_names=names, skip_rows=int(header))
    if block_size:
        read.block_size = block_size
    return _Csv(
        path, source, names, header, read,
        pa_csv.ParseOptions(
            delimiter=delimiter, quote_char='"' if delimiter == "," else False,
            invalid_row_handler=invalid, ignore_empty_lines=False,
        ),
        pa_csv.ConvertOptions(column_types={n: pa.string() for n in names}, strings_can_be_null=False),
        {c: _resolve(c, names, path) for c in fmt.columns()}, ragged,
    )


def _arrow_error(path: str, error: Exception) -> ValueError:
    message = str(error).splitlines()[0]
    return ValueError(f"{path}: {message}" + (" (not UTF-8 text?)" if "UTF8" in message else ""))


def _line_numbers(first: int, rows: int, ragged: List[Tuple[int, str]]) -> np.ndarray:
    """The line of each of ``rows`` rows read from line ``first`` on, around the ragged
    lines the reader dropped."""
    taken = np.array(sorted(n for n, _ in ragged), dtype=np.int64)
    return np.setdiff1d(np.arange(first, first + rows + len(taken)), taken)[:rows]


def _read_table(path: str, fmt: EventFormat) -> Tuple[pa.Table, Dict[Column, str], np.ndarray, List[Tuple[int, str]], bool]:
    """The file's rows as strings, the format's columns by table name, each row's line
    number, the rows of the wrong width as (line, message), and whether line 1 was a
    header."""
    c = _csv(path, fmt)
    try:
        table = pa_csv.read_csv(c.source, read_options=c.read_options, parse_options=c.parse_options,
                                convert_options=c.convert_options)
    except pa.ArrowInvalid as error:
        raise _arrow_error(path, error) from None
    return table, c.columns, _line_numbers(1 + int(c.header), table.num_rows, c.ragged), c.ragged, c.header


class _Rows:
    """Bad-row bookkeeping: the first reason per row, in line order."""

    def __init__(self, table: pa.Table, lines: np.ndarray) -> None:
        self.table, self.lines = table, lines
        self.bad = np.zeros(table.num_rows, dtype=bool)
        self.reasons: List[Tuple[np.ndarray, str]] = []

    def column(self, name: str) -> pa.Array:
        return pc.utf8_trim_whitespace(self.table.column(name).combine_chunks())

    def flag(self, mask: np.ndarray, reason: str) -> None:
        new = mask & ~self.bad
        if new.any():
            self.reasons.append((new, reason))
            self.bad |= new

    def first_error(self, ragged: List[Tuple[int, str]]) -> Optional[Tuple[int, str]]:
        found = [(int(self.lines[np.flatnonzero(m)[0]]), r) for m, r in self.reasons if m.any()]
        if ragged:
            found.append(min(ragged))
        return min(found) if found else None


def _finish(
    rows: _Rows, ragged: List[Tuple[int, str]], path: str, fmt: EventFormat, skip: bool, header: bool,
    allow_empty: bool = False,
) -> Dict[str, int]:
    """Raises for the first bad row, or counts the skipped ones; the read's report
    (``allow_empty``: a block of a stream may hold no good row)."""
    blank = np.ones(rows.table.num_rows, dtype=bool)
    for name in rows.table.column_names:
        blank &= pc.equal(rows.column(name), "").to_numpy(zero_copy_only=False)
    rows.bad &= ~blank
    rows.reasons = [(m & ~blank, r) for m, r in rows.reasons]
    error = rows.first_error(ragged)
    if error is not None and not skip:
        raise ValueError(f"{path}:{error[0]}: {fmt.name} row: {error[1]}")
    kept = int((~rows.bad & ~blank).sum())
    skipped = int(rows.bad.sum()) + len(ragged)
    if kept == 0 and not allow_empty:
        raise ValueError(f"{path}: " + (f"all {skipped} rows were malformed and skipped" if skipped else "no events"))
    if skipped > 0.1 * (skipped + kept) and not allow_empty:  # a stream warns once, at its end
        warnings.warn(f"{path}: skipped {skipped} malformed rows of {skipped + kept}")
    rows.bad |= blank
    return {"rows": kept, "skipped_malformed_rows": skipped, "blank_rows": int(blank.sum()), "header_rows": int(header)}


@dataclass
class RawEvents:
    """Rows of an event log with raw ids, before any vocabulary (a block of a stream).

    Args:
        users, items (pa.Array): raw ids (strings) [E].
        timestamps (np.ndarray): float64 [E], seconds.
        action_mask (np.ndarray): bool [E, A], the row's actions (``format.action_names``).
        categoricals (Dict[str, pa.Array]): raw values [E] per categorical feature.
    """

    users: pa.Array
    items: pa.Array
    timestamps: np.ndarray
    action_mask: np.ndarray
    categoricals: Dict[str, pa.Array]


def _parse_events(
    table: pa.Table, columns: Dict[Column, str], lines: np.ndarray, ragged: List[Tuple[int, str]], path: str,
    fmt: EventFormat, skip_bad_rows: bool, header: bool, allow_empty: bool = False,
) -> Tuple[RawEvents, Dict[str, int]]:
    """The good rows of ``table`` and the read's report; raises for the first bad row
    unless ``skip_bad_rows``."""
    rows = _Rows(table, lines)
    user, item = rows.column(columns[fmt.user]), rows.column(columns[fmt.item])
    rows.flag(pc.equal(user, "").to_numpy(zero_copy_only=False), "empty user")
    rows.flag(pc.equal(item, "").to_numpy(zero_copy_only=False), "empty item")
    times, bad_time = _timestamps(rows.column(columns[fmt.timestamp]), fmt.timestamp_unit)
    rows.flag(bad_time, f"timestamp is not a time in unit {fmt.timestamp_unit!r}")
    names = fmt.action_names
    mask = np.zeros((table.num_rows, len(names)), dtype=bool)
    if fmt.action is not None:
        raw = rows.column(columns[fmt.action.column])
        action = _map_values(raw, fmt.action.values, names)
        rows.flag(action < 0, f"action value not one of {sorted(fmt.action.values)}")
        mask[np.flatnonzero(action >= 0), action[action >= 0]] = True
    for flag_column, name in fmt.action_flags.items():
        raw = rows.column(columns[flag_column])
        on = pc.is_in(raw, pa.array(["1", "1.0", "true", "True"])).to_numpy(zero_copy_only=False)
        off = pc.is_in(raw, pa.array(["0", "0.0", "false", "False", ""])).to_numpy(zero_copy_only=False)
        rows.flag(~on & ~off, f"flag {flag_column!r} is not 0 or 1")
        mask[on, names.index(name)] = True
    report = _finish(rows, ragged, path, fmt, skip_bad_rows, header, allow_empty)
    keep = pa.array(~rows.bad)
    return RawEvents(
        users=user.filter(keep), items=item.filter(keep), timestamps=times[~rows.bad], action_mask=mask[~rows.bad],
        categoricals={f: rows.column(columns[c]).filter(keep) for f, c in fmt.categorical.items()},
    ), report


def read_event_log(path: str, fmt: EventFormat, skip_bad_rows: bool = False) -> EventLog:
    """Reads an event log (``fmt.item`` set).

    Raises:
        ValueError: the first bad row (file:line), or a file with no event.
    """
    if fmt.is_impression_log:
        raise ValueError(f"{path}: format {fmt.name!r} is an impression log; use read_event_log")
    table, columns, lines, ragged, header = _read_table(path, fmt)
    events, report = _parse_events(table, columns, lines, ragged, path, fmt, skip_bad_rows, header)
    vocabularies: Dict[str, Vocabulary] = {}
    encoded: Dict[str, np.ndarray] = {}
    for name, values in [("user_id", events.users), ("item", events.items), *events.categoricals.items()]:
        vocabularies[name], encoded[name] = Vocabulary.build(values)
    return EventLog(
        users=encoded["user_id"], items=encoded["item"], timestamps=events.timestamps, action_mask=events.action_mask,
        categoricals={f: encoded[f] for f in fmt.categorical}, vocabularies=vocabularies, format=fmt, report=report,
    )


def stream_event_log(
    path: str, fmt: EventFormat, skip_bad_rows: bool = False, block_size: int = 16 << 20
) -> Iterator[Tuple[RawEvents, Dict[str, int]]]:
    """Reads an event log block by block (about ``block_size`` bytes each), in constant
    memory: each block's good rows with raw ids, and its report. Bad rows are handled as
    :func:`read_event_log` handles them, named by file and line.

    Raises:
        ValueError: the first bad row, or a file with no event.
    """
    if fmt.is_impression_log:
        raise ValueError(f"{path}: format {fmt.name!r} is an impression log; it cannot be streamed as events")
    c = _csv(path, fmt, block_size)
    try:
        reader = pa_csv.open_csv(c.source, read_options=c.read_options, parse_options=c.parse_options,
                                 convert_options=c.convert_options)
    except pa.ArrowInvalid as error:
        raise _arrow_error(path, error) from None
    first, seen, kept, skipped = 1 + int(c.header), 0, 0, 0
    pending: List[Tuple[int, str]] = []  # rows of the wrong width not yet placed in a block
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            break
        except pa.ArrowInvalid as error:
            raise _arrow_error(path, error) from None
        # The reader parses a block ahead, so the rows of the wrong width it reported may
        # belong to the next block: take those whose lines fall in this block's range.
        pending = sorted(pending + c.ragged)
        c.ragged.clear()
        ragged: List[Tuple[int, str]] = []
        while pending and pending[0][0] < first + batch.num_rows + len(ragged):
            ragged.append(pending.pop(0))
        lines = _line_numbers(first, batch.num_rows, ragged)
        first += batch.num_rows + len(ragged)
        events, report = _parse_events(pa.Table.from_batches([batch]), c.columns, lines, ragged, path, fmt,
                                       skip_bad_rows, c.header and not seen, allow_empty=True)
        seen += 1
        kept += report["rows"]
        skipped += report["skipped_malformed_rows"]
        yield events, report
    pending = sorted(pending + c.ragged)
    if pending and not skip_bad_rows:
        raise ValueError(f"{path}:{pending[0][0]}: {fmt.name} row: {pending[0][1]}")
    skipped += len(pending)
    if pending:  # wrong-width rows after the last block's rows
        empty = pa.array([], pa.string())
        yield RawEvents(empty, empty, np.zeros(0), np.zeros((0, len(fmt.action_names)), bool),
                        {f: empty for f in fmt.categorical}), {"rows": 0, "skipped_malformed_rows": len(pending),
                                                                "blank_rows": 0, "header_rows": 0}
    if not kept:
        raise ValueError(f"{path}: " + (f"all {skipped} rows were malformed and skipped" if skipped else "no events"))
    if skipped > 0.1 * (skipped + kept):
        warnings.warn(f"{path}: skipped {skipped} malformed rows of {skipped + kept}")


def _map_values(raw: pa.Array, values: Dict[str, str], names: List[str]) -> np.ndarray:
    """Action id of each raw value, -1 where it has none; numeric keys match numerically."""
    keys = list(values)
    numeric = all(_is_float(k) for k in keys)
    if numeric:
        ok = pc.fill_null(pc.match_substring_regex(raw, _FLOAT), False).to_numpy(zero_copy_only=False)
        numbers = np.full(len(raw), np.nan)
        if ok.any():
            numbers[ok] = pc.cast(raw.filter(pa.array(ok)), pa.float64()).to_numpy()
        key_values = np.array([float(k) for k in keys])
        match = numbers[:, None] == key_values[None, :]
    else:
        text = np.asarray(raw.to_numpy(zero_copy_only=False), dtype=object)
        match = text[:, None] == np.array(keys, dtype=object)[None, :]
    ids = np.array([names.index(values[k]) for k in keys], dtype=np.int64)
    return np.where(match.any(1), ids[match.argmax(1)], -1)


def _is_float(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def read_impression_log(path: str, fmt: EventFormat, skip_bad_rows: bool = False) -> ImpressionLog:
    """Reads an impression log (``fmt.impressions`` set): one request per row."""
    if not fmt.is_impression_log:
        raise ValueError(f"{path}: format {fmt.name!r} is an event log; use read_event_log")
    assert fmt.impressions is not None
    table, columns, lines, ragged, header = _read_table(path, fmt)
    rows = _Rows(table, lines)
    user = rows.column(columns[fmt.user])
    rows.flag(pc.equal(user, "").to_numpy(zero_copy_only=False), "empty user")
    times, bad_time = _timestamps(rows.column(columns[fmt.timestamp]), fmt.timestamp_unit)
    rows.flag(bad_time, f"timestamp is not a time in unit {fmt.timestamp_unit!r}")
    shown = _split(rows.column(columns[fmt.impressions.column]), fmt.impressions.separator)
    items, labels = shown, None
    if fmt.impressions.label_separator is not None:
        parts = pc.split_pattern(shown.flatten(), fmt.impressions.label_separator, max_splits=1, reverse=True)
        pair_ok = (pc.list_value_length(parts).to_numpy(zero_copy_only=False) == 2)
        flat_items = pc.list_element(pc.if_else(pa.array(pair_ok), parts, pa.array([["", ""]] * len(parts))), 0)
        flat_labels = pc.list_element(pc.if_else(pa.array(pair_ok), parts, pa.array([["", ""]] * len(parts))), 1)
        label_ok = pair_ok & pc.is_in(flat_labels, pa.array(["0", "1"])).to_numpy(zero_copy_only=False)
        owner = pc.list_parent_indices(shown).to_numpy(zero_copy_only=False)
        bad_label = np.zeros(table.num_rows, dtype=bool)
        bad_label[owner[~label_ok]] = True
        rows.flag(bad_label, f"an impression is not item{fmt.impressions.label_separator}0/1")
        items = pa.ListArray.from_arrays(shown.offsets, flat_items)
        labels = pc.equal(flat_labels, "1").to_numpy(zero_copy_only=False)
    shown_lengths = pc.list_value_length(items).to_numpy(zero_copy_only=False)
    rows.flag(shown_lengths == 0, "no impression")
    history = _split(rows.column(columns[fmt.history.column]), fmt.history.separator) if fmt.history else None
    report = _finish(rows, ragged, path, fmt, skip_bad_rows, header)
    keep = ~rows.bad
    kept_items = items.filter(pa.array(keep))
    kept_history = history.filter(pa.array(keep)) if history is not None else pa.array([[]] * int(keep.sum()), pa.list_(pa.string()))
    vocab, flat = Vocabulary.build(pa.concat_arrays([kept_history.flatten(), kept_items.flatten()]))
    split_at = len(kept_history.flatten())
    user_vocab, users = Vocabulary.build(user.filter(pa.array(keep)))
    clicked = labels[np.repeat(keep, shown_lengths)] if labels is not None else np.zeros(len(flat) - split_at, dtype=bool)
    return ImpressionLog(
        users=users, timestamps=times[keep],
        candidates=flat[split_at:], candidate_lengths=shown_lengths[keep].astype(np.int64), clicked=clicked,
        history=flat[:split_at],
        history_lengths=pc.list_value_length(kept_history).to_numpy(zero_copy_only=False).astype(np.int64),
        vocabularies={"user_id": user_vocab, "item": vocab}, format=fmt, report=report,
    )


def _split(values: pa.Array, separator: str) -> pa.ListArray:
    """Lists of non-empty items."""
    parts = pc.split_pattern(values, separator)
    flat = parts.flatten()
    keep = pc.not_equal(flat, "")
    owner = pc.list_parent_indices(parts).to_numpy(zero_copy_only=False)[keep.to_numpy(zero_copy_only=False)]
    lengths = np.bincount(owner, minlength=len(values))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), flat.filter(keep))


def preset_for_file(name: str, path: str) -> EventFormat:
    """The preset ``name`` in the variant the file is in: KuaiRand's like/hate sample folds
    ``is_like`` and ``is_hate`` into a ``label`` column (preset ``kuairand_likehate``)."""
    if name == "kuairand":
        sample = sample_lines(path, 1) if path else []
        columns = [c.strip() for c in sample[0].split("\t")] if sample else []
        if "is_like" not in columns and "label" in columns:
            return preset("kuairand_likehate")
    return preset(name)
