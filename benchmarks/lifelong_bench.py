#!/usr/bin/env python3
"""TransAct V2's lifelong sequence: the cost of a training step and its peak memory, and
of serving a request.

The TransAct module alone (as ``transact_bench.py``), 100 realtime actions per example,
realtime only against + a lifelong sequence of ``--lifelong`` actions (10^4 by default) of
which the 32 nearest the candidate are selected, at batch 64 and 512, the lifelong items
looked up in the trained item table or in a frozen int8 table of pretrained vectors
(``lifelong_frozen_items``). A training step is
the forward and backward of the module (item lookup, selection, encoder). Each case runs in
its own process: the peak is the rise of the process's peak resident memory during one
step (VmHWM, reset before it); the time is the median of ``--repeats`` steps after one
warm-up. Serving: ``Predictor.score`` p50 for 1 user x 1,000 candidates of the default
TransAct-DCN, realtime only (with dedup) against + the lifelong sequence, interleaved, in
fp32 and bf16. Prints one JSON object.

    python benchmarks/lifelong_bench.py               # batch 64 and 512, 10^4 lifelong actions
    python benchmarks/lifelong_bench.py --quick       # batch 16, 1,000 lifelong actions
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from typing import Dict, List

import torch


def _kjt(batch_size: int, lifelong: int, g: torch.Generator, num_items: int = 100_000):
    from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

    n, m = batch_size * 100, batch_size * lifelong
    keys = ["action_type", "item_id", "candidate_item_id"]
    values = [torch.randint(0, 8, (n,), generator=g), torch.randint(0, num_items, (n,), generator=g),
              torch.randint(0, num_items, (batch_size,), generator=g)]
    ages = torch.rand(n, generator=g).mul_(86400.0).add_(1.0)
    weights = [ages, ages, torch.zeros(batch_size)]
    lengths = [torch.full((batch_size,), 100), torch.full((batch_size,), 100), torch.ones(batch_size, dtype=torch.long)]
    if lifelong:
        keys += ["lifelong_action_type", "lifelong_item_id"]
        life_ages = torch.rand(m, generator=g).mul_(3e7).add_(1e6).view(batch_size, lifelong).sort(1).values.view(-1)
        values += [torch.randint(0, 8, (m,), generator=g), torch.randint(0, num_items, (m,), generator=g)]
        weights += [life_ages, life_ages]
        lengths += [torch.full((batch_size,), lifelong)] * 2
    return KeyedJaggedTensor.from_lengths_sync(
        keys=keys, values=torch.cat(values), lengths=torch.cat(lengths).int(), weights=torch.cat(weights))


def case(batch_size: int, lifelong: int, repeats: int, frozen: int = 0) -> Dict[str, float]:
    """One case in this process: ms per training step and the step's peak memory."""
    from torchrec_transact import TransAct, TransActConfig

    torch.manual_seed(0)
    config = TransActConfig(num_action_types=8, num_items=100_000, time_window_s=0.0,
                            lifelong_select_k=32 if lifelong else 0, lifelong_max_len=max(lifelong, 1),
                            lifelong_frozen_items=bool(frozen))
    module = TransAct(config).train()
    if frozen:
        module.load_lifelong_items(torch.randn(config.num_items, config.item_embedding_dim))
    kjt = _kjt(batch_size, lifelong, torch.Generator().manual_seed(0))

    def step() -> None:
        module(kjt).sum().backward()
        module.zero_grad(set_to_none=True)

    from bench_utils import step_peak_mb

    peak_mb = step_peak_mb(step)
    times: List[float] = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {"train_step_ms": 1e3 * statistics.median(times), "train_peak_mb": peak_mb}


def serving(lifelong: int, candidates: int, samples: int) -> Dict[str, object]:
    """p50 of ``Predictor.score`` for 1 user x ``candidates``, realtime only (dedup) against
    + ``lifelong`` lifelong events (32 selected per candidate), fp32 and bf16, interleaved."""
    import numpy as np

    from torchrec_transact.config import TrainConfig
    from torchrec_transact.data.features import UserEvents
    from torchrec_transact.models.factory import build_model
    from torchrec_transact.serving import Predictor, ServingConfig
    from torchrec_transact.trainer import open_run_data

    result: Dict[str, object] = {"candidates": candidates, "lifelong_events": lifelong}
    configs = {"realtime_only": TrainConfig(),
               "lifelong": TrainConfig(lifelong_history=1, lifelong_select_k=32, lifelong_max_len=lifelong)}
    for precision in ("fp32", "bf16"):
        predictors = {}
        for name, config in configs.items():
            spec = open_run_data(config).model_spec()
            torch.manual_seed(0)
            model = build_model(spec, config, spec.tasks)
            predictors[name] = Predictor(model, ServingConfig(bfloat16=precision == "bf16"))
        request = predictors["lifelong"].random_request(candidates, 150, seed=0)
        rng = np.random.default_rng(0)
        request.lifelong = UserEvents(float(request.request_time) - rng.uniform(1e6, 3e7, lifelong),
                                      rng.integers(0, 3, lifelong), rng.integers(0, 20_000, lifelong))
        times: Dict[str, List[float]] = {name: [] for name in predictors}
        for predictor in predictors.values():
            predictor.score(request)
        for _ in range(samples):
            for name, predictor in predictors.items():
                start = time.perf_counter()
                predictor.score(request)
                times[name].append(time.perf_counter() - start)
        p50 = {name: 1e3 * statistics.median(t) for name, t in times.items()}
        result[precision] = {"p50_ms": p50, "ratio": p50["lifelong"] / p50["realtime_only"]}
    return result


def run(batch_sizes: List[int], lifelong: int, repeats: int) -> Dict[str, object]:
    result: Dict[str, object] = {
        "benchmark": "lifelong_training_step",
        "machine": {"platform": platform.platform(), "torch": torch.__version__, "threads": torch.get_num_threads()},
        "lifelong_actions": lifelong, "selected": 32, "realtime_actions": 100,
    }
    for batch_size in batch_sizes:
        entry = {}
        for name, length, frozen in (("realtime_only", 0, 0), ("lifelong", lifelong, 0),
                                     ("lifelong_frozen", lifelong, 1)):
            out = subprocess.run([sys.executable, __file__, "--child", str(batch_size), str(length), str(repeats),
                                  str(frozen)], capture_output=True, text=True, check=True)
            entry[name] = json.loads(out.stdout.strip().splitlines()[-1])
        for name in ("lifelong", "lifelong_frozen"):
            entry[f"{name}_step_ratio"] = entry[name]["train_step_ms"] / entry["realtime_only"]["train_step_ms"]
        result[f"batch_{batch_size}"] = entry
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lifelong", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="batch 16, 1,000 lifelong actions, 2 repeats")
    parser.add_argument("--child", nargs=4, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(case(*args.child)))
        return
    if args.quick:
        result = run([16], 1_000, 2)
        result["serving"] = serving(1_000, 50, 3)
    else:
        result = run([64, 512], args.lifelong, args.repeats)
        result["serving"] = serving(args.lifelong, 1_000, 15)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main()
