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


@pytest.mark.parametrize("seed", range(4))
def test_streamed_errors_and_counts_equal_the_whole_file_read(tmp_path, seed: int) -> None:
    """Bad timestamps, rows of the wrong width and blank lines anywhere: the streamed read
    names the same bad line as the whole-file read, one bad line after another, and skips
    the same rows (the reader parses a block ahead, so a wrong-width row must be placed in
    its own block, not the one being read)."""
    rng = np.random.default_rng(seed)
    lines = ["user,item,ts,event,shop"] + [f"u{k % 5},i{k % 7},{1_600_000_000 + k},view,s1" for k in range(1500)]
    bad = sorted(rng.choice(np.arange(2, 1502), size=12, replace=False).tolist())
    for line in bad:
        lines[line - 1] = ["u1,i1,bad,view,s1", "u1,i1,5", "", "u1,i1,5,view,s1,extra"][rng.integers(4)]
    fmt = EventFormat.from_json(FORMAT)
    path = write_file(tmp_path, "log.csv", "\n".join(lines) + "\n")
    blocks = list(stream_event_log(path, fmt, skip_bad_rows=True, block_size=2048))
    whole = read_event_log(path, fmt, skip_bad_rows=True)
    for key in ("rows", "skipped_malformed_rows", "blank_rows"):
        assert sum(r[key] for _, r in blocks) == whole.report[key], key
    assert np.array_equal(np.concatenate([e.timestamps for e, _ in blocks]), whole.timestamps)
    named = 0
    for line in bad:  # mend the first bad line, then the next is named
        if lines[line - 1] == "":
            continue  # a blank line is no error
        path = write_file(tmp_path, "log.csv", "\n".join(lines) + "\n")
        with pytest.raises(ValueError) as whole_error:
            read_event_log(path, fmt)
        with pytest.raises(ValueError) as streamed_error:
            for _ in stream_event_log(path, fmt, block_size=int(rng.integers(1024, 4096))):
                pass
        assert str(streamed_error.value) == str(whole_error.value) and f"log.csv:{line}:" in str(whole_error.value)
        lines[line - 1] = f"u1,i1,{1_600_000_000 + line},view,s1"
        named += 1
    assert named >= 6


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


def test_rare_ids_are_counted_by_rows_as_in_memory(tmp_path) -> None:
    path, fmt_path = _log(tmp_path, users=150)
    out = str(tmp_path / "prepared")
    prepare(_options(path, fmt_path, out, shards=3, min_id_count=12))
    log, _ = open_log(EventFormat.from_json(FORMAT), path, max_request_size=10, max_seq_len=20, min_id_count=12)
    with open(os.path.join(out, "vocabulary.json")) as f:
        vocabulary = json.load(f)
    for feature, key in (("user_id", "user_id"), ("candidate_item", "item"), ("candidate_shop", "candidate_shop")):
        assert sorted(vocabulary[feature]) == sorted(log.vocabularies[key].raw_ids), feature
    assert 0 < len(vocabulary["user_id"]) < 150 and 0 < len(vocabulary["candidate_item"]) < 200


def test_parts_and_settings_are_checked(tmp_path) -> None:
    path, fmt_path = _log(tmp_path)
    out = str(tmp_path / "prepared")
    with pytest.raises(ValueError, match="parts are for --step partition and --step build"):
        prepare(_options(path, fmt_path, out), "all", (1, 2))
    with pytest.raises(ValueError, match="need 0 < train"):
        _options(path, fmt_path, out, train_fraction=0.95)
    with pytest.raises(ValueError, match="--max-request-size 0"):
        _options(path, fmt_path, out, max_request_size=0)
    options = _options(path, fmt_path, out, shards=2)
    with pytest.raises(ValueError, match="run --step partition first"):
        prepare(options, "build")
    prepare(options, "partition", (0, 2))
    prepare(options, "partition", (1, 2))
    prepare(options, "partition", (0, 1))  # a stale run of another split
    prepare(options, "build")
    with pytest.raises(ValueError, match=r"partition reports \['0/1', '0/2', '1/2'\]"):
        prepare(options, "finish")
    os.remove(os.path.join(out, "rows-report-0-of-1.json"))
    assert prepare(options, "finish")["meta"]["report"]["rows"] == 3000


def test_shards_without_training_requests_get_no_rank_or_worker(tmp_path) -> None:
    """Eight shards for three users: the ranks and workers share the shards that hold
    training requests; too many ranks is an error at the start."""
    path, fmt_path = _log(tmp_path, users=3)
    out = str(tmp_path / "prepared")
    meta = prepare(_options(path, fmt_path, out, shards=8))["meta"]
    from torchrec_transact.data.prepared import PreparedFolder, training_batches

    folder = PreparedFolder(out, 20)
    holding = [s for s, c in zip(folder.shards, meta["shard_requests"]) if c["train"]]
    assert 0 < len(holding) <= 3 and folder.rank_shards(0, 1) == holding
    batches = training_batches(folder, 0, 1, 40, seed=0, workers=len(holding))
    assert all(next(batches).batch_size > 0 for _ in range(20))
    with pytest.raises(ValueError, match="shards hold train requests, for 4 ranks"):
        folder.rank_shards(0, 4)
