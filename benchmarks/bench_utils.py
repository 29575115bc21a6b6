#!/usr/bin/env python3
"""What the benchmarks share, on torch alone (``gpu_check.py`` runs without torchrec):
encoder FLOPs, the matmul peak measured in-process, interleaved timing and percentiles,
the peak memory of one step."""

import resource
import statistics
import time
from typing import Callable, Dict, List

import torch

from torchrec_transact.modules.config import TransActConfig


def encoder_flops(config: TransActConfig, lengths: torch.Tensor) -> float:
    """Forward FLOPs of the encoder on the real (unpadded) tokens; training is 3x."""
    d, f = config.d_model, config.ffn_dim
    tokens = float(lengths.sum())
    per_token_macs = 3 * d * d + d * d + 2 * d * f  # q, k, v, out projection and FFN
    attention_macs = 2 * d * float((lengths.double() ** 2).sum())  # QK^T and AV
    return 2.0 * config.num_layers * (tokens * per_token_macs + attention_macs)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(dtype: torch.dtype, device: torch.device = torch.device("cpu"), n: int = 2048,
                repeats: int = 5) -> float:
    """FLOP/s of the best of ``repeats`` [n, n] x [n, n] products (the machine's practical
    matmul peak in this process)."""
    step = peak_step(dtype, device, n)
    step()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return 2.0 * n**3 / min(times)


def peak_step(dtype: torch.dtype, device: torch.device = torch.device("cpu"), n: int = 1024) -> Callable[[], None]:
    """One [n, n] x [n, n] product (2 n^3 FLOPs): timed among the variants of each round, it
    gives that round's peak, so a share of it is not skewed by a slow spell of the machine
    at the moment a one-off peak measurement ran."""
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    return lambda: torch.mm(a, b)


def share_of_peak(flops: float, seconds: List[float], peak_seconds: List[float], n: int = 1024) -> float:
    """Median over rounds of ``flops`` / a round's time, as a share of the best matmul peak
    of the case: the fastest of the [n, n] products that :func:`peak_step` timed among the
    case's variants (``peak_seconds``). The best, not each round's own: a lone product
    timed right after other work starts cold (sleeping threads, evicted caches) and read
    up to 40% below the peak here (bf16, 2026-12-01), which inflated the shares."""
    peak_flops = 2.0 * n**3 / min(peak_seconds)
    return statistics.median(flops / t for t in seconds) / peak_flops


def time_interleaved(
    fns: Dict[str, Callable[[], None]], warmup: int, repeats: int, device: torch.device = torch.device("cpu")
) -> Dict[str, List[float]]:
    """Seconds per call of each function, one sample per round, the functions run in turn
    within a round so that a slow spell of the machine hits every variant alike. The order
    rotates from round to round: what runs right after a given variant (a cold cache, a
    freshly freed buffer) differs, and moves identical variants by up to 15% here."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    synchronize(device)
    names = list(fns)
    samples: Dict[str, List[float]] = {name: [] for name in names}
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            fns[name]()
            synchronize(device)
            samples[name].append(time.perf_counter() - start)
    return samples


def spread(values: List[float]) -> Dict[str, float]:
    """Min, median and max."""
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def percentiles_ms(seconds: List[float]) -> Dict[str, float]:
    ordered = sorted(seconds)
    return {"p50_ms": 1e3 * statistics.median(ordered),
            "p99_ms": 1e3 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]}


def paired_speedup(reference: List[float], ours: List[float]) -> Dict[str, float]:
    """Median, min and max over rounds of reference time / our time in the same round."""
    return spread([r / o for r, o in zip(reference, ours)])


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(next(line.split()[1] for line in f if line.startswith(field + ":")))


def step_peak_mb(step: Callable[[], None]) -> float:
    """The rise of this process's peak resident memory during one call of ``step``, in MB
    (over its resident memory before the call). The peak is reset first through
    ``/proc/self/clear_refs`` ("5" clears VmHWM, Linux >= 4.0); without it, the process's
    lifetime peak, so run each case in a fresh process."""
    before = _rss_kb("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        step()
        peak_kb = _rss_kb("VmHWM") - before
    except OSError:  # no clear_refs
        step()
        peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    return peak_kb / 1024.0
