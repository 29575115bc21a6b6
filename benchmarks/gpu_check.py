#!/usr/bin/env python3
"""The TransAct encoder and the serving request encoder on one GPU: eager against CUDA
graphs, float32 and bfloat16. Needs only PyTorch (no torchrec or fbgemm); prints one JSON
line.

    python benchmarks/gpu_check.py                  # CUDA when available
    python benchmarks/gpu_check.py --device cpu     # a smoke run (no graphs)

* ``encoder``: ``TransActSequenceArch.encode`` in evaluation mode on a batch of full-length
  sequences (batch 512, 100 actions, tokens 32 + 32 + 32, 2 layers, 1 head, FFN 32):
  examples/s and the encoder's FLOP/s as a share of the matmul peak measured in this
  process in the same precision.
* ``serving``: one user with 100 actions against 1, 100 and 1,000 candidates through the
  request encoder (``RequestTransAct``, the user's part shared): p50/p99 of eager float32,
  eager bfloat16 and a CUDA graph replay in bfloat16 (``CapturedBucket``: one host-to-device
  copy, one replay), with the share of the bfloat16 peak for the FLOPs of the naive path
  (every candidate encoding the full sequence).
"""

import argparse
import json
import os
import platform
import sys
from contextlib import nullcontext
from typing import Any, Callable, Dict

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench_utils, run as a script

from bench_utils import encoder_flops, matmul_peak, percentiles_ms, time_interleaved  # noqa: E402

from torchrec_transact.modules.arch import TransActSequenceArch  # noqa: E402
from torchrec_transact.modules.config import TransActConfig  # noqa: E402
from torchrec_transact.serving.dedup import RequestTransAct  # noqa: E402


def _autocast(device: torch.device, dtype: torch.dtype) -> Callable[[], Any]:
    if dtype == torch.float32:
        return nullcontext
    return lambda: torch.autocast(device.type, dtype=dtype)


def encoder_case(arch: TransActSequenceArch, device: torch.device, batch: int, repeats: int,
                 peaks: Dict[str, float]) -> Dict[str, Any]:
    config = arch.config
    g = torch.Generator().manual_seed(0)
    lengths = torch.full((batch,), config.max_seq_len, dtype=torch.long)
    tokens = int(lengths.sum())
    inputs = [t.to(device) for t in (
        lengths, torch.rand(tokens, generator=g) * 1e5 + 1.0, torch.randint(0, config.num_action_types, (tokens,), generator=g),
        torch.randn(tokens, config.item_embedding_dim, generator=g), torch.randn(batch, config.item_embedding_dim, generator=g),
    )]
    flops = encoder_flops(config, lengths)
    fns = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        context = _autocast(device, dtype)

        def run(context: Callable[[], Any] = context) -> None:
            with torch.inference_mode(), context():
                arch.encode(*inputs)
        fns[name] = run
    samples = time_interleaved(fns, warmup=2, repeats=repeats, device=device)
    out: Dict[str, Any] = {"batch": batch, "sequence_length": config.max_seq_len}
    for name, seconds in samples.items():
        best = min(seconds)
        out[name] = {"examples_per_s": batch / best, "share_of_peak": flops / best / peaks[name]}
    return out


def serving_case(arch: TransActSequenceArch, device: torch.device, candidates: int, repeats: int,
                 peaks: Dict[str, float]) -> Dict[str, Any]:
    config = arch.config
    g = torch.Generator().manual_seed(candidates)
    length = config.max_seq_len
    host = [
        torch.randint(0, config.num_action_types, (length,), generator=g),
        torch.randn(length, config.item_embedding_dim, generator=g),
        torch.randn(candidates, config.item_embedding_dim, generator=g),
        torch.tensor(length),
    ]
    request = RequestTransAct(arch)
    naive_flops = encoder_flops(config, torch.full((candidates,), length))
    fns: Dict[str, Callable[[], None]] = {}
    for name, dtype in (("eager_fp32", torch.float32), ("eager_bf16", torch.bfloat16)):
        context = _autocast(device, dtype)

        def run(context: Callable[[], Any] = context) -> None:
            inputs = [t.to(device, non_blocking=True) for t in host]
            with torch.inference_mode(), context():
                request(*inputs)
        fns[name] = run
    if device.type == "cuda":
        from torchrec_transact.serving.cuda_graphs import CapturedBucket

        captured = CapturedBucket(request, device, _autocast(device, torch.bfloat16), host)
        fns["cuda_graph_bf16"] = lambda: captured.replay(host)
    samples = time_interleaved(fns, warmup=3, repeats=repeats, device=device)
    out: Dict[str, Any] = {"candidates": candidates}
    for name, seconds in samples.items():
        peak = peaks["fp32" if name.endswith("fp32") else "bf16"]
        out[name] = {**percentiles_ms(seconds), "naive_flops_share_of_peak": naive_flops / min(seconds) / peak}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--candidates", default="1,100,1000")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    config = TransActConfig(num_action_types=8, num_items=100_000, time_window_s=0.0, dropout=0.0,
                            validate_inputs=False)
    arch = TransActSequenceArch(config, device=device).eval()
    # On a GPU a product large enough (8192^3: about a millisecond on an H200) that the
    # synchronisation after each one does not understate the peak.
    size, repeats = (8192, 20) if device.type == "cuda" else (2048, 5)
    peaks = {"fp32": matmul_peak(torch.float32, device, n=size, repeats=repeats),
             "bf16": matmul_peak(torch.bfloat16, device, n=size, repeats=repeats)}
    result: Dict[str, Any] = {
        "benchmark": "gpu_check",
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "matmul_peak_tflops": {k: v / 1e12 for k, v in peaks.items()},
        "encoder": encoder_case(arch, device, args.batch, max(3, args.repeats // 5), peaks),
        "serving": [serving_case(arch, device, int(n), args.repeats, peaks) for n in args.candidates.split(",")],
    }
    if device.type != "cuda":
        result["cuda_graphs"] = "not run: no CUDA device"
    print(json.dumps(result))


if __name__ == "__main__":
    main()
