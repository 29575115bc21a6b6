#!/usr/bin/env python3
"""The project's benchmark suite: writes ``benchmarks/results.json`` and
``benchmarks/results.md``, each naming the machine it ran on.

Sections (``--only`` picks some):

* ``transact``: TransAct against the padded ``nn.TransformerEncoder`` reference, training
  and evaluation, full and skewed lengths (``transact_bench.py``).
* ``sequence_length``: cost growth with the sequence length (25 to 1,000 actions, batch
  64, full-length sequences): ms per example for a training step and an evaluation
  forward, and the peak memory of a training step, ours and the reference. Each case runs
  in its own process; its peak is the rise of the process's peak resident memory (VmHWM,
  reset through ``/proc/self/clear_refs``) over its resident memory before the step.
* ``models``: the full training step through ``python -m torchrec_transact.train``
  (DistributedModelParallel, fused embedding optimizer, TrainPipelineSparseDist) for
  TransAct-DCN, the same model with no sequence, and TransAct-DLRM, on synthetic data:
  examples/s in one process, and in 2 processes under ``torchx run -s local_cwd`` (the
  same cores, one thread each).
* ``data``: examples/s of every data source (``data_bench.py``).
* ``serving``: request latency, p50 and p99, for 1, 100 and 1,000 candidates (a user with
  100 actions), the naive batched path (the model's forward on the sequence repeated per
  candidate) against the request scorer with user-side dedup, float32 and bfloat16; on
  CUDA also eager against CUDA graphs.

    python benchmarks/run_all.py                 # everything, 10.5 min on 2 cores
    python benchmarks/run_all.py --quick         # small sizes: checks the suite runs
    python benchmarks/run_all.py --only serving,sequence_length
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Tuple

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
SECTIONS = ("transact", "sequence_length", "models", "data", "serving")
TARGETS = {  # speedups against the reference, and shares of the matmul peak
    "full_length_dropout_0/train_fp32": "1.5x",
    "full_length_dropout_0/eval_fp32": "2x",
    "full_length_dropout_0/eval_compiled_fp32": "2x",
    "full_length_dropout_0/eval_bf16": "50% of bf16 peak",
    "full_length_dropout_0/eval_compiled_bf16": "50% of bf16 peak",
    "full_length_shared_cores/train_fp32": "1x",
    "full_length_shared_cores/eval_fp32": "1x",
    "skewed_shared_cores/train_fp32": "1x",
    "skewed_shared_cores/eval_fp32": "1x",
    "full_length_shared_cores/train_adaptive_fp32": "1x",
    "full_length_shared_cores/eval_adaptive_fp32": "1x",
    "skewed_shared_cores/train_adaptive_fp32": "1x",
    "skewed_shared_cores/eval_adaptive_fp32": "1x",
}


def machine() -> Dict[str, Any]:
    info: Dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu"] = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
        with open("/proc/meminfo") as f:
            kb = int(next(line.split()[1] for line in f if line.startswith("MemTotal")))
            info["memory_gb"] = round(kb / 2**20, 1)
    except (OSError, StopIteration):
        pass
    info["cuda"] = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return info


def percentiles(seconds: List[float]) -> Dict[str, float]:
    ms = np.asarray(seconds) * 1000.0
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "samples": len(ms)}


# ----------------------------------------------------------------- sequence length


def _sequence_models(
    length: int, batch_size: int
) -> Tuple[Dict[str, Callable[[], torch.Tensor]], Dict[str, torch.nn.Module]]:
    """Forward functions (and modules) of ours and the reference on one full-length batch."""
    from torchrec_transact import TransAct, TransActConfig
    from torchrec_transact.data import random_sequence_features
    from torchrec_transact.modules.reference import PaddedTransActReference

    torch.manual_seed(0)
    config = TransActConfig(num_action_types=8, num_items=100_000, max_seq_len=length, time_window_s=0.0)
    batch = random_sequence_features(
        torch.full((batch_size,), length), config.num_action_types, config.num_items,
        generator=torch.Generator().manual_seed(0),
    )
    ours, reference = TransAct(config), PaddedTransActReference(config)
    kjt = batch.kjt()
    actions, items, ages, valid = batch.padded(length)
    forwards = {
        "transact": lambda: ours(kjt),
        "reference": lambda: reference(actions, items, ages, batch.candidate_ids, valid),
    }
    return forwards, {"transact": ours, "reference": reference}


def _train_step(forward: Callable[[], torch.Tensor], module: torch.nn.Module) -> None:
    module.train()
    forward().sum().backward()
    module.zero_grad(set_to_none=True)


def sequence_peak(implementation: str, length: int, batch_size: int) -> Dict[str, float]:
    """Peak memory of one training step; meant to run in a fresh process."""
    forwards, modules = _sequence_models(length, batch_size)
    forward, module = forwards[implementation], modules[implementation]
    from bench_utils import step_peak_mb

    return {"train_peak_mb": step_peak_mb(lambda: _train_step(forward, module))}


def sequence_timing(length: int, batch_size: int, seconds: float) -> Dict[str, Dict[str, float]]:
    """ms per example of ours and the reference, interleaved round by round (at least 3
    rounds, until each has run ``seconds``), after one warm-up step each."""
    forwards, modules = _sequence_models(length, batch_size)
    result: Dict[str, Dict[str, float]] = {}
    for mode in ("train", "eval"):
        def run(name: str) -> None:
            if mode == "train":
                _train_step(forwards[name], modules[name])
            else:
                modules[name].eval()
                with torch.inference_mode():
                    forwards[name]()

        times: Dict[str, List[float]] = {name: [] for name in modules}
        for name in modules:
            run(name)
        while len(times["transact"]) < 3 or min(sum(t) for t in times.values()) < seconds:
            for name in modules:
                start = time.perf_counter()
                run(name)
                times[name].append(time.perf_counter() - start)
            if len(times["transact"]) >= 30:
                break
        for name, samples in times.items():
            result.setdefault(name, {})[f"{mode}_ms_per_example"] = statistics.median(samples) * 1000.0 / batch_size
    return result


def _child(*args: str) -> Dict[str, Any]:
    done = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:  # out of memory, say: record it, keep going
        return {"error": (done.stderr or f"exit {done.returncode}")[-500:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def sequence_length(quick: bool) -> Dict[str, Any]:
    lengths = [25, 50, 100] if quick else [25, 50, 100, 200, 500, 1000]
    batch_size = 64
    cases: Dict[str, Dict[str, Any]] = {}
    for length in lengths:
        timing = _child("timing", str(length), str(batch_size), "0.5" if quick else "3")
        for implementation in ("transact", "reference"):
            case = dict(timing.get(implementation, timing))
            case.update(_child("peak", implementation, str(length), str(batch_size)))
            cases[f"{implementation}_{length}"] = case
            print(f"  sequence length {length:>5} {implementation:>9}: {case}", flush=True)
    return {"batch_size": batch_size, "lengths": lengths, "cases": cases}


# ----------------------------------------------------------------- full models


def _train_rate(output_dir: str) -> float:
    """Mean examples/s of the logged training windows after the first (warm-up)."""
    with open(os.path.join(output_dir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    rates = [row["examples_per_s"] for row in rows if row["kind"] == "train"][1:]
    return float(statistics.mean(rates))


def models(quick: bool) -> Dict[str, Any]:
    steps, log_interval = (30, 10) if quick else (100, 20)
    common = ["--steps", str(steps), "--log-interval", str(log_interval), "--eval-batches", "1",
              "--eval-interval", "0", "--batch-size", "500"]
    variants = {
        "transact_dcn": ["--model", "dcn", "--encoder", "transact"],
        "no_sequence_dcn": ["--model", "dcn", "--encoder", "none"],
        "transact_dlrm": ["--model", "dlrm", "--encoder", "transact"],
    }
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")}
    results: Dict[str, Dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, flags in variants.items():
            entry: Dict[str, Any] = {}
            single = os.path.join(tmp, name + "_1")
            done = subprocess.run(
                [sys.executable, "-m", "torchrec_transact.train", *common, *flags, "--output-dir", single],
                capture_output=True, text=True, cwd=REPO, env=env,
            )
            entry["one_process"] = _train_rate(single) if done.returncode == 0 else done.stderr[-500:]
            double = os.path.join(tmp, name + "_2")
            done = subprocess.run(
                [os.path.join(os.path.dirname(sys.executable), "torchx"), "run", "--wait", "-s", "local_cwd",
                 "torchrec_transact/components.py:train", "--nproc_per_node", "2", "--",
                 *common, *flags, "--output-dir", double],
                capture_output=True, text=True, cwd=REPO, env=env,
            )
            entry["two_processes_torchx"] = _train_rate(double) if done.returncode == 0 else (done.stdout + done.stderr)[-500:]
            results[name] = entry
            print(f"  {name}: {entry}", flush=True)
    return {"steps": steps, "batch_size_per_process": 500, "examples_per_s": results}


# ----------------------------------------------------------------- serving


def serving(quick: bool) -> Dict[str, Any]:
    from torchrec_transact.serving import Predictor, ServingConfig
    from torchrec_transact.config import TrainConfig
    from torchrec_transact.models.factory import build_model
    from torchrec_transact.trainer import open_run_data

    config = TrainConfig()
    spec = open_run_data(config).model_spec()
    torch.manual_seed(0)
    model = build_model(spec, config, spec.tasks)  # latency does not depend on weights
    counts = {1: 100, 100: 40, 1000: 15} if quick else {1: 400, 100: 200, 1000: 60}
    results: Dict[str, Any] = {}
    from bench_utils import encoder_flops, matmul_peak, peak_step, share_of_peak

    peaks = {"fp32": matmul_peak(torch.float32), "bf16": matmul_peak(torch.bfloat16)}
    encoder_config = model.sequence_encoder.config
    variants: Dict[str, Predictor] = {
        "fp32": Predictor(model),
        "bf16": Predictor(model, ServingConfig(bfloat16=True)),
        "bf16_compiled": Predictor(model, ServingConfig(bfloat16=True, compile=True)),
    }
    for variant, predictor in variants.items():
        precision = variant[:4]
        for n, samples in counts.items():
            requests = [predictor.random_request(n, 150, seed=i) for i in range(4)]
            paths = {"dedup": predictor.score} if "compiled" in variant else {
                "naive": predictor.score_naive, "dedup": predictor.score}
            # [1024, 1024] products timed between the requests: the best is the peak.
            peak = peak_step(torch.float32 if precision == "fp32" else torch.bfloat16)
            times: Dict[str, List[float]] = {name: [] for name in [*paths, "peak"]}
            for name, fn in paths.items():
                for _ in range(3 if "compiled" in variant else 1):  # compiles each new shape
                    fn(requests[0])
            for i in range(samples):  # interleaved: a slow spell hits both paths alike
                for name, fn in paths.items():
                    start = time.perf_counter()
                    fn(requests[i % len(requests)])
                    times[name].append(time.perf_counter() - start)
                start = time.perf_counter()
                peak()
                times["peak"].append(time.perf_counter() - start)
            peak_times = times.pop("peak")
            entry = {name: percentiles(ts) for name, ts in times.items()}
            if "naive" in entry:
                entry["dedup_speedup_p50"] = entry["naive"]["p50_ms"] / entry["dedup"]["p50_ms"]
            # The naive path's encoder FLOPs (every candidate encodes all 100 actions) over
            # each request's latency, as a share of the best matmul peak: dedup counts.
            naive_flops = encoder_flops(encoder_config, torch.full((n,), config.max_seq_len))
            entry["share_of_peak"] = {path: share_of_peak(naive_flops, times[path], peak_times) for path in paths}
            results[f"{variant}_{n}"] = entry
            print(f"  serving {variant} {n:>5} candidates: {entry}", flush=True)
    if torch.cuda.is_available():
        for graphs in (False, True):
            predictor = Predictor(model, ServingConfig(device="cuda", cuda_graphs=graphs, pad_to_buckets=True))
            for n, samples in counts.items():
                request = predictor.random_request(n, 150, seed=0)
                for _ in range(3):
                    predictor.score(request)
                times = []
                for _ in range(samples * 2):
                    start = time.perf_counter()
                    predictor.score(request)
                    times.append(time.perf_counter() - start)
                results[f"cuda_{'graphs' if graphs else 'eager'}_{n}"] = percentiles(times)
    return {"events_per_user": 150, "sequence_length": config.max_seq_len, "results": results,
            "matmul_peak_gflops": {k: v / 1e9 for k, v in peaks.items()}}


# ----------------------------------------------------------------- report


def _ours(key: str) -> str:  # "eval_compiled_fp32" -> "transact_eval_compiled_fp32"
    return f"transact_{key}"


def _reference(key: str) -> str:  # the reference has no compiled or adaptive path: its plain step
    return f"reference_{key.replace('compiled_', '').replace('adaptive_', '')}"


def markdown(results: Dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        "# Benchmark results",
        "",
        f"Machine: {m.get('cpu', m['platform'])}, {m['cpu_cores']} cores, {m.get('memory_gb', '?')} GB, "
        f"torch {m['torch']} ({m['torch_threads']} threads, {m['cpu_capability']})"
        + (f", CUDA: {m['cuda']}" if m.get("cuda") else ", no GPU") + f". Run {results['date']}"
        + (" (--quick)" if results["quick"] else "") + ". `python benchmarks/run_all.py` regenerates it.",
    ]
    if "transact" in results:
        t = results["transact"]
        lines += ["", "## TransAct against the padded reference (batch 512, 100 actions)", "",
                  "Speedup: min-median-max over rounds of the reference's time over ours, same precision "
                  "and mode. Share: encoder FLOP/s on real tokens (the standard layer's count, which ours "
                  "undercuts: docs/benchmarks.md) over the best matmul peak of that precision timed among the "
                  "variants, ours / the reference. Compiled: `compile_encoder()`; adaptive: a `ThreadBudget`.", "",
                  "| case | step | speedup | share of peak, ours / reference | target |",
                  "| --- | --- | --- | --- | --- |"]
        for case, entry in t.items():
            if not isinstance(entry, dict) or "speedup_vs_reference" not in entry:
                continue
            for key, sp in entry["speedup_vs_reference"].items():
                shares = entry["encoder_flops_share_of_peak"]
                lines.append(
                    f"| {case.replace('_', ' ')} | {key.replace('_', ' ')} | {sp['min']:.2f}-{sp['median']:.2f}-"
                    f"{sp['max']:.2f}x | {100 * shares[_ours(key)]:.0f}% / {100 * shares[_reference(key)]:.0f}% "
                    f"| {TARGETS.get(f'{case}/{key}', '-')} |"
                )
        failures = sorted({f for e in t.values() if isinstance(e, dict) for f in e.get("compile_failures", [])})
        lines += ["", "Compiled rows: " + ("every one ran compiled (no torch.compile failure)." if not failures
                                           else "ran eager after a failure: " + "; ".join(failures))]
    if "sequence_length" in results:
        s = results["sequence_length"]
        lines += ["", f"## Cost growth with sequence length (batch {s['batch_size']}, full-length sequences)", "",
                  "| actions | train ms/example, ours | reference | eval ms/example, ours | reference "
                  "| train peak MB, ours | reference |", "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for length in s["lengths"]:
            ours, ref = s["cases"][f"transact_{length}"], s["cases"][f"reference_{length}"]

            def cell(case: Dict[str, Any], key: str) -> str:
                return "failed" if key not in case else f"{case[key]:.2f}" if key != "train_peak_mb" else f"{case[key]:.0f}"

            lines.append(
                f"| {length} | {cell(ours, 'train_ms_per_example')} | {cell(ref, 'train_ms_per_example')} "
                f"| {cell(ours, 'eval_ms_per_example')} | {cell(ref, 'eval_ms_per_example')} "
                f"| {cell(ours, 'train_peak_mb')} | {cell(ref, 'train_peak_mb')} |"
            )
    if "models" in results:
        r = results["models"]
        lines += ["", f"## Full training step (synthetic data, batch {r['batch_size_per_process']} per process, "
                  "DMP + fused optimizer + TrainPipelineSparseDist)", "",
                  "| model | examples/s, 1 process | 2 processes (torchx) |", "| --- | ---: | ---: |"]
        for name, entry in r["examples_per_s"].items():
            cells = [f"{v:,.0f}" if isinstance(v, float) else "failed" for v in entry.values()]
            lines.append(f"| {name} | {cells[0]} | {cells[1]} |")
    if "data" in results:
        d = results["data"]
        lines += ["", f"## Data pipelines (batch {d['batch_size']})", "",
                  "| source | examples/s | x default model's training |", "| --- | ---: | ---: |"]
        for name, speed in d["examples_per_s"].items():
            lines.append(f"| {name} | {speed:,.0f} | {d['feeds_x_model'][name]:.0f}x |")
        lines.append(f"| (default model, training) | {d['default_model_train_examples_per_s']:,.0f} | 1x |")
    if "serving" in results:
        r = results["serving"]["results"]
        lines += ["", "## Serving latency per request (user with 100 actions; default TransAct-DCN)", "",
                  "Share of peak: the naive path's encoder FLOPs over each dedup request's latency, as a share "
                  "of the precision's best matmul peak timed between the requests (median latency). Compiled: "
                  "`ServingConfig(compile=True)`, the dedup path only.", "",
                  "| variant | candidates | naive p50 / p99 ms | dedup p50 / p99 ms | dedup speedup (p50) "
                  "| dedup share of peak |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        for key, entry in r.items():
            if key.startswith("cuda"):
                continue
            variant, n = key.rsplit("_", 1)
            naive = (f"{entry['naive']['p50_ms']:.2f} / {entry['naive']['p99_ms']:.2f}" if "naive" in entry else "")
            speedup = f"{entry['dedup_speedup_p50']:.2f}x" if "dedup_speedup_p50" in entry else ""
            lines.append(
                f"| {variant} | {n} | {naive} | {entry['dedup']['p50_ms']:.2f} / {entry['dedup']['p99_ms']:.2f} "
                f"| {speedup} | {100 * entry['share_of_peak']['dedup']:.0f}% |"
            )
        cuda = {k: v for k, v in r.items() if k.startswith("cuda")}
        if cuda:
            lines += ["", "| CUDA | p50 ms | p99 ms |", "| --- | ---: | ---: |"]
            lines += [f"| {k} | {v['p50_ms']:.3f} | {v['p99_ms']:.3f} |" for k, v in cuda.items()]
        else:
            lines += ["", "CUDA (eager against CUDA graphs): not measured, no GPU on this machine."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: checks that the suite runs")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}")
    parser.add_argument(
        "--output", default=None,
        help="path stem of the .json and .md (default: benchmarks/results; with --quick, a temporary folder)",
    )
    parser.add_argument("--data-dir", default=os.environ.get("TRANSACT_DATA_DIR"),
                        help="the real data samples (default: $TRANSACT_DATA_DIR; unset: synthetic only)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # a child process of the sequence-length section
        kind, *rest = args.child
        if kind == "peak":
            print(json.dumps(sequence_peak(rest[0], int(rest[1]), int(rest[2]))))
        else:
            print(json.dumps(sequence_timing(int(rest[0]), int(rest[1]), float(rest[2]))))
        return

    import warnings

    warnings.filterwarnings("ignore")
    only = args.only.split(",")
    unknown = set(only) - set(SECTIONS)
    if unknown:
        parser.error(f"--only: unknown sections {sorted(unknown)}; known: {SECTIONS}")
    results: Dict[str, Any] = {"machine": machine(), "date": time.strftime("%Y-%m-%d"), "quick": args.quick}
    started = time.perf_counter()
    for section in SECTIONS:
        if section not in only:
            continue
        print(f"[{section}]", flush=True)
        if section == "transact":
            import transact_bench

            results[section] = (
                transact_bench.run(batch_size=64, repeats=2, warmup=1) if args.quick else transact_bench.run(repeats=15)
            )
        elif section == "sequence_length":
            results[section] = sequence_length(args.quick)
        elif section == "models":
            results[section] = models(args.quick)
        elif section == "data":
            import data_bench

            results[section] = data_bench.run(model_steps=3 if args.quick else 10, data_dir=args.data_dir)
        else:
            results[section] = serving(args.quick)
    results["seconds"] = time.perf_counter() - started
    if args.output is None:
        args.output = os.path.join(tempfile.mkdtemp(), "results") if args.quick else os.path.join(HERE, "results")
    with open(args.output + ".json", "w") as f:
        json.dump(results, f, indent=2)
    report = markdown(results)
    with open(args.output + ".md", "w") as f:
        f.write(report)
    print(report)


if __name__ == "__main__":
    main()
