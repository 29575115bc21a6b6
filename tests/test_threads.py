"""ThreadBudget: the thread count follows the cores other processes leave free."""

import subprocess
import sys
import time
from typing import List

import pytest
import torch

from torchrec_transact.threads import CpuSample, proc_stat_sample, ThreadBudget


@pytest.fixture(autouse=True)
def _restore_threads():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _scripted(samples: List[CpuSample]):
    readings = iter(samples)
    return lambda: next(readings)


def test_threads_follow_the_load_of_other_processes() -> None:
    # (wall, busy seconds of the watched cores, our CPU seconds)
    readings = [
        CpuSample(0.0, 0.0, 0.0),
        CpuSample(0.5, 1.0, 1.0),  # too soon: no new measurement
        CpuSample(1.0, 2.0, 1.1),  # another process used 0.9 of a core
        CpuSample(2.0, 3.9, 2.0),  # 1.0 of a core
        CpuSample(3.0, 5.9, 4.0),  # nobody else: back to every core
    ]
    budget = ThreadBudget(interval_s=1.0, sample=_scripted(readings))
    budget.cores, budget.max_threads = 4, 4
    torch.set_num_threads(4)
    assert budget.update() == torch.get_num_threads() == 4  # inside the interval: unchanged
    assert budget.update() == 3 and torch.get_num_threads() == 3
    assert budget.other_load == pytest.approx(0.9)
    assert budget.update() == 3
    assert budget.update() == 4 and torch.get_num_threads() == 4
    assert budget.other_load == pytest.approx(0.0, abs=1e-9)


def test_at_least_one_thread_and_at_most_max_threads() -> None:
    readings = [CpuSample(0.0, 0.0, 0.0), CpuSample(1.0, 8.0, 0.0), CpuSample(2.0, 8.0, 0.0)]
    budget = ThreadBudget(max_threads=2, sample=_scripted(readings))
    budget.cores = 4
    assert budget.update() == 1  # every core busy elsewhere
    assert budget.update() == 2  # idle machine, capped


def test_no_proc_stat_leaves_the_setting_alone(tmp_path) -> None:
    assert proc_stat_sample([0], str(tmp_path / "missing")) is None
    budget = ThreadBudget(sample=lambda: None)
    torch.set_num_threads(1)
    assert budget.update() == 1


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/stat")
def test_a_busy_process_is_measured() -> None:
    """A spinning child on this machine shows up as about one core of other load."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        budget = ThreadBudget(interval_s=1.0)
        time.sleep(1.1)
        budget.update()
        assert 0.6 < budget.other_load < 1.6, budget.other_load
    finally:
        spinner.kill()
        spinner.wait()
