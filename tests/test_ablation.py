"""The ablation runner: the quick comparison on synthetic data, and the report."""

import json
import os

import pytest

from torchrec_transact.ablation import budget, CRITEO, ENCODERS, main, markdown, summarise, verdict


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
    assert "Lower is better for hit@3-hide." in report
    lines = verdict(summary, budget("synthetic", False).metrics[:2], [("transact", "avg_pool")])
    assert lines[0].startswith("transact vs avg_pool on hit@3-save: better, beyond the spread")
    assert lines[1].startswith("transact vs avg_pool on hit@3-hide: better, beyond the spread")
    # Within the spread, and worse: one seed of 1.4 does not make 1.3 ± 0.14 beat 1.2 ± 0.1.
    close = summarise({"a": [{"m": 1.2}, {"m": 1.4}], "b": [{"m": 1.1}, {"m": 1.3}]})
    assert "better, within the spread" in verdict(close, [("m", True)], [("a", "b")])[0]
    assert "not better" in verdict(close, [("m", False)], [("a", "b")])[0]


def test_criteo_report_leaves_out_hit_at_3_with_one_candidate_per_request() -> None:
    """Criteo requests hold one candidate, so HIT@3 would only restate its label."""
    metrics = [m for m, _ in budget("criteo", False).metrics]
    assert metrics == ["auc-click", "ne-click"]
    runs = {v.name: [{"auc-click": 0.7, "ne-click": 0.9, "hit@3-click": 0.2}] * 2 for v in CRITEO}
    setup = {"quick": False, "seeds": 2, "machine": "test", "minutes": 0.0, "command": "x"}
    report = markdown("criteo", list(CRITEO), summarise(runs), setup)
    assert "hit@3" not in report.lower() and "| DLRM + TransAct | 0.700 ± 0.000 | 0.900 ± 0.000 |" in report


def test_unknown_variant_and_missing_sample_are_command_line_errors(tmp_path) -> None:
    with pytest.raises(SystemExit):
        main(["--variants", "transact,nope", "--output-dir", str(tmp_path)])
    with pytest.raises(SystemExit):
        main(["--data", "criteo", "--data-dir", str(tmp_path), "--output-dir", str(tmp_path)])


def test_the_training_window_is_chosen_on_validation_only(monkeypatch, tmp_path) -> None:
    """The window with the best validation AUC wins (ties to the smaller); the evaluation
    split's numbers play no part."""
    from torchrec_transact.ablation import runner
    from torchrec_transact.ablation.variants import WINDOW_CANDIDATES

    valid = {0.0: 0.70, 600.0: 0.74, 3600.0: 0.74, 86400.0: 0.71}
    evaluation = {0.0: 0.99, 600.0: 0.50, 3600.0: 0.50, 86400.0: 0.50}  # would pick 0 if read

    def fake_run_all(jobs, run, workers):
        return {v.name: [{"valid-auc-like": valid[v.overrides["time_window_s"]],
                          "auc-like": evaluation[v.overrides["time_window_s"]]}] for v, _ in jobs}

    monkeypatch.setattr(runner, "run_all", fake_run_all)
    window, scores = runner.tune_window("kuairand", "unused.tsv", False, str(tmp_path), 1, {})
    assert window == 600.0 and set(scores) == {f"{w:g}" for w in WINDOW_CANDIDATES}
    config = runner.variant_config("kuairand", "unused.tsv", ENCODERS[0], 0, False, str(tmp_path), {},
                                   {"time_window_s": window})
    assert config.time_window_s == 600.0 and config.early_stopping == 2 and config.eval_interval == 40
    # The no-window ablation keeps its own window: the variant comes after the tuned value.
    from torchrec_transact.ablation.variants import PARTS

    no_window = next(v for v in PARTS if v.name == "no_time_window")
    assert runner.variant_config("kuairand", "x", no_window, 0, False, "o", {}, {"time_window_s": 600.0}).time_window_s == 0


def test_the_setting_search_moves_one_setting_at_a_time_on_validation(monkeypatch, tmp_path) -> None:
    from torchrec_transact.ablation import runner
    from torchrec_transact.ablation.variants import ALL_VARIANTS

    seen = []

    def fake_run_all(jobs, run, workers):
        seen.extend(v.overrides for v, _ in jobs)
        return {v.name: [{"valid-auc-like": 0.8 + 0.01 * v.overrides.get("max_seq_len", 0) / 25,
                          "auc-like": 0.1}] for v, _ in jobs}

    monkeypatch.setattr(runner, "run_all", fake_run_all)
    encoders = [ALL_VARIANTS["transact"], ALL_VARIANTS["avg_pool"]]
    scores, report = runner.search_settings("kuairand", "x.tsv", encoders, False, str(tmp_path), 1, {},
                                            {"time_window_s": 600.0}, ["max_seq_len"])
    assert list(scores) == ["default", "max_seq_len 25", "max_seq_len 50"]
    assert scores["max_seq_len 50"] == pytest.approx({"transact": 0.82, "avg_pool": 0.82}) and scores["default"]["transact"] == 0.8
    assert {"encoder": "avg_pool", "max_seq_len": 25} in seen and len(seen) == 6
    assert "| max_seq_len 25 | 0.810 | 0.810 |" in report and "time_window_s 600.0" in report
    assert json.load(open(tmp_path / "search.json"))["scores"] == scores
