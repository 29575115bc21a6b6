#!/usr/bin/env python3
"""Event logs larger than memory -> Parquet shards of requests with their sequences.

    transact-prepare --data taobao --data-path UserBehavior.csv \\
        --output-dir shards/ --shards 64 --workers 8
    transact-train --data prepared --data-path shards/

(``transact-prepare`` is ``python -m torchrec_transact.data.prepare``.) Three steps, each streamed or one shard at a time, so memory holds one block of the log or
one shard, never the log:

1. ``partition``: each log file is read in blocks (pyarrow's streaming CSV reader); each
   row goes to bucket ``crc32(raw user id) % shards`` (``rows/bucket-K/part-F.parquet``).
   A user's rows all land in one bucket, whichever process or machine reads them.
2. ``build``: each bucket's rows become requests exactly as ``--data <log>`` builds them
   in memory (:class:`~torchrec_transact.data.action_logs.SessionRequests`: sessions,
   one candidate per item, the sequence of earlier actions) and are written as
   ``shard-K.parquet``, one row per request, ids raw (so shards built apart agree).
3. ``finish``: the time cuts (quantiles of every request time, as in memory) and the
   raw-id vocabularies of all shards: ``meta.json`` and ``vocabulary.json``.

``--step`` runs one step and ``--part I/N`` one share of it (files, then buckets, ``I``
of ``N``), so steps 1 and 2 can run on several machines over a shared folder; by default
this process runs all three, ``--workers`` processes at a time. Event logs only (an
impression log such as MIND's is one request per row already; ``--data mind`` reads it).
"""

import argparse
import glob
import json
import multiprocessing
import os
import shutil
import sys
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from torchrec_transact.data.batch import CANDIDATE_ITEM_FEATURE
from torchrec_transact.data.event_format import EventFormat, load_event_format
from torchrec_transact.data.event_log import EventLog, preset_for_file, stream_event_log
from torchrec_transact.data.vocabulary import Vocabulary

META_JSON = "meta.json"
VOCABULARY_JSON = "vocabulary.json"
PREPARED_VERSION = 1
# A request id is (shard << REQUEST_BITS) | position in the shard: unique across shards.
REQUEST_BITS = 40
# Settings a prepared folder fixes; training with other values must prepare again.
FIXED = ("session_gap_s", "max_request_size", "train_fraction", "valid_fraction", "min_id_count")


@dataclass
class PrepareOptions:
    """What the prepare step builds (the request settings are ``TrainConfig``'s).

    Args:
        data (str): a log preset (``taobao``, ``kuairand``, ``movielens``) or ``events``.
        paths (List[str]): the log files.
        output_dir (str): the prepared folder.
        event_format (Optional[str]): ``events``: the format JSON.
        shards (int): number of shards (users hashed into them).
        max_seq_len (int): most recent actions kept per sequence (training may keep fewer).
        session_gap_s, max_request_size, train_fraction, valid_fraction, min_id_count:
            as the training flags of the same names.
        skip_bad_rows (bool): skip malformed rows (counted) instead of failing.
        block_size (int): bytes of text parsed at a time.
    """

    data: str
    paths: List[str]
    output_dir: str
    event_format: Optional[str] = None
    shards: int = 16
    max_seq_len: int = 100
    session_gap_s: float = 3600.0
    max_request_size: Optional[int] = 10
    train_fraction: float = 0.7
    valid_fraction: float = 0.1
    min_id_count: int = 1
    skip_bad_rows: bool = False
    block_size: int = 16 << 20

    def __post_init__(self) -> None:
        if self.shards < 1 or self.shards >= 1 << (63 - REQUEST_BITS):
            raise ValueError(f"--shards {self.shards}: expected 1 to {(1 << (63 - REQUEST_BITS)) - 1}")
        if not self.paths:
            raise ValueError("--data-path: no log file given")
        checks = [
            (self.max_seq_len >= 1, f"--max-seq-len {self.max_seq_len}: must be >= 1"),
            (self.session_gap_s >= 0, f"--session-gap-s {self.session_gap_s}: must be >= 0"),
            (self.max_request_size is None or self.max_request_size >= 1,
             f"--max-request-size {self.max_request_size}: must be >= 1"),
            (self.min_id_count >= 1, f"--min-id-count {self.min_id_count}: must be >= 1"),
            (0 < self.train_fraction and self.valid_fraction >= 0 and self.train_fraction + self.valid_fraction < 1,
             f"--train-fraction {self.train_fraction}, --valid-fraction {self.valid_fraction}: need 0 < train, "
             "0 <= valid and train + valid < 1 (the rest evaluates)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    def format(self) -> EventFormat:
        if self.data == "events":
            if not self.event_format:
                raise ValueError("--data events needs --event-format FORMAT.json")
            fmt = load_event_format(self.event_format)
        else:
            fmt = preset_for_file(self.data, self.paths[0])
        if fmt.is_impression_log:
            raise ValueError(
                f"--data {self.data}: {fmt.name} is an impression log (one request per row); "
                "train on it directly, the prepare step is for event logs"
            )
        if len(fmt.action_names) > 63:
            raise ValueError(f"{fmt.name}: {len(fmt.action_names)} action types; at most 63 can be prepared")
        return fmt


def bucket_of(users: pa.Array, shards: int) -> np.ndarray:
    """``crc32(raw id) % shards`` of each id: the same on every machine and Python
    (hashed once per distinct id of the block)."""
    encoded = pc.dictionary_encode(users)
    distinct = encoded.dictionary.to_pylist()
    buckets = np.array([zlib.crc32(u.encode()) % shards for u in distinct], dtype=np.int64)
    return buckets[encoded.indices.to_numpy(zero_copy_only=False)] if len(distinct) else np.zeros(0, np.int64)


def _bucket_dir(output_dir: str, bucket: int) -> str:
    return os.path.join(output_dir, "rows", f"bucket-{bucket:05d}")


def partition(options: PrepareOptions, file_index: int) -> Dict[str, int]:
    """Step 1 for one log file: its rows, streamed, into the buckets of their users.
    Returns the reader's counts."""
    fmt, path = options.format(), options.paths[file_index]
    writers: Dict[int, pq.ParquetWriter] = {}
    report: Dict[str, int] = {}
    offset = 0
    try:
        for events, block_report in stream_event_log(path, fmt, options.skip_bad_rows, options.block_size):
            for key, value in block_report.items():
                report[key] = report.get(key, 0) + value
            n = len(events.users)
            bits = (events.action_mask.astype(np.int64) << np.arange(events.action_mask.shape[1])).sum(1)
            table = pa.table({
                "user": events.users, "item": events.items, "time": events.timestamps, "actions": bits,
                # The row's place in the log: ties in time keep the file's order, as in memory.
                "order": (file_index << REQUEST_BITS) + offset + np.arange(n, dtype=np.int64),
                **{f"categorical:{name}": values for name, values in events.categoricals.items()},
            })
            offset += n
            buckets = bucket_of(events.users, options.shards)
            for bucket in np.unique(buckets).tolist():
                if bucket not in writers:
                    os.makedirs(_bucket_dir(options.output_dir, bucket), exist_ok=True)
                    name = os.path.join(_bucket_dir(options.output_dir, bucket), f"part-{file_index:05d}.parquet")
                    writers[bucket] = pq.ParquetWriter(name, table.schema)
                writers[bucket].write_table(table.filter(pa.array(buckets == bucket)))
    finally:
        for writer in writers.values():
            writer.close()
    return report


def _raw(vocabulary: Vocabulary, rows: np.ndarray) -> pa.Array:
    """Raw ids of vocabulary rows (row 0 has none: never asked here); 64-bit offsets, as a
    shard's sequences can hold more than 2 GB of id text."""
    return pa.array(vocabulary.raw_ids, pa.large_string()).take(pa.array(rows - 1))


def _lists(values: pa.Array, lengths: np.ndarray) -> pa.LargeListArray:
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return pa.LargeListArray.from_arrays(pa.array(offsets), values)


def build(options: PrepareOptions, bucket: int) -> int:
    """Step 2 for one bucket: its users' requests with their sequences, ``shard-K.parquet``
    (empty buckets write an empty shard). Returns the number of requests."""
    from torchrec_transact.data.action_logs import SessionRequests

    fmt = options.format()
    parts = sorted(glob.glob(os.path.join(_bucket_dir(options.output_dir, bucket), "*.parquet")))
    schema = _shard_schema(fmt)
    target = os.path.join(options.output_dir, f"shard-{bucket:05d}.parquet")
    if not os.path.isdir(os.path.join(options.output_dir, "rows")):
        raise ValueError(f"{options.output_dir}: no partitioned rows; run --step partition first")
    if not parts:  # no user hashed here
        pq.write_table(schema.empty_table(), target)
        return 0
    rows = pa.concat_tables([pq.read_table(p) for p in parts]).sort_by("order")
    bits = rows.column("actions").to_numpy()
    vocabularies: Dict[str, Vocabulary] = {}
    encoded: Dict[str, np.ndarray] = {}
    for name, column in [("user_id", "user"), ("item", "item")] + [(c, f"categorical:{c}") for c in fmt.categorical]:
        vocabularies[name], encoded[name] = Vocabulary.build(rows.column(column).combine_chunks())
    log = EventLog(
        users=encoded["user_id"], items=encoded["item"], timestamps=rows.column("time").to_numpy(),
        action_mask=(bits[:, None] >> np.arange(len(fmt.action_names))) & 1 == 1,
        categoricals={c: encoded[c] for c in fmt.categorical}, vocabularies=vocabularies, format=fmt, report={},
    )
    requests = SessionRequests(log, options.max_seq_len, options.session_gap_s, options.max_request_size)
    every = np.arange(requests.request_time.size)
    sequences = requests.sequences(every)
    items, labels, categoricals = requests.candidates(every)
    seq_lengths = np.array([s[0].size for s in sequences], dtype=np.int64)

    def flat(column: int, dtype: type) -> np.ndarray:
        return np.concatenate([s[column] for s in sequences]).astype(dtype) if sequences else np.zeros(0, dtype)

    columns: Dict[str, pa.Array] = {
        "request_id": pa.array((bucket << REQUEST_BITS) + every),
        "request_time": pa.array(requests.request_time),
        "user": _raw(vocabularies["user_id"], requests.request_user),
        "candidate_item": _lists(_raw(vocabularies["item"], items), requests.request_size),
        # Log rows merged into each candidate: --min-id-count counts rows, as in memory.
        "candidate_rows": _lists(pa.array(requests.candidate_rows.astype(np.int32)), requests.request_size),
    }
    for t, task in enumerate(fmt.tasks):
        columns[f"label:{task}"] = _lists(pa.array(labels[:, t]), requests.request_size)
    for name, values in zip(fmt.categorical, categoricals):
        columns[f"candidate:{name}"] = _lists(_raw(vocabularies[name], values), requests.request_size)
    columns["sequence_action"] = _lists(pa.array(flat(0, np.int32)), seq_lengths)
    columns["sequence_item"] = _lists(_raw(vocabularies["item"], flat(1, np.int64)), seq_lengths)
    columns["sequence_age"] = _lists(pa.array(flat(2, np.float32)), seq_lengths)
    pq.write_table(pa.table(columns, schema=schema), target)
    return int(every.size)


def _shard_schema(fmt: EventFormat) -> pa.Schema:
    strings, flags = pa.large_list(pa.large_string()), pa.large_list(pa.bool_())
    return pa.schema(
        [("request_id", pa.int64()), ("request_time", pa.float64()), ("user", pa.large_string()),
         ("candidate_item", strings), ("candidate_rows", pa.large_list(pa.int32()))]
        + [(f"label:{t}", flags) for t in fmt.tasks]
        + [(f"candidate:{c}", strings) for c in fmt.categorical]
        + [("sequence_action", pa.large_list(pa.int32())), ("sequence_item", strings),
           ("sequence_age", pa.large_list(pa.float32()))]
    )


def shard_paths(output_dir: str) -> List[str]:
    return sorted(glob.glob(os.path.join(output_dir, "shard-*.parquet")))


def _first_seen(arrays: Sequence[pa.Array]) -> pa.Array:
    return pc.unique(pa.chunked_array(arrays, pa.large_string())) if arrays else pa.array([], pa.large_string())


def _reports(output_dir: str) -> Dict[str, int]:
    """The partition parts' counts, summed: every part ``I`` of one ``--part I/N`` split."""
    names = glob.glob(os.path.join(output_dir, "rows-report-*-of-*.json"))
    parts = {tuple(int(x) for x in os.path.basename(n)[len("rows-report-"):-len(".json")].split("-of-")): n for n in names}
    counts = {n for _, n in parts}
    if len(counts) != 1 or {i for i, _ in parts} != set(range(next(iter(counts)))):
        found = sorted(f"{i}/{n}" for i, n in parts)
        raise ValueError(f"{output_dir}: partition reports {found}: need every part of one --part I/N split "
                         "(a part missing, or a stale run: remove its rows-report file)")
    report: Dict[str, int] = {}
    for name in parts.values():
        with open(name) as f:
            for key, value in json.load(f).items():
                report[key] = report.get(key, 0) + value
    return report


def _count_ids(ids: pa.Array, rows: np.ndarray) -> pa.Table:
    return pa.table({"id": ids, "n": pa.array(rows, pa.int64())}).group_by("id").aggregate([("n", "sum")])


def finish(options: PrepareOptions) -> Dict[str, Any]:
    """Step 3: the time cuts and vocabularies of every shard (``meta.json``,
    ``vocabulary.json``). Reads the shards' id columns one shard at a time."""
    fmt = options.format()
    report = _reports(options.output_dir)
    paths = shard_paths(options.output_dir)
    if len(paths) != options.shards:
        raise ValueError(f"{options.output_dir}: {len(paths)} of {options.shards} shards built; run --step build first")
    times = [pq.read_table(p, columns=["request_time"]).column(0).to_numpy() for p in paths]
    every = np.concatenate(times)
    if every.size == 0:
        raise ValueError(f"{options.output_dir}: the log holds no request")
    time_cut = float(np.quantile(every, options.train_fraction))
    valid_cut = float(np.quantile(every, options.train_fraction + options.valid_fraction)) if options.valid_fraction else time_cut

    def split_counts(t: np.ndarray) -> Dict[str, int]:
        return {"train": int((t < time_cut).sum()), "valid": int(((t >= time_cut) & (t < valid_cut)).sum()),
                "eval": int((t >= valid_cut).sum())}

    features = {"user_id": "user", CANDIDATE_ITEM_FEATURE: "candidate_item",
                **{c: f"candidate:{c}" for c in fmt.categorical}}
    seen: Dict[str, List[pa.Array]] = {f: [] for f in features}
    counts: Dict[str, List[pa.Table]] = {f: [] for f in features}
    for path, t in zip(paths, times):
        shard = pq.read_table(path, columns=["candidate_rows", *features.values()])
        rows = shard.column("candidate_rows").combine_chunks()
        sizes = pc.list_value_length(rows).to_numpy(zero_copy_only=False)
        train = t < time_cut
        candidate_train = np.repeat(train, sizes)
        flat_rows = rows.flatten().to_numpy(zero_copy_only=False)
        for feature, column in features.items():
            values = shard.column(column).combine_chunks()
            if feature == "user_id":  # one per request; it counts every log row of the request
                seen[feature].append(pc.unique(values))
                if options.min_id_count > 1 and sizes.size:
                    per_request = np.add.reduceat(flat_rows, np.concatenate([[0], np.cumsum(sizes)[:-1]]))
                    counts[feature].append(_count_ids(values.filter(pa.array(train)), per_request[train]))
            else:  # one per candidate; each counts its log rows, as in memory
                flat = values.flatten()
                seen[feature].append(pc.unique(flat))
                if options.min_id_count > 1:
                    counts[feature].append(_count_ids(flat.filter(pa.array(candidate_train)), flat_rows[candidate_train]))
    vocabularies: Dict[str, List[str]] = {}
    for feature in features:
        ids = _first_seen(seen[feature])
        if options.min_id_count > 1:
            total = pa.concat_tables(counts[feature]).group_by("id").aggregate([("n_sum", "sum")])
            frequent = total.filter(pc.greater_equal(total.column("n_sum_sum"), options.min_id_count)).column("id")
            ids = ids.filter(pc.is_in(ids, frequent.combine_chunks()))
        vocabularies[feature] = ids.to_pylist()
    meta = {
        "version": PREPARED_VERSION, "format": fmt.name, "tasks": list(fmt.tasks), "action_names": list(fmt.action_names),
        "categorical": list(fmt.categorical), "shards": [os.path.basename(p) for p in paths],
        "time_cut": time_cut, "valid_cut": valid_cut, "requests": split_counts(every),
        "shard_requests": [split_counts(t) for t in times],
        "settings": {k: getattr(options, k) for k in FIXED + ("max_seq_len",)}, "report": report,
        "source": {"data": options.data, "paths": options.paths, "event_format": options.event_format},
    }
    with open(os.path.join(options.output_dir, VOCABULARY_JSON), "w") as f:
        json.dump(vocabularies, f)
    with open(os.path.join(options.output_dir, META_JSON), "w") as f:
        json.dump(meta, f, indent=2)
    return meta


def _share(count: int, part: Tuple[int, int]) -> List[int]:
    index, total = part
    return list(range(index, count, total))


def _map(workers: int, function: Any, options: PrepareOptions, items: List[int]) -> List[Any]:
    """``function(options, item)`` for each item, ``workers`` processes at a time (1: here)."""
    if workers <= 1 or len(items) <= 1:
        return [function(options, item) for item in items]
    with ProcessPoolExecutor(min(workers, len(items)), mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(function, [options] * len(items), items))


def prepare(options: PrepareOptions, step: str = "all", part: Tuple[int, int] = (0, 1), workers: int = 1,
            keep_rows: bool = False) -> Dict[str, Any]:
    """Runs ``step`` (``partition``, ``build``, ``finish`` or ``all``) on this process's
    ``part`` (index, count) of the files and buckets, ``workers`` processes at a time.
    Returns counts and seconds per step (and ``meta``: the finished folder's meta)."""
    if step in ("all", "finish") and part != (0, 1):
        raise ValueError(f"--part {part[0]}/{part[1]}: parts are for --step partition and --step build")
    options.format()  # a bad format fails before any file is written
    os.makedirs(options.output_dir, exist_ok=True)
    if step == "all":  # a folder prepared before (maybe with other shards) is replaced, not mixed in
        shutil.rmtree(os.path.join(options.output_dir, "rows"), ignore_errors=True)
        for pattern in ("shard-*.parquet", "rows-report-*.json", META_JSON, VOCABULARY_JSON):
            for name in glob.glob(os.path.join(options.output_dir, pattern)):
                os.remove(name)
    result: Dict[str, Any] = {}
    if step in ("all", "partition"):
        started = time.perf_counter()
        report: Dict[str, int] = {}
        for file_report in _map(workers, partition, options, _share(len(options.paths), part)):
            for key, value in file_report.items():
                report[key] = report.get(key, 0) + value
        result["partition_s"] = time.perf_counter() - started
        result["rows"] = report.get("rows", 0)
        with open(os.path.join(options.output_dir, f"rows-report-{part[0]}-of-{part[1]}.json"), "w") as f:
            json.dump(report, f)
    if step in ("all", "build"):
        started = time.perf_counter()
        result["requests"] = sum(_map(workers, build, options, _share(options.shards, part)))
        result["build_s"] = time.perf_counter() - started
    if step in ("all", "finish"):
        started = time.perf_counter()
        result["meta"] = finish(options)
        result["finish_s"] = time.perf_counter() - started
        if not keep_rows:
            shutil.rmtree(os.path.join(options.output_dir, "rows"), ignore_errors=True)
    return result


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(prog="transact-prepare", description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="a log preset (taobao, kuairand, movielens) or events")
    parser.add_argument("--data-path", required=True, help="the log file(s), comma-separated")
    parser.add_argument("--event-format", help="--data events: the format JSON (see docs/data.md)")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--shards", type=int, default=16, help="users are hashed into this many shards")
    parser.add_argument("--workers", type=int, default=1, help="processes at a time for partition and build")
    parser.add_argument("--step", default="all", choices=["all", "partition", "build", "finish"])
    parser.add_argument("--part", default="0/1", help="I/N: this process does files and buckets I, I+N, ...")
    parser.add_argument("--keep-rows", action="store_true", help="keep the partitioned rows after finish")
    parser.add_argument("--block-size-mb", type=float, default=16.0, help="text parsed at a time")
    defaults = PrepareOptions("", ["x"], "")
    for name in ("max_seq_len",) + FIXED:
        value = getattr(defaults, name)
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value) if value is not None else int, default=value,
                            help=f"as transact-train's flag (default {value})")
    parser.add_argument("--skip-bad-rows", action="store_true")
    args = parser.parse_args(argv)
    try:
        index, count = (int(x) for x in args.part.split("/"))
        if not 0 <= index < count:
            raise ValueError
    except ValueError:
        parser.error(f"--part {args.part!r}: expected I/N with 0 <= I < N")
    try:
        options = PrepareOptions(
            data=args.data, paths=[p for p in args.data_path.split(",") if p], output_dir=args.output_dir,
            event_format=args.event_format, shards=args.shards, skip_bad_rows=args.skip_bad_rows,
            block_size=int(args.block_size_mb * (1 << 20)),
            **{name: getattr(args, name) for name in ("max_seq_len",) + FIXED},
        )
        for path in options.paths:
            if not os.path.isfile(path):
                raise ValueError(f"--data-path {path}: no such file")
        result = prepare(options, args.step, (index, count), args.workers, args.keep_rows)
    except (ValueError, OSError) as error:
        print(f"transact-prepare: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    shown = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in result.items() if k != "meta"}
    if "meta" in result:
        shown["requests"] = result["meta"]["requests"]
    print(f"prepare {args.step} {args.part}: {json.dumps(shown)}")
    return result


def cli() -> None:
    """Console-script entry point (``transact-prepare``)."""
    main()


if __name__ == "__main__":
    main()
