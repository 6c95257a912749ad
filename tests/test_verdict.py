"""The comparison's verdict: what the MLflow UI shows on the comparison run."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_report import _study
from tune_app.comparison.html import write_html
from tune_app.comparison.verdict import metric_key, verdict
from tune_app.comparison.writer import write_report


def test_the_verdict_names_the_best_strategy_with_metrics_and_paired_verdicts() -> None:
    # regret (min, optimum 0): gp clearly best over 6 seeds, random worst.
    study = _study(
        {
            "random": [3.0, 3.2, 2.9, 3.1, 3.3, 3.0],
            "gp": [1.0, 1.1, 0.9, 1.2, 1.0, 0.8],
            "optuna+asha": [2.0, 2.1, 1.9, 2.2, 2.0, 2.1],
        }
    )
    result = verdict(study, "random")
    assert result.best == "gp"
    assert result.tags["tune_app.best_strategy"] == "gp"
    assert result.summary.startswith("best: gp (mean rank 1.00 of 3")
    assert "too few seeds" not in result.summary  # 6 seeds
    assert result.metrics[metric_key("normalised_regret", "random")] == pytest.approx(1.0)
    assert result.metrics["normalised_regret/gp"] == pytest.approx(1.0 / 3.0833, rel=1e-3)
    assert "mean_rank/optuna_asha" in result.metrics  # '+' is not allowed in a metric name
    paired = result.tags["tune_app.paired_verdict"]
    assert "gp: better than baseline (6-0-0 over 6 seeds" in paired
    assert result.description.startswith("**Best: gp")
    assert "| gp |" in result.description and "`report/report.html`" in result.description


def test_without_the_baseline_there_is_no_paired_verdict() -> None:
    result = verdict(_study({"a": [1.0, 2.0], "b": [2.0, 1.5]}), "random")
    assert "tune_app.paired_verdict" not in result.tags
    assert result.best == "a"  # equal mean rank (1.5): the better mean wins


def test_the_html_report_inlines_its_images(tmp_path: Path) -> None:
    study = _study({"random": [3.0, 3.2], "gp": [1.0, 1.1]})
    md = write_report(study, tmp_path, "random")
    page = write_html(md).read_text()
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs and page.count("data:image/png;base64,") == len(pngs)
    assert "<table>" in page and "<h1>" in page
    assert not any(f'src="{name}"' in page for name in pngs)


def test_too_few_seeds_is_said_once() -> None:
    result = verdict(_study({"random": [3.0], "gp": [1.0], "asha": [2.0]}), "random")
    assert result.tags["tune_app.paired_verdict"] == (
        "vs random: every strategy: too few seeds to conclude (1 pairs; need >= 6)"
    )
    assert result.summary.endswith("too few seeds for a paired verdict (need >= 6)")
