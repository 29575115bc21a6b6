"""Bad input never hangs, never prints a traceback, never gives a silent wrong result: one
test per case a new user met (files this project had never seen, broken inputs)."""

import json
import os
import time

import numpy as np
import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from helpers import write_file, assert_one_line_exit, small_config
from torchrec_transact.data.event_format import preset
from torchrec_transact.data.event_log import read_event_log
from torchrec_transact.data.criteo import read_criteo_tsv
from torchrec_transact.modules.baselines import build_sequence_encoder, SEQUENCE_ENCODERS
from torchrec_transact.train import main

SMALL = ["--max-seq-len", "10", "--latest-k", "2", "--embedding-dim", "8", "--eval-batches", "2",
         "--log-interval", "1", "--eval-interval", "0"]


def criteo_lines(count: int, seed: int = 0, strip_trailing: int = 0) -> str:
    """Well-formed Criteo lines (label, 13 counts, 26 hashes); the last ``strip_trailing``
    categorical fields of each line are empty and stripped, as some exports write them."""
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(count):
        fields = [str(int(rng.integers(0, 2)))] + [str(int(v)) for v in rng.integers(0, 50, 13)]
        fields += [f"{int(v):08x}" for v in rng.integers(0, 2**32, 26 - strip_trailing)]
        lines.append("\t".join(fields) + "\n")
    return "".join(lines)


def taobao_lines(users: int, events: int, same_time: bool = False, behaviors=("pv", "cart", "fav")) -> str:
    rng = np.random.default_rng(0)
    rows = []
    for user in range(users):
        for k in range(events):
            time_s = 1_511_000_000 if same_time else 1_511_000_000 + 7200 * k + 60 * user
            behavior = behaviors[int(rng.integers(0, len(behaviors)))]
            rows.append(f"{user},{int(rng.integers(0, 40))},{int(rng.integers(0, 5))},{behavior},{time_s}\n")
    return "".join(rows)


# ------------------------------------------------------------------ training data


@pytest.mark.parametrize(
    "data,name,text,message",
    [
        ("criteo", "small.tsv", criteo_lines(100), "90 training rows (of 100), fewer than one batch of 500"),
        ("criteo", "empty.tsv", "", "no rows"),
        ("taobao", "one_time.csv", taobao_lines(5, 6, same_time=True), "no train requests"),
        ("taobao", "empty.csv", "", "no events"),
        ("movielens", "header_only.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float\n", "no events"),
    ],
)
def test_too_little_data_is_one_line_within_seconds(tmp_path, capsys, data, name, text, message) -> None:
    path = write_file(tmp_path, name, text)
    started = time.perf_counter()
    with pytest.raises(SystemExit) as exit_info:
        main(["--data", data, "--data-path", path, "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(err) == 1, err
    assert message in err[0] and name in err[0], err
    assert time.perf_counter() - started < 20


def test_binary_garbage_names_the_file(tmp_path) -> None:
    path = tmp_path / "garbage.csv"
    path.write_bytes(bytes(range(256)) * 4)
    assert_one_line_exit(
        lambda: main(["--data", "taobao", "--data-path", str(path), "--output-dir", str(tmp_path / "o")]),
        2, "garbage.csv:2: not a UTF-8 text file",
    )
    with pytest.raises(ValueError, match="garbage.csv:1: not a UTF-8 text file"):
        read_criteo_tsv([str(path)])


def test_criteo_hash_wider_than_64_bits_is_a_line_error_or_skipped(tmp_path) -> None:
    fields = criteo_lines(1, seed=1).split("\t")
    fields[14] = "1" + "f" * 16  # C1: 17 hex digits, 68 bits
    wide = "\t".join(fields)
    path = write_file(tmp_path, "wide.tsv", criteo_lines(3) + wide + criteo_lines(2, seed=2))
    with pytest.raises(ValueError, match=r"wide.tsv:4: categorical feature C1 = '.*' is not a hex hash of at most 64 bits"):
        read_criteo_tsv([path])
    arrays = read_criteo_tsv([path], skip_bad_lines=True)
    assert len(arrays) == 5 and arrays.skipped_lines == 1


def test_criteo_lines_with_stripped_trailing_fields_are_missing_values_and_counted(tmp_path) -> None:
    path = write_file(tmp_path, "export.tsv", criteo_lines(4) + criteo_lines(3, seed=3, strip_trailing=2)
                  + criteo_lines(2, seed=4, strip_trailing=1))
    arrays = read_criteo_tsv([path], table_size=2**40)
    assert len(arrays) == 9 and arrays.short_lines == 5
    assert (arrays.sparse[4:7, 24:] == 0).all() and (arrays.sparse[7:, 25] == 0).all()
    assert (arrays.sparse[:4] != 0).all()
    assert arrays.report()["short_lines_read_as_missing"] == 5


def test_skipping_every_row_is_an_error_and_a_large_share_warns(tmp_path) -> None:
    bad = "".join(f"x\t{i}\n" for i in range(5))
    with pytest.raises(ValueError, match="all 5 lines were malformed and skipped"):
        read_criteo_tsv([write_file(tmp_path, "bad.tsv", bad)], skip_bad_lines=True)
    with pytest.warns(UserWarning, match="skipped 5 malformed lines of 8"):
        read_criteo_tsv([write_file(tmp_path, "half.tsv", criteo_lines(3) + bad)], skip_bad_lines=True)
    with pytest.raises(ValueError, match="all 2 rows were malformed and skipped"):
        read_event_log(write_file(tmp_path, "bad.inter", "1\t2\tx\t3\n4\t5\t6\n"), preset("movielens"), skip_bad_rows=True)


def test_movielens_without_a_header_keeps_its_first_rating(tmp_path) -> None:
    rows = "196\t242\t3\t881250949\n186\t302\t5\t891717742\n22\t377\t1\t878887116\n"
    plain = read_event_log(write_file(tmp_path, "u.data", rows), preset("movielens"))
    assert len(plain) == 3 and not plain.report["header_rows"]
    assert plain.timestamps[0] == 881250949.0
    recbole = read_event_log(
        write_file(tmp_path, "ml.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + rows), preset("movielens")
    )
    assert len(recbole) == 3 and recbole.report["header_rows"]
    assert np.array_equal(plain.timestamps, recbole.timestamps)


def test_output_dir_that_is_a_file_is_one_line(tmp_path) -> None:
    path = write_file(tmp_path, "taken", "")
    assert_one_line_exit(lambda: main(["--output-dir", path]), 2, "--output-dir")


def test_counts_resume_note_and_checkpoints_of_another_model(tmp_path, capsys) -> None:
    """Skipped and repaired rows land in metrics.jsonl and the summary; --resume without a
    checkpoint says so; a checkpoint of another model, or a truncated one, is one line."""
    lines = criteo_lines(300) + "broken line\n" + criteo_lines(100, seed=5, strip_trailing=3)
    path = write_file(tmp_path, "criteo.tsv", lines)
    out = str(tmp_path / "run")
    common = ["--data", "criteo", "--data-path", path, "--batch-size", "100", *SMALL, "--output-dir", out]
    main(common + ["--steps", "2", "--skip-bad-rows", "--resume", "--model", "dlrm"])
    captured = capsys.readouterr()
    assert f"--resume: no checkpoint in {os.path.join(out, 'checkpoints')}; starting from step 0" in captured.err
    assert "data: 400 rows, 1 skipped malformed lines, 100 short lines read as missing" in captured.out
    with open(os.path.join(out, "metrics.jsonl")) as f:
        start = json.loads(f.readline())
    assert start["data"] == {"rows": 400, "skipped_malformed_lines": 1, "short_lines_read_as_missing": 100,
                             "blank_lines": 0}
    # The same directory, another model: the checkpoint does not fit.
    assert_one_line_exit(lambda: main(common + ["--steps", "4", "--skip-bad-rows", "--resume", "--model", "dcn"]),
                         1, "step_00000002 into this model")
    # A truncated checkpoint file.
    shard = next((tmp_path / "run" / "checkpoints" / "step_00000002").glob("*.distcp"))
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    assert_one_line_exit(lambda: main(common + ["--steps", "4", "--skip-bad-rows", "--resume", "--model", "dlrm"]),
                         1, "step_00000002")


def test_a_task_without_positives_has_undefined_auc_and_ne(tmp_path, capsys) -> None:
    """No 'buy' in the whole log: AUC and NE of buy are null in JSON and n/a in the table."""
    path = write_file(tmp_path, "no_buy.csv", taobao_lines(40, 12))
    out = str(tmp_path / "run")
    with pytest.warns(UserWarning, match="task 'buy' has no positive example"):
        results = main(["--data", "taobao", "--data-path", path, "--batch-size", "100", "--steps", "3", *SMALL,
                        "--output-dir", out])
    metrics = results["transact"]
    assert metrics["auc-buy"] is None and metrics["ne-buy"] is None
    assert isinstance(metrics["auc-cart"], float) and np.isfinite(metrics["ne-cart"])
    with open(os.path.join(out, "final_metrics.json")) as f:
        assert json.load(f)["transact"]["ne-buy"] is None
    assert "| auc-buy | n/a |" in capsys.readouterr().out


# ------------------------------------------------------------------ serving


def _predictor():
    from test_serving import small_model

    from torchrec_transact.serving import Predictor

    return Predictor(small_model())


def test_serving_refuses_float_ids_and_a_disagreeing_candidate_item() -> None:
    from torchrec_transact.serving import RequestError

    predictor = _predictor()
    good = predictor.random_request(3, 10, seed=1, request_time=1e6)
    sparse = dict(good.sparse)
    with pytest.raises(RequestError, match=r"candidate_ids\[1\] = 3.7 is not an integer id"):
        predictor.score(type(good)(good.events, good.request_time, [4, 3.7, 5], good.dense, sparse))
    with pytest.raises(RequestError, match=r"categorical feature 'user_id'\[0\] = 2.5"):
        predictor.score(type(good)(good.events, good.request_time, good.candidate_ids, good.dense,
                                   {**sparse, "user_id": 2.5}))
    candidates = np.asarray(good.candidate_ids)
    other = (candidates + 1) % 50
    with pytest.raises(RequestError, match="'candidate_item', candidate 0: .* differs from candidate_ids"):
        predictor.score(type(good)(good.events, good.request_time, candidates, good.dense,
                                   {**sparse, "candidate_item": other}))
    # Left out, it is filled from the candidate ids: the same scores.
    without = {k: v for k, v in sparse.items() if k != "candidate_item"}
    expected = predictor.score(good).probabilities
    got = predictor.score(type(good)(good.events, good.request_time, candidates, good.dense, without)).probabilities
    torch.testing.assert_close(got, expected)
    # Whole-number floats (JSON numbers) are ids.
    as_floats = predictor.score(type(good)(good.events, good.request_time, candidates.astype(float), good.dense, sparse))
    torch.testing.assert_close(as_floats.probabilities, expected)


# ------------------------------------------------------------------ the modules


@pytest.mark.parametrize("name", sorted(SEQUENCE_ENCODERS))
@pytest.mark.parametrize("training", [True, False])
def test_every_encoder_takes_an_empty_batch_and_names_bad_keys(name: str, training: bool) -> None:
    encoder = build_sequence_encoder(name, small_config()).train(training)
    keys = ["action_type", "item_id", "candidate_item_id"]
    empty = KeyedJaggedTensor(keys=keys, values=torch.zeros(0, dtype=torch.long),
                              lengths=torch.zeros(0, dtype=torch.int32), weights=torch.zeros(0))
    assert tuple(encoder(empty).shape) == (0, encoder.output_dim)
    if name == "none":  # reads no sequence key
        return
    negative = KeyedJaggedTensor(keys=keys, values=torch.tensor([1, 2, 3, 4]),
                                 lengths=torch.tensor([2, -1, 2, -1, 1, 1], dtype=torch.int32), weights=torch.ones(4))
    with pytest.raises(ValueError, match="feature 'action_type' example 1 has length -1"):
        encoder(negative)
    floats = KeyedJaggedTensor(keys=keys, values=torch.tensor([1.0, 2.0, 3.0]),
                               lengths=torch.tensor([1, 1, 1], dtype=torch.int32), weights=torch.ones(3))
    with pytest.raises(ValueError, match="KJT values are torch.float32; the 'action_type'"):
        encoder(floats)
