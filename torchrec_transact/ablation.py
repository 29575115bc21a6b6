#!/usr/bin/env python3
"""The paper's offline comparison, on any data source: sequence encoders and TransAct's
parts, each trained with the same budget through the training entry point, several seeds.

    python -m torchrec_transact.ablation --data synthetic --seeds 3
    python -m torchrec_transact.ablation --data movielens --data-path ml-100k.inter
    python -m torchrec_transact.ablation --data criteo --data-path train.tsv
    python -m torchrec_transact.ablation --quick        # avg_pool against transact, ~1 min

Variants (``--variants`` picks some): every sequence encoder of the registry (``none``,
``avg_pool``, ``cnn``, ``rnn``, ``lstm``, ``vanilla_transformer``, ``bst``, ``transact``)
and TransAct without one of its parts: ``no_action_embedding``, ``append_fusion`` (the
candidate as a token instead of concatenated to every token), ``no_time_window``, ``k1``
(one latest token + max pool), ``no_compression`` (every output token, no max pool), and
``seq_len_25`` / ``seq_len_50`` (against 100). On Criteo the variants are DLRM and DCN
with and without TransAct.

Writes to ``--output-dir``: ``ablation.json`` (every run's metrics), ``ablation.md`` (mean
and standard deviation over seeds of HIT@3 on the positive task (``save``) and on ``hide``,
AUC, and the change relative to average pooling, as the paper reports it) and
``ablation.png`` (the encoder comparison). On synthetic data it also measures the "rabbit
hole": the share of each request's top 3 that comes from the category of the user's most
recent action, with and without the time-window mask.
"""

import argparse
import contextlib
import dataclasses
import io
import json
import math
import os
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

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


@dataclass
class Budget:
    """What every variant of one dataset trains with."""

    flags: Tuple[str, ...]
    positive_task: str
    negative_task: Optional[str]


def budget(data: str, quick: bool) -> Budget:
    """The training budget of a dataset (chosen so that the full ablation of every
    dataset runs in under 30 minutes on 2 CPU cores)."""
    if data == "synthetic":
        steps, batch = (100, 200) if quick else (150, 200)
        flags = ("--steps", str(steps), "--batch-size", str(batch), "--eval-batches", "10")
        return Budget(flags, "save", "hide")
    if data == "movielens":
        flags = ("--steps", "40" if quick else "120", "--batch-size", "200", "--eval-batches", "20")
        return Budget(flags, "save", "hide")
    if data == "criteo":
        flags = ("--steps", "20" if quick else "60", "--batch-size", "100", "--eval-batches", "2")
        return Budget(flags, "click", None)
    raise ValueError(f"--data {data!r}: expected synthetic, movielens or criteo")


def default_variants(data: str, quick: bool) -> List[Variant]:
    if data == "criteo":
        return list(CRITEO)
    if quick:
        return [v for v in ENCODERS if v.name in (BASELINE, "transact")]
    return list(ENCODERS) + (list(PARTS) if data == "synthetic" else [])


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
    data: str, data_path: Optional[str], variant: Variant, seed: int, quick: bool, run_dir: str
) -> Dict[str, float]:
    """Trains one variant with one seed through the training entry point; its final
    evaluation metrics (plus the rabbit-hole share on synthetic data)."""
    argv = ["--data", data, *budget(data, quick).flags, *variant.flags, "--seed", str(seed),
            "--eval-interval", "0", "--log-interval", "1000000", "--output-dir", run_dir]
    if data_path:
        argv += ["--data-path", data_path]
    with contextlib.redirect_stdout(io.StringIO()):  # the per-run table; the summary says it all
        metrics = dict(next(iter(train.main(argv).values())))
    metrics.pop("state_sha256", None)
    if data == "synthetic":
        from torchrec_transact.data.synthetic import SyntheticConfig

        metrics["recent_category_top3"] = recent_category_share(run_dir, SyntheticConfig().num_categories)
    return metrics


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
    b = budget(data, setup["quick"])
    baseline = summary.get(BASELINE)
    metrics = [f"hit@3-{b.positive_task}"] + ([f"hit@3-{b.negative_task}"] if b.negative_task else [])
    metrics += [f"auc-{b.positive_task}"] + ([f"auc-{b.negative_task}"] if b.negative_task else [])
    has_share = any("recent_category_top3" in v for v in summary.values())
    header = ["variant", *metrics] + (["top-3 from the last action's category"] if has_share else [])
    lines = [
        f"# Ablation on {data}: {setup['seeds']} seed(s), "
        f"{' '.join(b.flags)} per run{' (--quick)' if setup['quick'] else ''}",
        "",
        f"Mean ± standard deviation over seeds; in brackets the change against average pooling."
        f" HIT@3 ranks each request's candidates by the first task's probability; for "
        f"{b.negative_task or 'a negative task'} lower is better. {setup['machine']}, "
        f"{setup['minutes']:.1f} minutes. Regenerate: `{setup['command']}`.",
        "",
        "| " + " | ".join(header) + " |",
        "| --- |" + " ---: |" * (len(header) - 1),
    ]
    for variant in variants:
        row = summary.get(variant.name, {})
        cells = [_cell(row.get(m), baseline.get(m) if baseline and variant.name != BASELINE else None) for m in metrics]
        if has_share:
            cells.append(_cell(row.get("recent_category_top3"), None))
        lines.append(f"| {variant.description} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def verdict(summary: Dict[str, Dict[str, Dict[str, float]]], positive: str, negative: Optional[str],
            candidates: Sequence[str]) -> List[str]:
    """Where TransAct stands against each other encoder, beyond the seed spread (the
    difference of the means exceeds the sum of the standard deviations)."""
    lines = []
    if "transact" not in summary:
        return lines
    ours = summary["transact"]
    for name in candidates:
        if name == "transact" or name not in summary:
            continue
        for metric, higher in ((f"hit@3-{positive}", True), (f"hit@3-{negative}", False)):
            if (negative is None and not higher) or metric not in ours:
                continue
            a, b = ours[metric], summary[name][metric]
            gap = (a["mean"] - b["mean"]) * (1 if higher else -1)
            spread = a["std"] + b["std"]
            state = "better, beyond the spread" if gap > spread else "better, within the spread" if gap > 0 else "not better"
            lines.append(f"transact vs {name} on {metric}: {state} ({a['mean']:.3f} vs {b['mean']:.3f}, spread {spread:.3f})")
    return lines


def chart(path: str, data: str, variants: Sequence[Variant], summary: Dict[str, Dict[str, Dict[str, float]]]) -> bool:
    """Bar chart of HIT@3 (positive and negative task) per encoder, with the seed spread.
    Returns False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    b = budget(data, False)
    shown = [v for v in variants if v.name in summary]
    metrics = [f"hit@3-{b.positive_task}"] + ([f"hit@3-{b.negative_task}"] if b.negative_task else [])
    figure, axes = plt.subplots(1, len(metrics), figsize=(6.5 * len(metrics), 0.45 * len(shown) + 1.6))
    axes = [axes] if len(metrics) == 1 else list(axes)
    for axis, metric in zip(axes, metrics):
        means = [summary[v.name][metric]["mean"] for v in shown]
        stds = [summary[v.name][metric]["std"] for v in shown]
        colours = ["#c0392b" if v.name == "transact" else "#7f8c8d" for v in shown]
        axis.barh([v.description for v in shown], means, xerr=stds, color=colours, capsize=3)
        axis.invert_yaxis()
        better = "lower is better" if metric.endswith(str(b.negative_task)) else "higher is better"
        axis.set_title(f"{metric}, {data} ({better})", fontsize=10)
        lo = min(m - s for m, s in zip(means, stds))
        hi = max(m + s for m, s in zip(means, stds))
        axis.set_xlim(max(0.0, lo - 0.1 * (hi - lo + 1e-9)), hi + 0.1 * (hi - lo + 1e-9))
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m torchrec_transact.ablation", description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="synthetic", choices=["synthetic", "movielens", "criteo"])
    parser.add_argument("--data-path")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--variants", help="comma-separated names (default: all of the dataset)")
    parser.add_argument("--quick", action="store_true", help="avg_pool against transact, a small budget")
    parser.add_argument("--output-dir", default="outputs/ablation")
    args = parser.parse_args(argv)
    known = {v.name: v for v in ENCODERS + PARTS + CRITEO}
    if args.variants:
        unknown = [n for n in args.variants.split(",") if n not in known]
        if unknown:
            parser.error(f"--variants: unknown {unknown}; known: {sorted(known)}")
        variants = [known[n] for n in args.variants.split(",")]
    else:
        variants = default_variants(args.data, args.quick)
    if args.data != "synthetic" and not args.data_path:
        parser.error(f"--data {args.data} needs --data-path")
    os.makedirs(args.output_dir, exist_ok=True)
    started = time.perf_counter()
    runs: Dict[str, List[Dict[str, float]]] = {}
    for variant in variants:
        for seed in range(args.seeds):
            run_dir = os.path.join(args.output_dir, "runs", variant.name, f"seed{seed}")
            runs.setdefault(variant.name, []).append(
                run_variant(args.data, args.data_path, variant, seed, args.quick, run_dir)
            )
            print(f"[ablation] {variant.name} seed {seed}: "
                  + ", ".join(f"{k} {v:.4f}" for k, v in runs[variant.name][-1].items() if k.startswith(("hit", "auc", "recent"))),
                  flush=True)
    summary = summarise(runs)
    b = budget(args.data, args.quick)
    import platform

    setup = {
        "data": args.data, "seeds": args.seeds, "quick": args.quick, "flags": list(b.flags),
        "minutes": (time.perf_counter() - started) / 60.0,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "command": "python -m torchrec_transact.ablation " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    report = markdown(args.data, variants, summary, setup)
    findings = verdict(summary, b.positive_task, b.negative_task, [v.name for v in ENCODERS])
    if findings:
        report += "\n" + "\n".join(f"- {line}" for line in findings) + "\n"
    result = {"setup": setup, "variants": [dataclasses.asdict(v) for v in variants], "runs": runs, "summary": summary}
    with open(os.path.join(args.output_dir, "ablation.json"), "w") as f:
        json.dump(result, f, indent=2)
    with open(os.path.join(args.output_dir, "ablation.md"), "w") as f:
        f.write(report)
    chart(os.path.join(args.output_dir, "ablation.png"), args.data, [v for v in variants if v in ENCODERS + CRITEO], summary)
    print(report)
    return result


if __name__ == "__main__":
    main()
