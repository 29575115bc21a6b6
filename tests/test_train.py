"""The training entry point: flags, a short run, checkpoints, resume after SIGKILL, torchx."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import torch.distributed as dist

from helpers import assert_one_line_exit
from torchrec_transact.train import main

# A small, fast run of the default job (synthetic data, TransAct-DCN).
SMALL = [
    "--batch-size", "100", "--max-seq-len", "20", "--latest-k", "3", "--embedding-dim", "8",
    "--eval-batches", "2", "--log-interval", "5", "--eval-interval", "0",
]


def _read_jsonl(path: str):
    with open(path) as f:
        return [json.loads(line) for line in f]


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--encoder", "gpt"], "--encoder 'gpt': expected one of"),
        (["--batch-size", "0"], "--batch-size 0: must be > 0"),
        (["--tasks", "click", "purchase"], "--tasks ['purchase'] are not in the synthetic data"),
        (["--data", "criteo"], "--data criteo needs --data-path"),
        (["--model", "wide_deep"], "--model 'wide_deep': expected one of"),
    ],
)
def test_bad_flags_fail_at_start_with_one_line(flags, message, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(flags)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not dist.is_initialized()  # failed before any process group


def test_short_run_logs_evaluates_and_checkpoints(tmp_path) -> None:
    out = str(tmp_path / "run")
    threads = torch.get_num_threads()
    try:  # --adaptive-threads: the thread count follows the machine's load, step by step
        results = main(SMALL + ["--steps", "20", "--output-dir", out, "--tasks", "click", "hide", "--adaptive-threads"])
    finally:
        torch.set_num_threads(threads)
    metrics = results["transact"]
    assert {"auc-click", "ne-click", "hit@3-click", "auc-hide", "hit@3-hide", "loss"} <= set(metrics)
    assert "auc-save" not in metrics
    rows = _read_jsonl(os.path.join(out, "metrics.jsonl"))
    assert [r["step"] for r in rows if r["kind"] == "train"] == [5, 10, 15, 20]
    assert rows[-1]["kind"] == "eval" and rows[-1]["hit@3-click"] == metrics["hit@3-click"]
    with open(os.path.join(out, "checkpoints", "latest")) as f:
        assert f.read() == "step_00000020"
    assert os.path.exists(os.path.join(out, "final_metrics.json"))


def _train(args, env=None, **kwargs):
    return subprocess.Popen(
        [sys.executable, "-m", "torchrec_transact.train", *args],
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        **kwargs,
    )


def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path) -> None:
    """Bitwise: same parameters (SHA-256 of every shard) and the same metrics."""
    common = SMALL + ["--steps", "40", "--checkpoint-interval", "10"]
    whole = _train(common + ["--output-dir", str(tmp_path / "whole")])
    interrupted_dir = tmp_path / "interrupted"
    victim = _train(common + ["--output-dir", str(interrupted_dir)])
    latest = interrupted_dir / "checkpoints" / "latest"
    deadline = time.time() + 300
    while not latest.exists() and time.time() < deadline and victim.poll() is None:
        time.sleep(0.05)
    assert latest.exists(), victim.stderr.read().decode()[-2000:] if victim.poll() is not None else "timeout"
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    killed_at = latest.read_text()
    assert killed_at != "step_00000040"
    resumed = _train(common + ["--output-dir", str(interrupted_dir), "--resume"])
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read().decode()[-3000:]
    assert whole.wait(timeout=600) == 0, whole.stderr.read().decode()[-3000:]
    with open(tmp_path / "whole" / "final_metrics.json") as f:
        expected = json.load(f)
    with open(interrupted_dir / "final_metrics.json") as f:
        got = json.load(f)
    assert got == expected, (killed_at, got, expected)


def test_init_from_loads_weights_but_not_the_data_position(tmp_path) -> None:
    first = str(tmp_path / "first")
    main(SMALL + ["--steps", "10", "--output-dir", first])
    warm = main(
        SMALL + ["--steps", "10", "--output-dir", str(tmp_path / "warm"),
                 "--init-from", os.path.join(first, "checkpoints", "step_00000010")]
    )
    cold = main(SMALL + ["--steps", "10", "--output-dir", str(tmp_path / "cold")])
    rows = _read_jsonl(os.path.join(str(tmp_path / "warm"), "metrics.jsonl"))
    assert [r["step"] for r in rows if r["kind"] == "train"][0] == 5  # starts at step 0
    assert warm["transact"]["state_sha256"] != cold["transact"]["state_sha256"]
    (tmp_path / "broken").mkdir()
    assert_one_line_exit(
        lambda: main(SMALL + ["--steps", "5", "--output-dir", str(tmp_path / "x"), "--init-from", str(tmp_path / "broken")]),
        1, "not a complete checkpoint",
    )


def test_config_file_and_flags(tmp_path) -> None:
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"encoder": "avg_pool", "steps": 7, "model": "dlrm"}))
    out = str(tmp_path / "run")
    results = main(SMALL + ["--config", str(config), "--steps", "6", "--output-dir", out])
    assert list(results) == ["avg_pool"]
    rows = _read_jsonl(os.path.join(out, "metrics.jsonl"))
    assert rows[-1]["step"] == 6  # the flag overrides the file
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"stepz": 3}))
    with pytest.raises(SystemExit):
        main(["--config", str(bad)])


@pytest.mark.parametrize(
    "data,relative,model",
    [
        ("movielens", "movielens_100k/ml-100k.inter", "dlrm"),
        ("taobao", "taobao_user_behavior/UserBehavior.csv", "dcn"),
        ("criteo", "criteo_tiny/train.tsv", "dlrm"),
        ("kuairand", "kuairand_likehate/kuairand_27k_likehate.tsv", "dcn"),
        ("mind", "mind_small_5k/behaviors.tsv", "dlrm"),
    ],
)
def test_every_data_source_trains(data_dir: str, data: str, relative: str, model: str, tmp_path) -> None:
    results = main(
        ["--data", data, "--data-path", os.path.join(data_dir, relative), "--model", model,
         "--steps", "6", "--batch-size", "100", "--max-seq-len", "20", "--latest-k", "3",
         "--eval-batches", "2", "--log-interval", "3", "--eval-interval", "0",
         "--output-dir", str(tmp_path / data)]
    )
    metrics = results["transact"]
    assert all(k.startswith(("auc-", "ne-", "hit@3-", "loss", "state", "valid-", "steps", "best_step")) for k in metrics)
    assert any(k.startswith("auc-") for k in metrics)


def test_console_script_is_installed() -> None:
    script = os.path.join(os.path.dirname(sys.executable), "transact-train")
    result = subprocess.run([script, "--batch-size", "0"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().endswith("--batch-size 0: must be > 0")


def test_interrupted_writes_leave_the_last_checkpoint_and_corruption_is_named(tmp_path) -> None:
    from torchrec_transact.checkpoint import latest_checkpoint

    out = tmp_path / "run"
    main(SMALL + ["--steps", "10", "--checkpoint-interval", "5", "--output-dir", str(out)])
    checkpoints = out / "checkpoints"
    # A write that died half-way: a .tmp directory the pointer never names.
    (checkpoints / "step_00000015.tmp").mkdir()
    (checkpoints / "step_00000015.tmp" / "__0_0.distcp").write_bytes(b"half")
    assert latest_checkpoint(str(checkpoints)) == str(checkpoints / "step_00000010")
    # Corrupt the data of the newest checkpoint: loading names it.
    for shard in (checkpoints / "step_00000010").glob("*.distcp"):
        shard.write_bytes(b"garbage")
    assert_one_line_exit(
        lambda: main(SMALL + ["--steps", "12", "--output-dir", str(out), "--resume"]), 1, "step_00000010"
    )


def test_checkpoint_metadata_with_foreign_objects_is_refused(tmp_path) -> None:
    import pickle

    from torchrec_transact.checkpoint import CheckpointError, load_checkpoint

    path = tmp_path / "evil"
    path.mkdir()

    class Exploit:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    (path / ".metadata").write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(str(path), {"x": __import__("torch").zeros(1)})
    assert not (tmp_path / "pwned").exists()


def test_embedding_weight_decay_shrinks_the_cpu_tables(tmp_path) -> None:
    """FBGEMM's CPU row-wise Adagrad takes a weight decay and ignores it (if a release
    starts to honour it, TableDecay would decay twice: this test then fails); TableDecay
    shrinks every row after each step, and the flag changes a run."""
    import torch
    from fbgemm_gpu.split_table_batched_embeddings_ops_common import EmbeddingLocation
    from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
        ComputeDevice, OptimType, SplitTableBatchedEmbeddingBagsCodegen, WeightDecayMode,
    )

    from torchrec_transact.trainer import TableDecay

    def step(decay: float) -> torch.nn.Module:
        torch.manual_seed(0)
        table = SplitTableBatchedEmbeddingBagsCodegen(
            [(10, 4, EmbeddingLocation.HOST, ComputeDevice.CPU)], optimizer=OptimType.EXACT_ROWWISE_ADAGRAD,
            learning_rate=0.1, weight_decay=decay, weight_decay_mode=WeightDecayMode.DECOUPLE,
        )
        table(torch.tensor([1, 2]), torch.tensor([0, 1, 2])).sum().backward()
        return table

    plain, decayed = step(0.0), step(0.5)
    assert torch.equal(plain.split_embedding_weights()[0], decayed.split_embedding_weights()[0])
    before = decayed.split_embedding_weights()[0].clone()
    TableDecay(decayed.split_embedding_weights(), learning_rate=0.1, decay=0.5)()
    assert torch.allclose(decayed.split_embedding_weights()[0], before * 0.95)

    runs = [main(SMALL + ["--steps", "3", "--output-dir", str(tmp_path / f"wd{wd}"), "--embedding-weight-decay", wd])
            for wd in ("0", "0.5")]
    assert runs[0]["transact"]["state_sha256"] != runs[1]["transact"]["state_sha256"]
