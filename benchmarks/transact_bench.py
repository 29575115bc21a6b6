#!/usr/bin/env python3
"""TransAct against the padded reference, side by side; prints one JSON object.

Both modules get the same weights-free configuration (batch 512, 100 actions, tokens of
32 + 32 + 32, 2 layers, 1 head, FFN 32, dropout 0.1) and the same batches: ours as a KJT,
the reference as the padded tensors it expects (padding is not timed for it). The random
time window is off (``time_window_s=0``) so both encode exactly the same actions; with it
on, TransAct would get faster still, since it drops the masked tokens the reference keeps.

Every variant runs once per round, ``--repeats`` rounds after warm-up. Throughputs are
medians over rounds; speedups are medians (with min and max) of the per-round ratio, which
cancels most of the drift of a shared machine (single runs here vary by +-20%).

    python benchmarks/transact_bench.py            # full run, ~2 min on 2 cores
    python benchmarks/transact_bench.py --quick    # smaller batch, a smoke test
"""

import argparse
import json
import os
import platform
import statistics
import sys
from contextlib import nullcontext
from typing import Callable, Dict, List

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench_utils, run as a script

from bench_utils import encoder_flops, matmul_peak, paired_speedup, time_interleaved  # noqa: E402

from torchrec_transact import TransAct, TransActConfig
from torchrec_transact.data import random_sequence_features, SequenceFeatures
from torchrec_transact.modules.reference import PaddedTransActReference


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

    def ours_eval(ctx=nullcontext) -> Callable[[], None]:
        def step() -> None:
            ours.eval()
            with torch.inference_mode(), ctx():
                ours(kjt)
        return step

    def ref_eval(ctx=nullcontext) -> Callable[[], None]:
        def step() -> None:
            reference.eval()
            with torch.inference_mode(), ctx():
                reference(actions, items, ages, candidates, valid)
        return step

    return {
        "transact_train_fp32": ours_train(),
        "reference_train_fp32": ref_train(),
        "transact_train_bf16": ours_train(bf16),
        "reference_train_bf16": ref_train(bf16),
        "transact_eval_fp32": ours_eval(),
        "reference_eval_fp32": ref_eval(),
        "transact_eval_bf16": ours_eval(bf16),
    }


def run(batch_size: int = 512, repeats: int = 9, warmup: int = 2, skewed_mean: float = 30.0) -> Dict[str, object]:
    """TransAct against the reference at full and skewed lengths (see the module docstring)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    config = TransActConfig(
        num_action_types=8, num_items=100_000, time_window_s=0.0, validate_inputs=True
    )
    ours = TransAct(config)
    reference = PaddedTransActReference(config)

    peak_fp32 = matmul_peak(torch.float32)
    peak_bf16 = matmul_peak(torch.bfloat16)
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
            "batch_size": batch_size,
            "max_seq_len": config.max_seq_len,
            "d_model": config.d_model,
            "num_layers": config.num_layers,
            "num_heads": config.num_heads,
            "ffn_dim": config.ffn_dim,
            "max_length_buckets": config.max_length_buckets,
            "repeats": repeats,
        },
        "matmul_peak_gflops": {"fp32": peak_fp32 / 1e9, "bf16": peak_bf16 / 1e9},
    }
    cases = {
        "full_length": torch.full((batch_size,), config.max_seq_len, dtype=torch.long),
        "skewed": skewed_lengths(batch_size, skewed_mean, config.max_seq_len, g),
    }
    for case, lengths in cases.items():
        batch = random_sequence_features(lengths, config.num_action_types, config.num_items, generator=g)
        samples = time_interleaved(
            make_steps(ours, reference, batch, config), warmup, repeats
        )
        seconds = {name: statistics.median(ts) for name, ts in samples.items()}
        flops = encoder_flops(config, lengths)
        ref_train, ref_eval = samples["reference_train_fp32"], samples["reference_eval_fp32"]
        entry: Dict[str, object] = {
            "mean_length": float(lengths.float().mean()),
            "examples_per_s": {k: batch_size / v for k, v in seconds.items()},
            # Against the float32 reference, round by round (see paired_speedup).
            "speedup_vs_reference_fp32": {
                "train_fp32": paired_speedup(ref_train, samples["transact_train_fp32"]),
                "train_bf16": paired_speedup(ref_train, samples["transact_train_bf16"]),
                "eval_fp32": paired_speedup(ref_eval, samples["transact_eval_fp32"]),
                "eval_bf16": paired_speedup(ref_eval, samples["transact_eval_bf16"]),
            },
            # Useful FLOPs (real tokens only) per second, as a share of the measured peak.
            "encoder_flops_fraction_of_peak": {
                "transact_train_fp32": 3 * flops / seconds["transact_train_fp32"] / peak_fp32,
                "transact_train_bf16": 3 * flops / seconds["transact_train_bf16"] / peak_bf16,
                "transact_eval_fp32": flops / seconds["transact_eval_fp32"] / peak_fp32,
                "reference_train_fp32": 3 * flops / seconds["reference_train_fp32"] / peak_fp32,
            },
        }
        result[case] = entry
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--skewed-mean", type=float, default=30.0)
    parser.add_argument("--quick", action="store_true", help="batch 64, 2 repeats")
    args = parser.parse_args()
    if args.quick:
        args.batch_size, args.repeats, args.warmup = 64, 2, 1
    print(json.dumps(run(args.batch_size, args.repeats, args.warmup, args.skewed_mean), indent=2))


if __name__ == "__main__":
    main()
