#!/usr/bin/env python3
"""Intra-op threads chosen from the cores other processes leave free.

PyTorch's CPU kernels split each op over ``torch.get_num_threads()`` threads and wait for
the slowest at a barrier. When another process holds one of two cores, every op waits for
the thread that shares its core: on this package's 2-core machine TransAct's evaluation
then ran 1.5x *slower* on two threads than on one (0.266 s against 0.173 s for 512
examples, 2026-12-01), while on quiet cores two threads are 1.7x faster. A
:class:`ThreadBudget` measures what the other processes use and sets the thread count to
the cores that are left.
"""

import os
import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import torch


@dataclass
class CpuSample:
    """One reading: when, the busy seconds of the watched cores, our process's CPU seconds."""

    wall_s: float
    busy_s: float
    own_s: float


def _clock_ticks() -> int:
    try:
        return os.sysconf("SC_CLK_TCK")
    except (AttributeError, ValueError, OSError):
        return 100


def proc_stat_sample(cores: Sequence[int], stat_path: str = "/proc/stat") -> Optional[CpuSample]:
    """Busy time of ``cores`` from ``/proc/stat`` (everything but idle and iowait), or None
    where there is no such file (not Linux)."""
    try:
        with open(stat_path) as f:
            lines = f.readlines()
    except OSError:
        return None
    wanted = {f"cpu{core}" for core in cores}
    busy_ticks = 0
    for line in lines:
        fields = line.split()
        if fields and fields[0] in wanted:
            ticks = [int(v) for v in fields[1:]]
            busy_ticks += sum(ticks) - ticks[3] - (ticks[4] if len(ticks) > 4 else 0)
    return CpuSample(time.monotonic(), busy_ticks / _clock_ticks(), time.process_time())


class ThreadBudget:
    """Keeps ``torch.set_num_threads`` at the cores other processes leave free.

    Call :meth:`update` before each unit of work (a batch, a request): at most once per
    ``interval_s`` it compares the busy time of the cores this process may run on with the
    CPU time of the process itself, and sets the thread count to the cores minus what the
    rest of the machine used, rounded, between 1 and ``max_threads``.

    Args:
        max_threads (Optional[int]): the most threads to use (None: the cores in this
            process's affinity mask).
        interval_s (float): how long a measurement spans.
        sample (Optional[Callable[[], Optional[CpuSample]]]): the reading (tests replace
            it); None: ``/proc/stat`` for this process's cores.

    Example::

        budget = ThreadBudget()
        model = torch.nn.Linear(4, 1)
        for batch in torch.randn(3, 8, 4):
            budget.update()  # the thread count in force
            model(batch)
    """

    def __init__(
        self,
        max_threads: Optional[int] = None,
        interval_s: float = 1.0,
        sample: Optional[Callable[[], Optional[CpuSample]]] = None,
    ) -> None:
        cores: List[int] = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(
            range(os.cpu_count() or 1))
        self.cores = len(cores)
        self.max_threads = max(1, max_threads or self.cores)
        self.interval_s = interval_s
        self._sample = sample or (lambda: proc_stat_sample(cores))
        self._last = self._sample()
        self.other_load = 0.0
        self.threads: Optional[int] = None  # the last measurement's choice

    def update(self) -> int:
        """Re-measures if ``interval_s`` has passed, and sets the thread count to the last
        measurement's choice (also when something else changed it since).

        Returns:
            int: the thread count in force.
        """
        now = None if self._last is None else self._sample()
        if now is not None and self._last is not None and now.wall_s - self._last.wall_s >= self.interval_s:
            wall = now.wall_s - self._last.wall_s
            others = (now.busy_s - self._last.busy_s) - (now.own_s - self._last.own_s)
            self.other_load = max(0.0, others / wall)
            self._last = now
            self.threads = max(1, min(self.max_threads, int(round(self.cores - self.other_load))))
        if self.threads is not None and self.threads != torch.get_num_threads():
            torch.set_num_threads(self.threads)
        return torch.get_num_threads()
