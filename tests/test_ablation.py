"""The ablation runner: the quick comparison on synthetic data, and the report."""

import json
import os

from torchrec_transact.ablation import ENCODERS, main, markdown, summarise, verdict


def test_quick_ablation_transact_beats_average_pooling(tmp_path) -> None:
    result = main(["--quick", "--seeds", "2", "--output-dir", str(tmp_path)])
    runs = result["runs"]
    assert set(runs) == {"avg_pool", "transact"}
    for seed in range(2):  # every seed, not only on average
        assert runs["transact"][seed]["hit@3-save"] > runs["avg_pool"][seed]["hit@3-save"], runs
    with open(tmp_path / "ablation.json") as f:
        assert json.load(f)["summary"]["transact"]["hit@3-save"]["mean"] > 0
    report = (tmp_path / "ablation.md").read_text()
    assert "| TransAct |" in report and "| average pooling |" in report
    assert 0.0 <= runs["transact"][0]["recent_category_top3"] <= 1.0
    assert os.path.exists(tmp_path / "runs" / "transact" / "seed1" / "checkpoints" / "latest")


def test_report_gives_spread_and_change_against_average_pooling() -> None:
    runs = {
        "avg_pool": [{"hit@3-save": 1.0, "hit@3-hide": 0.2, "auc-save": 0.7, "auc-hide": 0.6}] * 2,
        "transact": [
            {"hit@3-save": 1.2, "hit@3-hide": 0.1, "auc-save": 0.8, "auc-hide": 0.7},
            {"hit@3-save": 1.4, "hit@3-hide": 0.1, "auc-save": 0.8, "auc-hide": 0.7},
        ],
    }
    summary = summarise(runs)
    assert abs(summary["transact"]["hit@3-save"]["mean"] - 1.3) < 1e-12
    setup = {"quick": False, "seeds": 2, "machine": "test", "minutes": 0.0, "command": "x"}
    report = markdown("synthetic", [v for v in ENCODERS if v.name in runs], summary, setup)
    assert "| TransAct | 1.300 ± 0.141 (+30.0%) | 0.100 ± 0.000 (-50.0%) |" in report
    lines = verdict(summary, "save", "hide", ["avg_pool", "transact"])
    assert lines[0].startswith("transact vs avg_pool on hit@3-save: better, beyond the spread")
    assert lines[1].startswith("transact vs avg_pool on hit@3-hide: better, beyond the spread")
