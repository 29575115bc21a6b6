#!/usr/bin/env python3
"""The paper's offline comparison, on any data source: sequence encoders and TransAct's
parts, each trained with the same budget by the library's training loop, several seeds.

    python -m torchrec_transact.ablation --data all     # every dataset, ~25 min on 2 cores
    python -m torchrec_transact.ablation --data synthetic --seeds 3
    python -m torchrec_transact.ablation --data movielens --data-path ml-100k.inter
    python -m torchrec_transact.ablation --data criteo --data-path train.tsv
    python -m torchrec_transact.ablation --quick        # avg_pool against transact, ~1 min
    python -m torchrec_transact.ablation --variants transact,bst -- --steps 400 --dense-lr 5e-4
    python -m torchrec_transact.ablation --data kuairand --search   # settings, on validation

Flags after ``--`` (any ``transact-train`` flag) go to every training run, after the
dataset's budget, so they override it. Real samples are read from ``--data-path``, or
from ``--data-dir`` (default ``$TRANSACT_DATA_DIR``) in the layout of the project's
shared data folder.

Variants (``--variants`` picks some): every sequence encoder of the registry (``none``,
``avg_pool``, ``cnn``, ``rnn``, ``lstm``, ``vanilla_transformer``, ``bst``, ``transact``)
and TransAct without one of its parts: ``no_action_embedding``, ``append_fusion`` (the
candidate as a token instead of concatenated to every token), ``no_time_window``, ``k1``
(one latest token + max pool), ``no_compression`` (every output token, no max pool), and
``seq_len_25`` / ``seq_len_50`` (against 100). On Criteo the variants are DLRM and DCN
with and without TransAct. Every sequence encoder trains under the same random time
window (it is a mask on the input, not part of an encoder), so the encoder rows differ in
the encoder only; ``no_time_window`` shows what the window costs and what it buys.

Writes to ``--output-dir`` (``--data all``: one folder per dataset and a combined
``ablation.md``): ``ablation.json`` (every run's metrics), ``ablation.md`` (mean and
standard deviation over seeds of HIT@3 on the positive task (``save``) and on ``hide``,
AUC, and the change relative to average pooling, as the paper reports it; on Criteo, whose
requests hold one candidate each, AUC and normalised entropy instead of HIT@3) and
``ablation.png`` (the encoder comparison). On synthetic data it also measures the "rabbit
hole": the share of each request's top 3 that comes from the category of the user's most
recent action, with and without the time-window mask. Runs train ``--workers`` at a time,
each process on its share of the cores.
"""


import argparse
import dataclasses
import functools
import json
import multiprocessing
import os
import statistics
import sys
import time
from concurrent.futures import as_completed, ProcessPoolExecutor
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from torchrec_transact.ablation.report import chart, machine, markdown, summarise, verdict
from torchrec_transact.ablation.variants import ALL_VARIANTS, BASELINE, budget, comparisons, CRITEO, DATASETS
from torchrec_transact.ablation.variants import default_variants, ENCODERS, LOG_DATASETS, SAMPLE_PATHS, Variant
from torchrec_transact.ablation.variants import SEARCH_GRID, WINDOW_CANDIDATES
from torchrec_transact.config import ConfigError, make_config, parse_overrides, TrainConfig
from torchrec_transact.data.registry import data_sources, needs_path
from torchrec_transact.models.factory import load_trained_model
from torchrec_transact.models.train_wrapper import TransActTrain
from torchrec_transact.trainer import open_run_data, quiet_library_noise, train


# ----------------------------------------------------------------- the rabbit hole


def recent_category_share(run_dir: str, num_categories: int, top: int = 3) -> float:
    """Share of each evaluation request's top ``top`` candidates (ranked by the first
    task, as HIT@K ranks) whose category is that of the user's most recent action;
    requests with no action are left out. Synthetic data (category = item %
    ``num_categories``); the model and its config come from the run's checkpoint."""
    trained, info = load_trained_model(run_dir)
    config = TrainConfig(**info["config"])
    model = TransActTrain(trained.eval())
    shares: List[float] = []
    with torch.no_grad():
        for batch in open_run_data(config).evaluation(0, 1):
            _, (_, logits, _) = model(batch)
            items = batch.sequence_features["item_id"]
            lengths = items.lengths().long()
            has_action = lengths > 0
            first = torch.cumsum(lengths, 0) - lengths  # the most recent action's position
            recent = torch.zeros_like(lengths)
            recent[has_action] = items.values()[first[has_action]].long()
            same = (batch.sequence_features["candidate_item_id"].values() % num_categories) == (
                recent % num_categories
            )
            for request in torch.unique(batch.request_ids):
                rows = (batch.request_ids == request).nonzero().flatten()
                if bool(has_action[rows[0]]):
                    best = rows[torch.argsort(logits[rows, 0], descending=True)[:top]]
                    shares.append(float(same[best].float().mean()))
    return statistics.mean(shares) if shares else float("nan")



# ----------------------------------------------------------------- runs


def variant_config(
    data: str,
    data_path: Optional[str],
    variant: Variant,
    seed: int,
    quick: bool,
    run_dir: str,
    train_overrides: Optional[Dict[str, Any]] = None,
    tuned: Optional[Dict[str, Any]] = None,
) -> TrainConfig:
    """The training config of one (variant, seed): the dataset's budget, then the settings
    chosen on the validation split (``tuned``), then the variant, then ``train_overrides``
    (the flags after ``--``)."""
    return make_config({
        "data": data, "data_path": data_path, "eval_interval": 0, "log_interval": 10**6,
        **budget(data, quick).overrides, **(tuned or {}), **variant.overrides,
        "seed": seed, "output_dir": run_dir, **(train_overrides or {}),
    })


def run_variant(config: TrainConfig) -> Dict[str, float]:
    """Trains one (variant, seed) run; its final evaluation metrics (plus the rabbit-hole
    share on synthetic data)."""
    quiet_library_noise()
    metrics = dict(next(iter(train(config, verbose=False).values())))
    metrics.pop("state_sha256", None)
    if config.data == "synthetic":
        from torchrec_transact.data.synthetic import SyntheticConfig

        metrics["recent_category_top3"] = recent_category_share(config.output_dir, SyntheticConfig().num_categories)
    return metrics


def _run_job(data: str, data_path: Optional[str], quick: bool, output_dir: str, train_overrides: Dict[str, Any],
             tuned: Dict[str, Any], variant: Variant, seed: int) -> Dict[str, float]:
    run_dir = os.path.join(output_dir, "runs", variant.name, f"seed{seed}")
    return run_variant(variant_config(data, data_path, variant, seed, quick, run_dir, train_overrides, tuned))


def tune_window(data: str, data_path: Optional[str], quick: bool, output_dir: str, workers: int,
                train_overrides: Dict[str, Any]) -> Tuple[float, Dict[str, float]]:
    """The training window TransAct validates best with (seed 0): the highest validation
    AUC of the dataset's first task, ties to the smaller window. The evaluation split is
    never looked at. Returns the window and each candidate's validation AUC."""
    selection = budget(data, quick).selection
    trials = [Variant(f"window_{w:g}", {"encoder": "transact", "time_window_s": w}, f"window {w:g} s")
              for w in WINDOW_CANDIDATES]
    run = functools.partial(_run_job, data, data_path, quick, os.path.join(output_dir, "tuning"), train_overrides, {})
    runs = run_all([(t, 0) for t in trials], run, workers)
    scores = {t.name: runs[t.name][0].get(selection) for t in trials}
    valid = {w: s for w, s in zip(WINDOW_CANDIDATES, scores.values()) if isinstance(s, float)}
    if not valid:
        raise ValueError(f"--tune-window: {data} has no {selection} (is there a validation split?)")
    best = max(valid, key=lambda w: (valid[w], -w))
    return best, {f"{w:g}": s for w, s in valid.items()}


def search_settings(
    data: str,
    data_path: Optional[str],
    encoders: Sequence[Variant],
    quick: bool,
    output_dir: str,
    workers: int,
    train_overrides: Dict[str, Any],
    tuned: Dict[str, Any],
    names: Optional[Sequence[str]] = None,
) -> Tuple[Dict[str, Dict[str, Optional[float]]], str]:
    """Each setting of :data:`SEARCH_GRID` (``names``: those only) moved alone from the budget (and the ``tuned``
    window), for each encoder, seed 0, judged by the validation AUC of the dataset's first
    task; the evaluation split is never looked at. Writes ``search.json`` and
    ``search.md`` to ``output_dir``.

    Returns:
        Tuple[Dict[str, Dict[str, Optional[float]]], str]: setting -> encoder ->
        validation AUC (``"default"`` first), and the markdown table.
    """
    selection = budget(data, quick).selection
    settings: List[Tuple[str, Dict[str, Any]]] = [("default", {})] + [
        (f"{name} {value:g}", {name: value}) for name, values in SEARCH_GRID.items() for value in values
        if names is None or name in names
    ]
    trials = {
        (label, encoder.name): Variant(
            f"{encoder.name}__{label.replace(' ', '_')}", {**encoder.overrides, **change}, f"{encoder.description}, {label}"
        )
        for label, change in settings
        for encoder in encoders
    }
    run = functools.partial(_run_job, data, data_path, quick, os.path.join(output_dir, "search"), train_overrides, tuned)
    runs = run_all([(t, 0) for t in trials.values()], run, workers)
    scores = {
        label: {encoder.name: runs[trials[(label, encoder.name)].name][0].get(selection) for encoder in encoders}
        for label, _ in settings
    }
    base = {**budget(data, quick).overrides, **tuned, **train_overrides}
    lines = [
        f"Validation {selection[len('valid-'):]} on {data}, seed 0, one setting moved at a time from "
        f"the default ({', '.join(f'{k} {v}' for k, v in base.items())}).",
        "",
        "| setting | " + " | ".join(e.description for e in encoders) + " |",
        "| --- |" + " ---: |" * len(encoders),
    ]
    for label, row in scores.items():
        lines.append(f"| {label} | " + " | ".join("n/a" if v is None else f"{v:.3f}" for v in row.values()) + " |")
    report = "\n".join(lines) + "\n"
    os.makedirs(output_dir, exist_ok=True)
    with open(os.path.join(output_dir, "search.json"), "w") as f:
        json.dump({"data": data, "selection": selection, "base": base, "scores": scores}, f, indent=2)
    with open(os.path.join(output_dir, "search.md"), "w") as f:
        f.write(report)
    return scores, report


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def run_all(
    jobs: Sequence[Tuple[Variant, int]],
    run: Callable[[Variant, int], Dict[str, float]],
    workers: int,
) -> Dict[str, List[Dict[str, float]]]:
    """Every (variant, seed) job, ``workers`` at a time, each process on its share of the
    cores (small models train faster as two single-threaded processes than as one process
    with two threads). Returns the metrics of each variant's seeds, in seed order."""
    results: Dict[Tuple[str, int], Dict[str, float]] = {}

    def done(variant: Variant, seed: int, metrics: Dict[str, float]) -> None:
        results[(variant.name, seed)] = metrics
        shown = ", ".join(
            f"{k} {'n/a' if v is None else f'{v:.4f}'}" for k, v in metrics.items() if k.startswith(("hit", "auc", "recent"))
        )
        print(f"[ablation] {variant.name} seed {seed}: {shown}", flush=True)

    if workers <= 1:
        for variant, seed in jobs:
            done(variant, seed, run(variant, seed))
    else:
        threads = max(1, (os.cpu_count() or 1) // workers)
        with ProcessPoolExecutor(
            workers, mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker, initargs=(threads,),
        ) as pool:
            futures = {pool.submit(run, variant, seed): (variant, seed) for variant, seed in jobs}
            for future in as_completed(futures):
                done(*futures[future], future.result())
    runs: Dict[str, List[Dict[str, float]]] = {}
    for variant, seed in jobs:
        runs.setdefault(variant.name, []).append(results[(variant.name, seed)])
    return runs


def run_dataset(
    data: str,
    data_path: Optional[str],
    variants: Sequence[Variant],
    seeds: int,
    quick: bool,
    output_dir: str,
    workers: int,
    train_overrides: Dict[str, Any],
    command: str,
    tune: bool = False,
) -> Tuple[Dict[str, Any], str]:
    """Every variant x seed of one dataset; writes ablation.json, ablation.md and
    ablation.png to ``output_dir``. Returns the JSON result and the markdown report.
    ``tune``: first choose the training window on the validation split
    (:func:`tune_window`) and train every variant with it."""
    os.makedirs(output_dir, exist_ok=True)
    started = time.perf_counter()
    tuned: Dict[str, Any] = {}
    tuning: Dict[str, Any] = {}
    if tune:
        window, scores = tune_window(data, data_path, quick, output_dir, workers, train_overrides)
        tuned, tuning = {"time_window_s": window}, {"time_window_s": window, budget(data, quick).selection: scores}
        print(f"[ablation] {data}: training window {window:g} s chosen on validation ({scores})", flush=True)
    run = functools.partial(_run_job, data, data_path, quick, output_dir, train_overrides, tuned)
    runs = run_all([(v, seed) for v in variants for seed in range(seeds)], run, workers)
    summary = summarise(runs)
    b = budget(data, quick)
    setup = {
        "data": data, "data_path": data_path, "seeds": seeds, "quick": quick,
        "overrides": {**b.overrides, **tuned, **train_overrides}, "workers": workers, "tuning": tuning,
        "minutes": (time.perf_counter() - started) / 60.0, "machine": machine(), "command": command,
    }
    report = markdown(data, variants, summary, setup)
    findings = verdict(summary, b.metrics[:2], comparisons(data))
    if findings:
        report += "\n" + "\n".join(f"- {line}" for line in findings) + "\n"
    result = {"setup": setup, "variants": [dataclasses.asdict(v) for v in variants], "runs": runs, "summary": summary}
    with open(os.path.join(output_dir, "ablation.json"), "w") as f:
        json.dump(result, f, indent=2)
    with open(os.path.join(output_dir, "ablation.md"), "w") as f:
        f.write(report)
    charted = [v for v in variants if v in ENCODERS + CRITEO]
    highlight = ("transact", "dlrm_transact", "dcn_transact")
    chart(os.path.join(output_dir, "ablation.png"), data, charted or list(variants), summary, highlight)
    return result, report


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    """Command line; returns the JSON result of the dataset (``--data all``: a dict of
    them by dataset). Flags after ``--`` go to every training run, after the budget."""
    parser = argparse.ArgumentParser(prog="python -m torchrec_transact.ablation", description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="synthetic", help=f"one of {data_sources()}, or all ({', '.join(DATASETS)})")
    parser.add_argument("--data-path", help="the event log or Criteo TSV (one dataset)")
    parser.add_argument(
        "--data-dir", default=os.environ.get("TRANSACT_DATA_DIR"),
        help="where the real samples lie when --data-path is not given (default: $TRANSACT_DATA_DIR): "
        + ", ".join(f"{k}: <dir>/{v}" for k, v in SAMPLE_PATHS.items()),
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--tune-window", action="store_true",
                        help=f"choose the training window among {list(WINDOW_CANDIDATES)} s on the validation split first")
    parser.add_argument("--search", action="store_true",
                        help="instead of the comparison: move each setting of the search grid alone, for "
                        "--variants (default transact,avg_pool), seed 0, and table the validation AUC")
    parser.add_argument("--search-settings", help=f"--search: these settings only, comma-separated ({list(SEARCH_GRID)})")
    parser.add_argument("--variants", help="comma-separated names (default: all of the dataset)")
    parser.add_argument("--quick", action="store_true", help="avg_pool against transact, a small budget")
    parser.add_argument("--output-dir", default="outputs/ablation")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="runs trained at once, each in its own process")
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    try:
        train_overrides, _ = parse_overrides(argv[split + 1:])
    except ConfigError as error:
        parser.error(f"training flags after --: {error}")
    chosen = args.variants.split(",") if args.variants else None
    if chosen and any(n not in ALL_VARIANTS for n in chosen):
        unknown = [n for n in chosen if n not in ALL_VARIANTS]
        parser.error(f"--variants: unknown {unknown}; known: {sorted(ALL_VARIANTS)}")
    searched = args.search_settings.split(",") if args.search_settings else None
    if searched and any(n not in SEARCH_GRID for n in searched):
        parser.error(f"--search-settings: unknown {[n for n in searched if n not in SEARCH_GRID]}; known: {list(SEARCH_GRID)}")
    if args.data not in ("all", "logs") and args.data not in data_sources():
        parser.error(f"--data {args.data!r}: expected one of {data_sources()}, all or logs")
    datasets = list(DATASETS) if args.data == "all" else list(LOG_DATASETS) if args.data == "logs" else [args.data]
    if args.data in ("all", "logs") and args.data_path:
        parser.error(f"--data {args.data} reads every sample from --data-dir; --data-path is for one dataset")
    command = "python -m torchrec_transact.ablation " + " ".join(argv)
    plans = []
    for data in datasets:
        path = args.data_path
        if needs_path(data) and not path:
            if not args.data_dir or data not in SAMPLE_PATHS:
                parser.error(f"--data {data}: give --data-path, or --data-dir (or TRANSACT_DATA_DIR)")
            path = os.path.join(args.data_dir, SAMPLE_PATHS[data])
            if not os.path.exists(path):
                parser.error(f"--data {data}: no {path}; give --data-path or --data-dir")
        if chosen:
            variants = [ALL_VARIANTS[n] for n in chosen]
        elif args.search:
            variants = [ALL_VARIANTS["transact"], ALL_VARIANTS[BASELINE]]
        else:
            variants = default_variants(data, args.quick)
        for variant in variants:  # every run's config is checked before any run starts
            try:
                variant_config(data, path, variant, 0, args.quick, args.output_dir, train_overrides)
            except ConfigError as error:
                parser.error(f"--data {data}, variant {variant.name}: {error}")
        plans.append((data, path, variants))
    results: Dict[str, Any] = {}
    reports: List[str] = []
    for data, path, variants in plans:
        out = os.path.join(args.output_dir, data) if args.data in ("all", "logs") else args.output_dir
        if args.search:
            tuned: Dict[str, Any] = {}
            if args.tune_window:
                window, scores = tune_window(data, path, args.quick, out, args.workers, train_overrides)
                tuned = {"time_window_s": window}
                print(f"[ablation] {data}: training window {window:g} s chosen on validation ({scores})", flush=True)
            results[data], report = search_settings(
                data, path, variants, args.quick, out, args.workers, train_overrides, tuned, searched
            )
            reports.append(report)
            print(report, flush=True)
            continue
        results[data], report = run_dataset(
            data, path, variants, args.seeds, args.quick, out, args.workers, train_overrides, command, args.tune_window
        )
        reports.append(report)
        print(report, flush=True)
    if args.data in ("all", "logs"):
        with open(os.path.join(args.output_dir, "search.md" if args.search else "ablation.md"), "w") as f:
            f.write("\n".join(reports))
        return results
    return results[args.data]


if __name__ == "__main__":
    main()
