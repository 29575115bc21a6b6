"""Logs larger than memory: the streamed reader, the prepare step's Parquet shards (equal to
the in-memory requests), split work over parts, and training from the shards."""

import json
import os
from typing import Dict, List, Tuple

import numpy as np
import pyarrow.parquet as pq
import pytest

from helpers import assert_one_line_exit, write_file
from torchrec_transact.data.action_logs import open_log
from torchrec_transact.data.event_format import EventFormat
from torchrec_transact.data.event_log import read_event_log, stream_event_log
from torchrec_transact.data.prepare import main as prepare_main
from torchrec_transact.data.prepare import prepare, PrepareOptions
from torchrec_transact.data.registry import DataOptions, open_data
from torchrec_transact.train import main as train_main

FORMAT = {
    "name": "shop", "delimiter": ",", "header": True, "user": "user", "item": "item", "timestamp": "ts",
    "timestamp_unit": "s", "action": {"column": "event", "values": {"view": "view", "buy": "buy", "hide": "hide"}},
    "tasks": {"buy": ["buy"], "hide": ["hide"]}, "categorical": {"candidate_shop": "shop"},
}


def _log(tmp_path, users: int = 30, rows: int = 3000, bad_line: int = 0) -> Tuple[str, str]:
    """A shop log with unique times (so sequence order has no ties) and sessions."""
    rng = np.random.default_rng(0)
    lines = ["user,item,ts,event,shop"]
    times = np.sort(rng.choice(300_000, size=rows, replace=False)) + 1_600_000_000
    for k, t in enumerate(times):
        event = ["view", "view", "buy", "hide"][rng.integers(4)]
        lines.append(f"u{rng.integers(users)},i{rng.integers(200)},{t},{event},s{rng.integers(7)}")
    if bad_line:
        lines[bad_line - 1] = "u1,i1,not-a-time,view,s1"
    return write_file(tmp_path, "shop.csv", "\n".join(lines) + "\n"), write_file(tmp_path, "shop.json", json.dumps(FORMAT))


def _requests_in_memory(path: str, **args) -> Dict[Tuple[str, float], tuple]:
    fmt = EventFormat.from_json(FORMAT)
    log, requests = open_log(fmt, path, max_request_size=10, max_seq_len=20, **args)
    user, item, shop = (log.vocabularies[k].raw_ids for k in ("user_id", "item", "candidate_shop"))
    every = np.arange(requests.request_time.size)
    items, labels, (shops,) = requests.candidates(every)
    start = np.concatenate([[0], np.cumsum(requests.request_size)])
    found = {}
    for r, (actions, seq_items, ages) in zip(every, requests.sequences(every)):
        span = slice(start[r], start[r + 1])
        candidates = sorted(zip([item[i - 1] for i in items[span]], [shop[s - 1] for s in shops[span]],
                                map(tuple, labels[span].tolist())))
        sequence = list(zip(actions.tolist(), [item[i - 1] for i in seq_items], ages.tolist()))
        found[(user[requests.request_user[r] - 1], float(requests.request_time[r]))] = (candidates, sequence)
    return found


def _requests_in_shards(folder: str) -> Dict[Tuple[str, float], tuple]:
    found = {}
    for name in sorted(os.listdir(folder)):
        if name.startswith("shard-"):
            for row in pq.read_table(os.path.join(folder, name)).to_pylist():
                candidates = sorted(zip(row["candidate_item"], row["candidate:candidate_shop"],
                                        zip(row["label:buy"], row["label:hide"])))
                sequence = list(zip(row["sequence_action"], row["sequence_item"], row["sequence_age"]))
                found[(row["user"], row["request_time"])] = (candidates, sequence)
    return found


def _options(path: str, fmt_path: str, out: str, **kw) -> PrepareOptions:
    return PrepareOptions(data="events", paths=[path], output_dir=out, event_format=fmt_path, max_seq_len=20, **kw)


def test_streamed_blocks_name_the_line_of_a_bad_row(tmp_path) -> None:
    path, _ = _log(tmp_path, bad_line=2500)
    fmt = EventFormat.from_json(FORMAT)
    with pytest.raises(ValueError, match=r"shop.csv:2500: .*timestamp is not a time"):
        for _ in stream_event_log(path, fmt, block_size=4096):
            pass
    blocks = list(stream_event_log(path, fmt, skip_bad_rows=True, block_size=4096))
    assert len(blocks) > 10
    assert sum(r["rows"] for _, r in blocks) == 2999 and sum(r["skipped_malformed_rows"] for _, r in blocks) == 1
    whole = read_event_log(path, fmt, skip_bad_rows=True)
    assert np.array_equal(np.concatenate([e.timestamps for e, _ in blocks]), whole.timestamps)


def test_shards_hold_the_in_memory_requests(tmp_path) -> None:
    """Same requests, candidates, labels and sequences (in order) as ``--data events``
    builds in memory; the time cuts too; the vocabularies hold every id."""
    path, fmt_path = _log(tmp_path)
    out = str(tmp_path / "prepared")
    result = prepare(_options(path, fmt_path, out, shards=3))
    assert _requests_in_shards(out) == _requests_in_memory(path)
    _, requests = open_log(EventFormat.from_json(FORMAT), path, max_request_size=10, max_seq_len=20)
    meta = result["meta"]
    assert (meta["time_cut"], meta["valid_cut"]) == (requests.time_cut, requests.valid_cut)
    assert sum(meta["requests"].values()) == requests.request_time.size and meta["report"]["rows"] == 3000
    with open(os.path.join(out, "vocabulary.json")) as f:
        vocabulary = json.load(f)
    assert sorted(vocabulary["candidate_item"]) == sorted({f"i{k}" for k in range(200)} & set(vocabulary["candidate_item"]))
    assert len(vocabulary["user_id"]) == 30 and not os.path.exists(os.path.join(out, "rows"))
    again = prepare(_options(path, fmt_path, out, shards=2))["meta"]  # replaces the 3 shards
    assert len(again["shards"]) == 2 and len([n for n in os.listdir(out) if n.startswith("shard-")]) == 2
    assert _requests_in_shards(out) == _requests_in_memory(path)


def test_parts_built_apart_equal_one_process(tmp_path) -> None:
    """Two log files partitioned by two 'machines', buckets built by two, one finish: the
    same folder as one process doing everything."""
    path, fmt_path = _log(tmp_path)
    lines = open(path).read().splitlines()
    first = write_file(tmp_path, "a.csv", "\n".join(lines[:1500]) + "\n")
    second = write_file(tmp_path, "b.csv", "\n".join([lines[0]] + lines[1500:]) + "\n")
    together, apart = str(tmp_path / "together"), str(tmp_path / "apart")
    prepare(PrepareOptions("events", [first, second], together, fmt_path, shards=4, max_seq_len=20))
    options = PrepareOptions("events", [first, second], apart, fmt_path, shards=4, max_seq_len=20)
    for step in ("partition", "build"):
        for part in ((0, 2), (1, 2)):
            prepare(options, step, part)
    prepare(options, "finish")
    for name in ["meta.json", "vocabulary.json"] + [f"shard-{k:05d}.parquet" for k in range(4)]:
        if name.endswith(".json"):
            a, b = (json.load(open(os.path.join(d, name))) for d in (together, apart))
            if name == "meta.json":
                a.pop("source"), b.pop("source")
            assert a == b, name
        else:
            assert pq.read_table(os.path.join(together, name)).equals(pq.read_table(os.path.join(apart, name)))
    assert _requests_in_shards(apart) == _requests_in_memory(path)


def _request_ids(batches) -> List[int]:
    return sorted(set(int(r) for b in batches for r in b.request_ids.unique()))


def test_ranks_and_workers_read_their_own_shards(tmp_path) -> None:
    path, fmt_path = _log(tmp_path)
    out = str(tmp_path / "prepared")
    meta = prepare(_options(path, fmt_path, out, shards=4))["meta"]
    options = DataOptions(path=out, batch_size=40, max_seq_len=20)
    spec = open_data("prepared", options)
    one_epoch = meta["requests"]["train"]

    def epoch(rank: int, world: int, workers: int = 0, epochs: int = 1) -> List[int]:
        """The requests of the first batches, up to ``epochs`` epochs' examples (workers
        interleave: one may start its second epoch before the other ends its first)."""
        from torchrec_transact.data.prepared import PreparedFolder, training_batches

        folder = PreparedFolder(out, 20)
        shards = folder.rank_shards(rank, world)
        size = epochs * sum(len(b.request_ids) for b in folder.batches("train", shards, 40))
        batches, seen = training_batches(folder, rank, world, 40, seed=0, workers=workers), []
        while sum(len(b.request_ids) for b in seen) < size:
            seen.append(next(batches))
        assert workers or sum(len(b.request_ids) for b in seen) == size
        return _request_ids(seen)

    alone = epoch(0, 1)
    assert len(alone) == one_epoch
    rank0, rank1 = epoch(0, 2), epoch(1, 2)
    assert not set(rank0) & set(rank1) and sorted(rank0 + rank1) == alone
    assert epoch(0, 1, workers=2, epochs=3) == alone
    batch = next(spec.train(0, 1, 0))
    assert batch.sequence_features.keys() == ["action_type", "item_id", "candidate_item_id"]
    assert batch.labels.shape[1] == 2 and 0 < batch.labels.shape[0] <= 40
    assert len(_request_ids(spec.evaluation(0, 1))) == meta["requests"]["eval"]


def test_training_from_shards_and_mismatched_settings(tmp_path, capsys) -> None:
    path, fmt_path = _log(tmp_path)
    out = str(tmp_path / "prepared")
    prepare_main(["--data", "events", "--data-path", path, "--event-format", fmt_path, "--output-dir", out,
                  "--shards", "2", "--max-seq-len", "20"])
    assert "prepare all 0/1" in capsys.readouterr().out
    run = str(tmp_path / "run")
    flags = ["--data", "prepared", "--data-path", out, "--steps", "6", "--batch-size", "40", "--max-seq-len", "20",
             "--eval-interval", "3", "--embedding-dim", "8", "--output-dir", run]
    results = train_main(flags)["transact"]
    assert {"auc-buy", "auc-hide", "valid-auc-buy", "hit@3-requests"} <= set(results)
    with open(os.path.join(run, "checkpoints", "step_00000006", "vocabulary.json")) as f:
        assert len(json.load(f)["features"]["candidate_shop"]) == 7
    assert_one_line_exit(lambda: train_main(flags + ["--train-fraction", "0.8"]), 2, "--train-fraction 0.8: ")
    assert_one_line_exit(lambda: train_main(flags + ["--max-seq-len", "50"]), 2, "holds sequences of at most 20")
    assert_one_line_exit(lambda: prepare_main(["--data", "mind", "--data-path", path, "--output-dir", out]), 2,
                         "impression log", prefix="transact-prepare: error:")
