"""The torchx component: a real 2-process run here, dry runs for cluster schedulers,
and a rank that dies under torchrun restarts, resuming from the last checkpoint."""

import json
import os
import subprocess
import sys

import pytest

TORCHX = os.path.join(os.path.dirname(sys.executable), "torchx")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = [
    "--batch-size", "100", "--max-seq-len", "20", "--latest-k", "3", "--embedding-dim", "8",
    "--eval-batches", "2", "--log-interval", "5", "--eval-interval", "0",
]


def _torchx(*args: str, env=None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [TORCHX, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def _train_rows(out: str):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if '"train"' in line]


def test_two_process_local_run_completes_and_loss_falls(tmp_path) -> None:
    out = str(tmp_path / "run")
    result = _torchx(
        "run", "--wait", "--log", "-s", "local_cwd", "torchrec_transact/components.py:train",
        "--nproc_per_node", "2", "--", *SMALL, "--steps", "60", "--output-dir", out,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "2 rank(s)" in result.stdout + result.stderr
    losses = [row["loss"] for row in _train_rows(out)]
    assert len(losses) == 12 and losses[-1] < losses[0], losses


@pytest.mark.parametrize("scheduler", ["kubernetes", "slurm"])
def test_dryrun_prints_a_cluster_job_spec(scheduler: str) -> None:
    result = _torchx(
        "run", "--dryrun", "-s", scheduler, "torchrec_transact/components.py:train",
        "--nnodes", "2", "--gpus", "8", "--max_restarts", "3", "--", "--steps", "1000",
        timeout=120,
    )
    spec = result.stdout + result.stderr
    assert result.returncode == 0, spec[-3000:]
    assert "-m torchrec_transact.train --steps 1000 --resume" in spec
    assert "--nnodes 2" in spec and "--nproc_per_node 8" in spec
    assert "--max-restarts 3" in spec
    if scheduler == "kubernetes":
        assert "nvidia.com/gpu: 8" in spec
    else:
        assert "--gpus-per-node=8" in spec or "gpus-per-node" in spec


def test_a_dead_rank_restarts_the_job_which_resumes(tmp_path) -> None:
    out = str(tmp_path / "run")
    marker = str(tmp_path / "crashed")
    result = _torchx(
        "run", "--wait", "--log", "-s", "local_cwd", "torchrec_transact/components.py:train",
        "--nproc_per_node", "2", "--max_restarts", "1", "--",
        *SMALL, "--steps", "30", "--checkpoint-interval", "10", "--output-dir", out,
        env={"TRANSACT_CRASH_AT_STEP": "15", "TRANSACT_CRASH_MARKER": marker},
    )
    logs = result.stdout + result.stderr
    assert result.returncode == 0, logs[-3000:]
    assert os.path.exists(marker)  # rank 1 did die at step 15
    assert "resumed from" in logs and "step_00000010" in logs
    steps = [row["step"] for row in _train_rows(out)]
    # Steps 5 and 10 ran before the crash; the restart resumed at 10, not at 0.
    assert steps[:2] == [5, 10] and steps[-1] == 30 and 0 not in steps
    with open(os.path.join(out, "checkpoints", "latest")) as f:
        assert f.read() == "step_00000030"
