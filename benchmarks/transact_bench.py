#!/usr/bin/env python3
"""TransAct against the padded reference, side by side; prints one JSON object.

Both modules get the same configuration (batch 512, 100 actions, tokens of 32 + 32 + 32,
2 layers, 1 head, FFN 32; dropout 0, so that only the encoders are compared, and 0.1, the
paper's) and the same batches: ours as a KJT, the reference as the padded tensors it
expects (padding is not timed for it). The random time window is off
(``time_window_s=0``) so both encode exactly the same actions; with it on, TransAct would
get faster still, since it drops the masked tokens the reference keeps. Full-length and
skewed (mean 30) lengths; then, with a competing CPU-bound process started by the
benchmark on the same cores, both again in float32, and ours also with the threads a
ThreadBudget chooses (`--adaptive-threads` in training, `adaptive_threads` in serving).

Every variant runs once per round, ``--repeats`` rounds after warm-up. Throughputs are
medians over rounds; speedups are min, median and max of the per-round ratio against the
reference in the same precision and mode, which cancels most of the drift of a shared
machine (single runs here vary by +-20%). Each step's encoder FLOP/s (real tokens only) is
given as a share of the matmul peak of the step's precision: the fastest of the 1024^3
products timed among the variants of every round.

    python benchmarks/transact_bench.py            # full run, ~5 min on 2 cores
    python benchmarks/transact_bench.py --quick    # smaller batch, a smoke test
"""

import argparse
import copy
import dataclasses
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import warnings
from contextlib import contextmanager, nullcontext
from typing import Callable, Dict, Iterator, List, Optional

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench_utils, run as a script

from bench_utils import (  # noqa: E402
    encoder_flops, matmul_peak, paired_speedup, peak_step, share_of_peak, time_interleaved,
)

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}

from torchrec_transact import TransAct, TransActConfig
from torchrec_transact.data import random_sequence_features, SequenceFeatures
from torchrec_transact.modules.reference import PaddedTransActReference
from torchrec_transact.threads import ThreadBudget


def skewed_lengths(batch_size: int, mean: float, max_len: int, g: torch.Generator) -> torch.Tensor:
    """Exponential lengths clipped to [1, max_len]: most users short, a few at the cap."""
    u = torch.rand(batch_size, generator=g)
    return (-mean * torch.log1p(-u)).ceil().clamp(1, max_len).long()


def make_steps(
    ours: TransAct,
    reference: PaddedTransActReference,
    batch: SequenceFeatures,
    config: TransActConfig,
) -> Dict[str, Callable[[], None]]:
    kjt = batch.kjt()
    actions, items, ages, valid = batch.padded(config.max_seq_len)
    candidates = batch.candidate_ids
    bf16 = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731

    def ours_train(ctx=nullcontext) -> Callable[[], None]:
        def step() -> None:
            ours.train()
            with ctx():
                out = ours(kjt)
            out.sum().backward()
        return step

    def ref_train(ctx=nullcontext) -> Callable[[], None]:
        def step() -> None:
            reference.train()
            with ctx():
                out = reference(actions, items, ages, candidates, valid)
            out.sum().backward()
        return step

    def ours_eval(ctx=nullcontext, module: TransAct = ours) -> Callable[[], None]:
        def step() -> None:
            module.eval()
            with torch.inference_mode(), ctx():
                module(kjt)
        return step

    def ref_eval(ctx=nullcontext) -> Callable[[], None]:
        def step() -> None:
            reference.eval()
            with torch.inference_mode(), ctx():
                reference(actions, items, ages, candidates, valid)
        return step

    compiled = copy.deepcopy(ours)
    compiled.transformer.compile_encoder()
    budget = ThreadBudget(interval_s=0.5)

    def adaptive(step: Callable[[], None]) -> Callable[[], None]:
        """The step with the thread count a ThreadBudget chooses; the other variants of
        the round keep torch's setting."""
        def run() -> None:
            threads = torch.get_num_threads()
            budget.update()
            try:
                step()
            finally:
                torch.set_num_threads(threads)
        return run

    return {
        "transact_eval_compiled_fp32": ours_eval(module=compiled),
        "transact_train_adaptive_fp32": adaptive(ours_train()),
        "transact_eval_adaptive_fp32": adaptive(ours_eval()),
        "transact_eval_compiled_bf16": ours_eval(bf16, compiled),
        "transact_train_fp32": ours_train(),
        "reference_train_fp32": ref_train(),
        "transact_train_bf16": ours_train(bf16),
        "reference_train_bf16": ref_train(bf16),
        "transact_eval_fp32": ours_eval(),
        "reference_eval_fp32": ref_eval(),
        "transact_eval_bf16": ours_eval(bf16),
        "reference_eval_bf16": ref_eval(bf16),
    }


@contextmanager
def competing_process() -> Iterator[None]:
    """Another CPU-bound process on the same cores while the block runs (a single-threaded
    matmul loop: what a neighbouring job on a shared machine looks like)."""
    code = "import torch\ntorch.set_num_threads(1)\na = torch.randn(256, 256)\nwhile True:\n    a = torch.tanh(a @ a)\n"
    process = subprocess.Popen([sys.executable, "-c", code])
    try:
        time.sleep(1.0)  # let it start spinning
        yield
    finally:
        process.kill()
        process.wait()


def compare(
    config: TransActConfig, lengths: torch.Tensor, g: torch.Generator, warmup: int, repeats: int,
    names: Optional[List[str]] = None,
) -> Dict[str, object]:
    """Ours against the reference on one batch: examples/s, speedups (min, median, max of
    the per-round ratios against the reference in the same precision and mode) and the
    encoder FLOP/s as a share of the step's precision's best matmul peak in the same rounds."""
    ours, reference = TransAct(config), PaddedTransActReference(config)
    batch = random_sequence_features(lengths, config.num_action_types, config.num_items, generator=g)
    steps = make_steps(ours, reference, batch, config)
    steps = {k: v for k, v in steps.items() if (k in names if names is not None else "adaptive" not in k)}
    precisions = sorted({name[-4:] for name in steps})
    steps.update({f"peak_{precision}": peak_step(PRECISIONS[precision]) for precision in precisions})
    with warnings.catch_warnings(record=True) as caught:  # a failed compile runs eager: say so
        warnings.simplefilter("always")
        samples = time_interleaved(steps, warmup, repeats)
    compile_failures = sorted({str(w.message) for w in caught if "torch.compile of" in str(w.message)})
    peak_samples = {precision: samples.pop(f"peak_{precision}") for precision in precisions}
    flops = encoder_flops(config, lengths)
    size = lengths.numel()
    speedups = {
        key: paired_speedup(samples[f"reference_{key}"], samples[f"transact_{key}"])
        for key in ("train_fp32", "train_bf16", "eval_fp32", "eval_bf16")
        if f"reference_{key}" in samples and f"transact_{key}" in samples
    }
    # torch.compile'd evaluation (compile_encoder), and the threads of a ThreadBudget
    for mode, variant, precision in itertools.product(("eval", "train"), ("compiled", "adaptive"), ("fp32", "bf16")):
        ours_name, reference_name = f"transact_{mode}_{variant}_{precision}", f"reference_{mode}_{precision}"
        if ours_name in samples and reference_name in samples:
            speedups[f"{mode}_{variant}_{precision}"] = paired_speedup(samples[reference_name], samples[ours_name])
    shares = {
        name: share_of_peak((3 if "train" in name else 1) * flops, seconds, peak_samples[name[-4:]])
        for name, seconds in samples.items()
    }
    return {
        "mean_length": float(lengths.float().mean()),
        "examples_per_s": {k: size / statistics.median(v) for k, v in samples.items()},
        "speedup_vs_reference": speedups,
        "encoder_flops_share_of_peak": shares,
        "compile_failures": compile_failures,  # empty: the compiled rows ran compiled
    }


def run(batch_size: int = 512, repeats: int = 9, warmup: int = 2, skewed_mean: float = 30.0,
        shared_cores: bool = True) -> Dict[str, object]:
    """TransAct against the reference at full and skewed lengths, dropout 0 and 0.1, and
    (``shared_cores``) with a competing process on the same cores (see the module
    docstring)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    base = TransActConfig(num_action_types=8, num_items=100_000, time_window_s=0.0, validate_inputs=True)
    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    result: Dict[str, object] = {
        "benchmark": "transact_vs_padded_reference",
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        },
        "config": {
            "batch_size": batch_size, "max_seq_len": base.max_seq_len, "d_model": base.d_model,
            "num_layers": base.num_layers, "num_heads": base.num_heads, "ffn_dim": base.ffn_dim,
            "max_length_buckets": base.max_length_buckets, "repeats": repeats,
        },
        "matmul_peak_gflops": {k: v / 1e9 for k, v in peaks.items()},
    }
    cases = {
        "full_length": torch.full((batch_size,), base.max_seq_len, dtype=torch.long),
        "skewed": skewed_lengths(batch_size, skewed_mean, base.max_seq_len, g),
    }
    for dropout in (0.0, 0.1):
        config = dataclasses.replace(base, dropout=dropout)
        for case, lengths in cases.items():
            result[f"{case}_dropout_{dropout:g}"] = compare(config, lengths, g, warmup, repeats)
    if shared_cores:
        fp32 = ["transact_train_fp32", "reference_train_fp32", "transact_eval_fp32", "reference_eval_fp32",
                "transact_eval_compiled_fp32", "transact_train_adaptive_fp32", "transact_eval_adaptive_fp32"]
        with competing_process():
            for case, lengths in cases.items():
                result[f"{case}_shared_cores"] = compare(base, lengths, g, warmup, repeats, fp32)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--skewed-mean", type=float, default=30.0)
    parser.add_argument("--no-shared-cores", action="store_true", help="skip the case with a competing process")
    parser.add_argument("--quick", action="store_true", help="batch 64, 2 repeats")
    args = parser.parse_args()
    if args.quick:
        args.batch_size, args.repeats, args.warmup = 64, 2, 1
    print(json.dumps(run(args.batch_size, args.repeats, args.warmup, args.skewed_mean, not args.no_shared_cores),
                     indent=2))


if __name__ == "__main__":
    main()
