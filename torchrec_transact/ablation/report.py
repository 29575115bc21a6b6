#!/usr/bin/env python3
"""The ablation's report: mean and spread over seeds, the markdown table, the verdict
against the baselines, and the chart."""

import json
import math
import os
import statistics
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from torchrec_transact.ablation.variants import BASELINE, budget, Variant

def as_flags(overrides: Dict[str, Any]) -> str:
    """``TrainConfig`` fields as the flags that set them: ``{"batch_size": 200,
    "max_pool": False}`` -> ``--batch-size 200 --no-max-pool`` (lists as JSON)."""
    flags = []
    for name, value in overrides.items():
        flag = name.replace("_", "-")
        if isinstance(value, bool):
            flags.append(f"--{flag}" if value else f"--no-{flag}")
        else:
            flags.append(f"--{flag} {json.dumps(value) if isinstance(value, (list, dict)) else value}")
    return " ".join(flags)


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
        f"{as_flags(setup.get('overrides', b.overrides))} per run{' (--quick)' if setup['quick'] else ''}",
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


def machine() -> str:
    import platform

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
