#!/usr/bin/env python3
"""The paper's offline comparison, on any data source: sequence encoders and TransAct's
parts, each trained with the same budget through the training entry point, several seeds.

    python -m torchrec_transact.ablation --data all     # every dataset, ~25 min on 2 cores
    python -m torchrec_transact.ablation --data synthetic --seeds 3
    python -m torchrec_transact.ablation --data movielens --data-path ml-100k.inter
    python -m torchrec_transact.ablation --data criteo --data-path train.tsv
    python -m torchrec_transact.ablation --quick        # avg_pool against transact, ~1 min
    python -m torchrec_transact.ablation --variants transact,bst -- --steps 400 --dense-lr 5e-4

Flags after ``--`` go to every training run, after the dataset's budget, so they override
it. MovieLens and Criteo are read from ``--data-dir`` (default ``$TRANSACT_DATA_DIR``)
when ``--data-path`` is not given.

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
import contextlib
import dataclasses
import functools
import io
import json
import math
import multiprocessing
import os
import statistics
import sys
import time
from concurrent.futures import as_completed, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from torchrec_transact import train


@dataclass(frozen=True)
class Variant:
    """One row of the comparison: training flags on top of the dataset's budget."""

    name: str
    flags: Tuple[str, ...]
    description: str


ENCODERS: Tuple[Variant, ...] = tuple(
    Variant(name, ("--encoder", name), description)
    for name, description in (
        ("none", "no sequence"),
        ("avg_pool", "average pooling"),
        ("cnn", "CNN"),
        ("rnn", "RNN (GRU)"),
        ("lstm", "LSTM"),
        ("vanilla_transformer", "vanilla transformer"),
        ("bst", "BST (candidate appended, positions)"),
        ("transact", "TransAct"),
    )
)
PARTS: Tuple[Variant, ...] = (
    Variant("no_action_embedding", ("--action-embedding-dim", "0"), "TransAct, no action embedding"),
    Variant("append_fusion", ("--early-fusion", "append"), "TransAct, candidate appended, not concatenated"),
    Variant("no_time_window", ("--time-window-s", "0"), "TransAct, no time-window mask"),
    Variant("k1", ("--latest-k", "1"), "TransAct, K = 1 + max pool"),
    # Every output token is 100 x 96 features: a full-rank cross net over them would hold
    # 3 x 9.7k^2 weights (3.4 GB with Adam's state, by arithmetic), so this pair
    # compares compression on a low-rank (128) cross net.
    Variant("low_rank_dcn", ("--dcn-low-rank-dim", "128"), "TransAct, low-rank (128) DCN"),
    Variant(
        "no_compression", ("--latest-k", "100", "--no-max-pool", "--dcn-low-rank-dim", "128"),
        "TransAct, all 100 output tokens, low-rank (128) DCN",
    ),
    Variant("seq_len_50", ("--max-seq-len", "50"), "TransAct, 50 actions"),
    Variant("seq_len_25", ("--max-seq-len", "25"), "TransAct, 25 actions"),
)
CRITEO: Tuple[Variant, ...] = (
    Variant("dlrm_none", ("--model", "dlrm", "--encoder", "none"), "DLRM"),
    Variant("dlrm_transact", ("--model", "dlrm", "--encoder", "transact"), "DLRM + TransAct"),
    Variant("dcn_none", ("--model", "dcn", "--encoder", "none"), "DCN-V2"),
    Variant("dcn_transact", ("--model", "dcn", "--encoder", "transact"), "DCN-V2 + TransAct"),
)
BASELINE = "avg_pool"


DATASETS = ("synthetic", "movielens", "criteo")
# Where --data-dir holds each real sample (the layout of ../shared/data).
SAMPLE_PATHS = {"movielens": "movielens_100k/ml-100k.inter", "criteo": "criteo_tiny/train.tsv"}


@dataclass(frozen=True)
class Budget:
    """What every variant of one dataset trains with, and what the report shows.

    Args:
        flags (Tuple[str, ...]): training flags of every run.
        metrics (Tuple[Tuple[str, bool], ...]): (metric, higher is better) columns of the
            table; the first two are charted and judged against the baselines.
    """

    flags: Tuple[str, ...]
    metrics: Tuple[Tuple[str, bool], ...]


# HIT@3 on the positive head (higher is better) and on hide (lower), then AUC.
_HIT_METRICS = (("hit@3-save", True), ("hit@3-hide", False), ("auc-save", True), ("auc-hide", True))


def budget(data: str, quick: bool) -> Budget:
    """The training budget of a dataset, chosen so that the full ablation of every
    dataset (``--data all``) runs in under 30 minutes on 2 CPU cores. Evaluation sets are
    large because HIT@3 on hide counts rare events: its spread over seeds is mostly
    evaluation noise when a run sees a few hundred requests."""
    if data == "synthetic":
        steps, eval_batches = (100, 40) if quick else (200, 100)
        flags = ("--steps", str(steps), "--batch-size", "200", "--eval-batches", str(eval_batches))
        return Budget(flags, _HIT_METRICS)
    if data == "movielens":
        # 200 steps: half an epoch of the 80k training examples; 100 batches: every
        # evaluation request (19.7k examples).
        flags = ("--steps", "40" if quick else "200", "--batch-size", "200", "--eval-batches", "100")
        return Budget(flags, _HIT_METRICS)
    if data == "criteo":
        # One candidate per request: HIT@3 would count that candidate's label, so the
        # report gives AUC and normalised entropy instead.
        # One epoch of the sample's 1,800 training rows (the DLRM practice: a second
        # pass over Criteo overfits; 60 steps here gave train loss 0.28, eval loss 1.66).
        # For a larger file pass `-- --steps N`.
        flags = ("--steps", "10" if quick else "18", "--batch-size", "100", "--eval-batches", "2")
        return Budget(flags, (("auc-click", True), ("ne-click", False)))
    raise ValueError(f"--data {data!r}: expected one of {DATASETS}")


def default_variants(data: str, quick: bool) -> List[Variant]:
    if data == "criteo":
        return list(CRITEO)
    if quick:
        return [v for v in ENCODERS if v.name in (BASELINE, "transact")]
    if data == "synthetic":
        return list(ENCODERS) + list(PARTS)
    return list(ENCODERS) + [v for v in PARTS if v.name == "no_time_window"]


def comparisons(data: str) -> List[Tuple[str, str]]:
    """(ours, other) pairs the verdict judges."""
    if data == "criteo":
        return [("dlrm_transact", "dlrm_none"), ("dcn_transact", "dcn_none")]
    return [("transact", v.name) for v in ENCODERS if v.name != "transact"]


# ----------------------------------------------------------------- the rabbit hole


def recent_category_share(run_dir: str, num_categories: int, top: int = 3) -> float:
    """Share of each evaluation request's top ``top`` candidates (ranked by the first
    task, as HIT@K ranks) whose category is that of the user's most recent action;
    requests with no action are left out. Synthetic data (category = item %
    ``num_categories``); the model and its config come from the run's checkpoint."""
    from torchrec_transact.models import TransActTrain
    from torchrec_transact.serving import load_trained_model

    trained, info = load_trained_model(run_dir)
    config = train.TrainConfig(**info["config"])
    model = TransActTrain(trained.eval())
    shares: List[float] = []
    with torch.no_grad():
        for batch in train.data_spec(config).evaluation(0, 1):
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


def run_variant(
    data: str,
    data_path: Optional[str],
    variant: Variant,
    seed: int,
    quick: bool,
    run_dir: str,
    train_flags: Sequence[str] = (),
) -> Dict[str, float]:
    """Trains one variant with one seed through the training entry point; its final
    evaluation metrics (plus the rabbit-hole share on synthetic data). ``train_flags``
    come last, so they override the budget and the variant's flags."""
    argv = ["--data", data, *budget(data, quick).flags, *variant.flags, "--seed", str(seed),
            "--eval-interval", "0", "--log-interval", "1000000", "--output-dir", run_dir,
            *train_flags]
    if data_path:
        argv += ["--data-path", data_path]
    with contextlib.redirect_stdout(io.StringIO()):  # the per-run table; the summary says it all
        metrics = dict(next(iter(train.main(argv).values())))
    metrics.pop("state_sha256", None)
    if data == "synthetic":
        from torchrec_transact.data.synthetic import SyntheticConfig

        metrics["recent_category_top3"] = recent_category_share(run_dir, SyntheticConfig().num_categories)
    return metrics


def _run_job(data: str, data_path: Optional[str], quick: bool, output_dir: str,
             train_flags: Tuple[str, ...], variant: Variant, seed: int) -> Dict[str, float]:
    run_dir = os.path.join(output_dir, "runs", variant.name, f"seed{seed}")
    return run_variant(data, data_path, variant, seed, quick, run_dir, train_flags)


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
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k.startswith(("hit", "auc", "recent")))
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


def summarise(runs: Dict[str, List[Dict[str, float]]]) -> Dict[str, Dict[str, Dict[str, float]]]:
    """Mean, standard deviation, min and max over seeds of every metric of every variant."""
    summary: Dict[str, Dict[str, Dict[str, float]]] = {}
    for name, seeds in runs.items():
        summary[name] = {}
        for metric in seeds[0]:
            values = [run[metric] for run in seeds if isinstance(run.get(metric), (int, float))]
            if values:
                summary[name][metric] = {
                    "mean": statistics.mean(values),
                    "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                    "min": min(values),
                    "max": max(values),
                }
    return summary


def _cell(stats: Optional[Dict[str, float]], baseline: Optional[Dict[str, float]], digits: int = 3) -> str:
    if stats is None:
        return "-"
    text = f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"
    if baseline is not None and baseline["mean"] and not math.isnan(stats["mean"]):
        text += f" ({100.0 * (stats['mean'] / baseline['mean'] - 1.0):+.1f}%)"
    return text


def markdown(
    data: str,
    variants: Sequence[Variant],
    summary: Dict[str, Dict[str, Dict[str, float]]],
    setup: Dict[str, Any],
) -> str:
    """The table: one row per variant, mean ± std over seeds and the change against
    average pooling (where it ran)."""
    b = budget(data, setup["quick"])
    baseline = summary.get(BASELINE)
    metrics = [m for m, _ in b.metrics]
    lower = [m for m, higher in b.metrics if not higher]
    has_share = any("recent_category_top3" in v for v in summary.values())
    header = ["variant", *metrics] + (["top-3 from the last action's category"] if has_share else [])
    ranking = (
        " HIT@3 counts each task's positives among a request's 3 candidates ranked first by the"
        " first task's probability." if any(m.startswith("hit@3") for m in metrics) else ""
    )
    lines = [
        f"# Ablation on {data}: {setup['seeds']} seed(s), "
        f"{' '.join(setup.get('flags', b.flags))} per run{' (--quick)' if setup['quick'] else ''}",
        "",
        "Mean ± standard deviation over seeds"
        + ("; in brackets the change against average pooling." if baseline else ".")
        + ranking
        + (f" Lower is better for {', '.join(lower)}." if lower else "")
        + f" {setup['machine']}, {setup['minutes']:.1f} minutes."
        + f" Regenerate: `{setup['command']}`.",
        "",
        "| " + " | ".join(header) + " |",
        "| --- |" + " ---: |" * (len(header) - 1),
    ]
    for variant in variants:
        row = summary.get(variant.name, {})
        reference = baseline if variant.name != BASELINE else None
        cells = [_cell(row.get(m), reference.get(m) if reference else None) for m in metrics]
        if has_share:
            cells.append(_cell(row.get("recent_category_top3"), None))
        lines.append(f"| {variant.description} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def verdict(
    summary: Dict[str, Dict[str, Dict[str, float]]],
    metrics: Sequence[Tuple[str, bool]],
    pairs: Sequence[Tuple[str, str]],
) -> List[str]:
    """For each (ours, other) pair and metric (name, higher is better): better beyond the
    seed spread (the difference of the means exceeds the sum of the standard
    deviations), better within it, or not better."""
    lines = []
    for ours, other in pairs:
        if ours not in summary or other not in summary:
            continue
        for metric, higher in metrics:
            if metric not in summary[ours] or metric not in summary[other]:
                continue
            a, b = summary[ours][metric], summary[other][metric]
            gap = (a["mean"] - b["mean"]) * (1 if higher else -1)
            spread = a["std"] + b["std"]
            state = (
                "better, beyond the spread" if gap > spread
                else "better, within the spread" if gap > 0 else "not better"
            )
            lines.append(
                f"{ours} vs {other} on {metric}: {state} "
                f"({a['mean']:.3f} vs {b['mean']:.3f}, spread {spread:.3f})"
            )
    return lines


def chart(
    path: str,
    data: str,
    variants: Sequence[Variant],
    summary: Dict[str, Dict[str, Dict[str, float]]],
    highlight: Sequence[str] = ("transact",),
) -> bool:
    """Bar chart of the dataset's two main metrics per variant, with the seed spread.
    Returns False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    shown = [v for v in variants if v.name in summary]
    metrics = [m for m in budget(data, False).metrics[:2] if m[0] in summary[shown[0].name]]
    figure, axes = plt.subplots(1, len(metrics), figsize=(6.5 * len(metrics), 0.45 * len(shown) + 1.6))
    axes = [axes] if len(metrics) == 1 else list(axes)
    for axis, (metric, higher) in zip(axes, metrics):
        means = [summary[v.name][metric]["mean"] for v in shown]
        stds = [summary[v.name][metric]["std"] for v in shown]
        colours = ["#c0392b" if v.name in highlight else "#7f8c8d" for v in shown]
        axis.barh([v.description for v in shown], means, xerr=stds, color=colours, capsize=3)
        axis.invert_yaxis()
        axis.set_title(f"{metric}, {data} ({'higher' if higher else 'lower'} is better)", fontsize=10)
        lo = min(m - s for m, s in zip(means, stds))
        hi = max(m + s for m, s in zip(means, stds))
        axis.set_xlim(max(0.0, lo - 0.1 * (hi - lo + 1e-9)), hi + 0.1 * (hi - lo + 1e-9))
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def _machine() -> str:
    import platform

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"


def run_dataset(
    data: str,
    data_path: Optional[str],
    variants: Sequence[Variant],
    seeds: int,
    quick: bool,
    output_dir: str,
    workers: int,
    train_flags: Sequence[str],
    command: str,
) -> Tuple[Dict[str, Any], str]:
    """Every variant x seed of one dataset; writes ablation.json, ablation.md and
    ablation.png to ``output_dir``. Returns the JSON result and the markdown report."""
    os.makedirs(output_dir, exist_ok=True)
    started = time.perf_counter()
    run = functools.partial(_run_job, data, data_path, quick, output_dir, tuple(train_flags))
    runs = run_all([(v, seed) for v in variants for seed in range(seeds)], run, workers)
    summary = summarise(runs)
    b = budget(data, quick)
    setup = {
        "data": data, "data_path": data_path, "seeds": seeds, "quick": quick,
        "flags": list(b.flags) + list(train_flags), "workers": workers,
        "minutes": (time.perf_counter() - started) / 60.0, "machine": _machine(), "command": command,
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
    parser.add_argument("--data", default="synthetic", choices=[*DATASETS, "all"])
    parser.add_argument("--data-path", help="the event log or Criteo TSV (one dataset)")
    parser.add_argument(
        "--data-dir", default=os.environ.get("TRANSACT_DATA_DIR", os.path.join("..", "shared", "data")),
        help="where the real samples lie when --data-path is not given: "
        + ", ".join(f"{k}: <dir>/{v}" for k, v in SAMPLE_PATHS.items()),
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--variants", help="comma-separated names (default: all of the dataset)")
    parser.add_argument("--quick", action="store_true", help="avg_pool against transact, a small budget")
    parser.add_argument("--output-dir", default="outputs/ablation")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="runs trained at once, each in its own process")
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    args, train_flags = parser.parse_args(argv[:split]), argv[split + 1:]
    known = {v.name: v for v in ENCODERS + PARTS + CRITEO}
    chosen = args.variants.split(",") if args.variants else None
    if chosen and any(n not in known for n in chosen):
        parser.error(f"--variants: unknown {[n for n in chosen if n not in known]}; known: {sorted(known)}")
    datasets = list(DATASETS) if args.data == "all" else [args.data]
    if args.data == "all" and args.data_path:
        parser.error("--data all reads every sample from --data-dir; --data-path is for one dataset")
    command = "python -m torchrec_transact.ablation " + " ".join(argv)
    results: Dict[str, Any] = {}
    reports: List[str] = []
    for data in datasets:
        path = args.data_path
        if data != "synthetic" and not path:
            path = os.path.join(args.data_dir, SAMPLE_PATHS[data])
            if not os.path.exists(path):
                parser.error(f"--data {data}: no {path}; give --data-path or --data-dir")
        variants = [known[n] for n in chosen] if chosen else default_variants(data, args.quick)
        out = os.path.join(args.output_dir, data) if args.data == "all" else args.output_dir
        results[data], report = run_dataset(
            data, path, variants, args.seeds, args.quick, out, args.workers, train_flags, command
        )
        reports.append(report)
        print(report, flush=True)
    if args.data == "all":
        with open(os.path.join(args.output_dir, "ablation.md"), "w") as f:
            f.write("\n".join(reports))
        return results
    return results[args.data]


if __name__ == "__main__":
    main()
