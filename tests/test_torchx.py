"""The torchx component: a real 2-process run here, a dry run for a cluster scheduler,
and a rank that dies under torchrun restarts, the job resuming from its last checkpoint."""

import json
import os
import subprocess
import sys


TORCHX = os.path.join(os.path.dirname(sys.executable), "torchx")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = [
    "--batch-size", "100", "--max-seq-len", "20", "--latest-k", "3", "--embedding-dim", "8",
    "--eval-batches", "2", "--log-interval", "5", "--eval-interval", "0",
]


def _torchx(*args: str, env=None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [TORCHX, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
        # torchx's local scheduler runs `torchrun` from PATH: the one of this environment.
        env={
            **os.environ,
            "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
            **(env or {}),
        },
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
    with open(os.path.join(out, "metrics.jsonl")) as f:
        assert json.loads(f.readline())["world_size"] == 2
    losses = [row["loss"] for row in _train_rows(out)]
    assert len(losses) == 12 and losses[-1] < losses[0], losses


def test_slurm_dryrun_prints_the_job_spec() -> None:
    """(Kubernetes dry runs need the `kubernetes` client package, not installed here.)"""
    result = _torchx(
        "run", "--dryrun", "-s", "slurm", "torchrec_transact/components.py:train",
        "--nnodes", "2", "--gpus", "8", "--max_restarts", "3", "--", "--steps", "1000",
        timeout=120,
    )
    spec = result.stdout + result.stderr
    assert result.returncode == 0, spec[-3000:]
    assert "-m torchrec_transact.train --steps 1000 --resume" in spec
    assert "--nnodes 2 --nproc_per_node 8" in spec
    assert "torchrun --max-restarts 3" in spec
    assert "--gpus-per-task=8" in spec and spec.count("#SBATCH --job-name=train-") == 2


def test_a_dead_rank_restarts_the_job_which_resumes(tmp_path) -> None:
    """Rank 1 dies at step 15 (once); torchrun restarts both ranks, which resume from the
    step-10 checkpoint and finish."""
    out = str(tmp_path / "run")
    marker = str(tmp_path / "crashed")
    result = _torchx(
        "run", "--wait", "--log", "-s", "local_cwd", "torchrec_transact/components.py:train",
        "--nproc_per_node", "2", "--max_restarts", "1", "--module", "crash_drill", "--",
        *SMALL, "--steps", "30", "--checkpoint-interval", "10", "--output-dir", out,
        # tests/crash_drill.py: the training entry with a step hook that kills rank 1.
        env={
            "TRANSACT_DRILL_STEP": "15", "TRANSACT_DRILL_MARKER": marker,
            "PYTHONPATH": os.path.join(REPO, "tests") + os.pathsep + os.environ.get("PYTHONPATH", ""),
        },
    )
    logs = result.stdout + result.stderr
    assert result.returncode == 0, logs[-3000:]
    assert os.path.exists(marker), logs[-3000:]  # rank 1 did die at step 15
    with open(os.path.join(out, "metrics.jsonl")) as f:
        starts = [row for row in map(json.loads, f) if row["kind"] == "start"]
    assert [row["step"] for row in starts] == [0, 10], starts
    assert starts[1]["resumed_from"].endswith("step_00000010") and starts[1]["world_size"] == 2
    steps = [row["step"] for row in _train_rows(out)]
    # Steps 5 and 10 ran before the crash; the restarted job went on from 10.
    assert steps[:2] == [5, 10] and steps[-1] == 30, steps
    with open(os.path.join(out, "checkpoints", "latest")) as f:
        assert f.read() == "step_00000030"
