"""compare() end to end on the tabular benchmark, the report rebuilt from MLflow, finalists."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import children
from tune_app import compare
from tune_app.benchmarks import get
from tune_app.cli import main
from tune_app.comparison import report
from tune_app.comparison.compare import fairness_warnings
from tune_app.comparison.finalists import Finalist, FoldTask, cross_validate, with_without
from tune_app.spaces import BUILTIN_DIR, load
from tune_app.tasks.digits_mlp import DigitsMLP

PARENT_TAG = "mlflow.parentRunId"
SPACE = BUILTIN_DIR / "benchmarks" / "digits_tabular.yaml"


@pytest.mark.slow
def test_gp_and_cmaes_compare_on_an_hpobench_table_with_discrete_values(
    ray_session, tracking_uri: str, tmp_path: Path
):
    """The new peers run through compare (Tune trials, the epoch ledger, MLflow) on a
    real tabular benchmark, and propose only the table's values."""
    bench = get("hpobench_segment")
    space = SPACE.parent / "hpobench_segment.yaml"
    comparison = compare(
        ["random", "gp", "cmaes"],
        space,
        seeds=[0],
        budget_epochs=6,
        num_workers=0,
        tracking_uri=tracking_uri,
        experiment="compare-hpobench",
        storage_path=tmp_path,
        verbose=False,
    )
    for r in comparison.results:
        assert r.epochs_spent == 6 and len(r.trials) == 6
        assert len(children(tracking_uri, r)) == 6
        for _, row in r.trials.iterrows():
            config = {p.name: row[f"config.{p.name}"] for p in bench.space.params}
            assert bench.space.contains(config), config
            assert bench.regret(bench.evaluate(config, 1)) >= 0
    table = report.final_table(report.from_comparison(comparison, optimum=bench.optimum))
    assert list(table.strategy) == ["random", "gp", "cmaes"]
    assert "duplicates mean" in table


@pytest.mark.slow
def test_compare_two_strategies_two_seeds_report_and_rebuild(
    ray_session, tracking_uri: str, tmp_path: Path, capsys
):
    bench = get("digits_tabular")
    comparison = compare(
        ["random", "asha"],
        SPACE,
        seeds=[0, 1],
        budget_epochs=18,
        num_workers=0,
        tracking_uri=tracking_uri,
        experiment="compare-e2e",
        storage_path=tmp_path,
        verbose=False,
    )
    assert [(r.strategy, r.seed) for r in comparison.results] == [
        ("random", 0),
        ("asha", 0),
        ("random", 1),
        ("asha", 1),
    ]
    client = MlflowClient(tracking_uri)
    parent = client.get_run(comparison.mlflow_run_id)
    assert parent.data.tags["tune_app.kind"] == "comparison"
    assert float(parent.data.params["optimum"]) == bench.optimum
    for r in comparison.results:
        assert client.get_run(r.mlflow_run_id).data.tags[PARENT_TAG] == parent.info.run_id
        kids = children(tracking_uri, r)
        assert len(kids) == len(r.trials) > 0
        assert r.epochs_spent == 18
        assert bench.regret(r.best_metric) >= 0
    logged = {Path(a.path).name for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report.md", "anytime_epochs.png", "heatmap.png", "final_table.csv"} <= logged
    assert "report.html" in logged
    page = Path(comparison.report_path).read_text()
    assert page.count("data:image/png;base64,") >= 3 and 'src="anytime' not in page
    top = {Path(a.path).name for a in client.list_artifacts(parent.info.run_id)}
    assert {"comparison.parquet", "comparison.csv"} <= top  # CSV: MLflow previews it
    # The verdict is on the comparison run: name, tags, description, metrics.
    assert comparison.verdict is not None
    best = parent.data.tags["tune_app.best_strategy"]
    assert best in ("random", "asha") and best == comparison.verdict.best
    assert parent.data.tags["mlflow.runName"].startswith(f"best: {best} · compare-")
    assert parent.data.tags["mlflow.note.content"].startswith("**Best: ")
    assert "vs random: every strategy: too few seeds" in parent.data.tags["tune_app.paired_verdict"]
    assert {"normalised_regret/random", "normalised_regret/asha"} <= set(parent.data.metrics)
    assert parent.data.metrics["normalised_regret/random"] == pytest.approx(1.0)
    assert sum(parent.data.metrics["mean_rank/" + n] for n in ("random", "asha")) == 3

    # The report built at the end of compare equals the one rebuilt from MLflow alone.
    built = report.from_comparison(comparison, optimum=bench.optimum)
    rebuilt, run_id = report.from_mlflow("compare-e2e", tracking_uri)
    assert run_id == parent.info.run_id
    pd.testing.assert_frame_equal(
        report.final_table(built, "random"), report.final_table(rebuilt, "random")
    )
    pd.testing.assert_frame_equal(report.anytime(built), report.anytime(rebuilt))
    curves = report.anytime(built)
    for name in ("random", "asha"):
        c = curves[curves.strategy == name]
        assert np.all(np.diff(c["mean"]) >= 0)  # accuracy: best so far never drops
        expected = np.mean([r.best_metric for r in comparison.results if r.strategy == name])
        assert c["mean"].iloc[-1] == pytest.approx(expected)

    out = tmp_path / "rebuilt"
    code = main(["report", run_id, "--tracking-uri", tracking_uri, "--out", str(out)])
    assert code == 0
    assert (out / "report.md").read_text() == comparison.report_path.with_suffix(".md").read_text()
    assert "too few seeds to conclude" in capsys.readouterr().out  # the paired verdict


def test_fairness_warnings_name_the_setting_to_change():
    space = load(SPACE)
    warn = fairness_warnings(["random", "optuna", "hyperopt"], space, 45, {})
    assert any("optuna: its 10 random start-up trials" in w for w in warn)
    assert any("hyperopt: its 20 random start-up trials" in w for w in warn)
    assert not any(w.startswith("random") for w in warn)
    assert fairness_warnings(["optuna"], space, 99, {}) == []


def test_folds_partition_the_pooled_data():
    base = DigitsMLP()
    n = sum(len(d) for d in base.load_data({}, 0))
    seen: list[int] = []
    for fold in range(3):
        tr, va = FoldTask(base, fold, 3).load_data({}, 0)
        assert len(tr) + len(va) == n
        assert not set(tr.indices) & set(va.indices)
        seen += list(va.indices)
    assert sorted(seen) == list(range(n))


@pytest.mark.slow
def test_cross_validation_and_with_without_train_for_real(ray_session):
    fixed = {"layers": 1, "activation": "relu", "batch_size": 64, "optimizer": "adam"}
    good = Finalist("random", 1, {"lr": 0.01, "hidden": 32, "dropout": 0.0}, 0.9)
    bad = Finalist("grid", 1, {"lr": 1e-5, "hidden": 8, "dropout": 0.0}, 0.1)
    cv = cross_validate(DigitsMLP(), [good, bad], fixed, "val_accuracy", folds=2, epochs=2)
    assert list(cv.strategy) == ["random", "grid"]
    good_cv, bad_cv = cv["cv val_accuracy mean"]
    assert good_cv > 0.8 > bad_cv  # the tuned config generalises across folds
    per, summary = with_without(
        DigitsMLP(), good.config, bad.config, fixed, "val_accuracy", "max", repeats=2, epochs=1
    )
    assert len(per) == 2 and (per["tuned"] > per["default"]).all()
    assert summary["verdict"].iloc[0].startswith("too few repeats")


DIGITS = BUILTIN_DIR / "digits_mlp.yaml"


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["compare", "--heatmap", "lr"], "--heatmap takes two parameter names X,Y"),
        (["compare", "--heatmap", "lr,nope"], "--heatmap parameter 'nope' is not in"),
        (["compare", "--heatmap-epochs", "1,x"], "--heatmap-epochs takes integers"),
        (["compare", "--heatmap-epochs", "0"], "--heatmap-epochs must be >= 1"),
        (["compare", "--cv-top", "-1"], "--cv-top must be >= 0"),
        (["compare", "--folds", "1", "--cv-top", "2"], "--folds must be >= 2"),
        (["compare", "--cv-epochs", "0"], "--cv-epochs must be >= 1"),
        (["compare", "--strategies", "random,random"], "lists a strategy twice"),
        (
            ["compare", "--space", str(SPACE), "--strategies", "random", "--cv-top", "1"],
            "lookup benchmark",
        ),
        (["report", "no-such-run-or-experiment"], "no MLflow store at"),
    ],
)
def test_comparison_bad_input_is_one_line_and_exit_2(
    argv: list[str], needle: str, capsys, tmp_path: Path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TUNE_APP_HOME")  # home = the cwd, as outside the tests
    if argv[0] == "compare" and "--space" not in argv:
        argv = [*argv, "--space", str(DIGITS)]
    argv = [*argv, "--tracking-uri", f"sqlite:///{tmp_path}/m.db"]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert needle in err
    assert not (tmp_path / "tune_runs").exists()  # nothing was started
