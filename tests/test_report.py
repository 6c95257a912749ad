"""Report math on small hand-made result sets whose answers are known."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tune_app.comparison import report
from tune_app.errors import ConfigError


def _study(bests: dict[str, list[float]], mode: str = "min", optimum: float | None = 0.0):
    """One run per (strategy, seed); each run reports its values as 1-epoch trials."""
    runs, hist, trials = [], [], []
    for name, values in bests.items():
        for seed, best in enumerate(values):
            # three trials: worse, the best, worse again; one epoch each
            sign = 1 if mode == "min" else -1
            vals = [best + sign * 2.0, best, best + sign * 1.0]
            running = []
            cur = math.inf if mode == "min" else -math.inf
            for v in vals:
                cur = min(cur, v) if mode == "min" else max(cur, v)
                running.append(cur)
            for i, (v, b) in enumerate(zip(vals, running, strict=True)):
                hist.append(
                    {
                        "strategy": name,
                        "seed": seed,
                        "epochs_spent": i + 1,
                        "wall_time_s": 0.5 * (i + 1),
                        "trial_id": f"t{i}",
                        "epoch": 1,
                        "value": v,
                        "best_so_far": b,
                    }
                )
                trials.append(
                    {
                        "strategy": name,
                        "seed": seed,
                        "trial": i,
                        "trial_id": f"t{i}",
                        "best_value": v,
                        "config.x": float(i),
                        "config.y": float(seed),
                    }
                )
            runs.append(
                {
                    "strategy": name,
                    "seed": seed,
                    "best": best,
                    "trials": 3,
                    "epochs_spent": 3,
                    "budget_epochs": 3,
                    "wall_time_s": 1.5,
                    "run_id": f"{name}{seed}",
                }
            )
    return report.Study(
        "value",
        mode,
        pd.DataFrame(runs),
        pd.DataFrame(hist),
        pd.DataFrame(trials),
        optimum=optimum,
    )


def test_regret_rank_and_normalised_regret():
    study = _study({"random": [4.0, 2.0, 6.0], "good": [1.0, 1.0, 1.0], "bad": [5.0, 3.0, 7.0]})
    table = report.final_table(study, baseline="random").set_index("strategy")
    assert table.loc["good", "regret mean"] == pytest.approx(1.0)
    assert table.loc["random", "regret mean"] == pytest.approx(4.0)
    assert table.loc["good", "normalised regret"] == pytest.approx(0.25)
    assert table.loc["random", "normalised regret"] == pytest.approx(1.0)
    assert table.loc["bad", "normalised regret"] == pytest.approx(5.0 / 4.0)
    assert list(table["mean rank"]) == [2.0, 1.0, 3.0]
    assert table.loc["random", "best value std"] == pytest.approx(2.0)


def test_ranks_share_ties_and_follow_mode():
    study = _study({"a": [1.0, 0.5], "b": [1.0, 0.9]}, mode="max", optimum=None)
    r = report.ranks(study)
    assert list(r.loc[0]) == [1.5, 1.5]  # tie in seed 0
    assert list(r.loc[1]) == [2.0, 1.0]  # larger is better: b (0.9) beats a (0.5)
    table = report.final_table(study)
    assert "regret mean" not in table  # no optimum known: no regret column


def test_paired_statistics_known_answers():
    base = [5.0, 6.0, 7.0, 8.0, 9.0, 10.0]
    study = _study({"random": base, "good": [b - 1 for b in base], "same": base})
    stats = {p.strategy: p for p in report.paired_stats(study, "random")}
    good = stats["good"]
    assert (good.wins, good.ties, good.losses) == (6, 0, 0)
    assert good.mean_diff == pytest.approx(1.0)  # min mode: 1 lower is 1 better
    assert good.ci_low == pytest.approx(1.0) and good.ci_high == pytest.approx(1.0)
    assert good.p_value == pytest.approx(2 / 2**6)  # exact two-sided Wilcoxon, 6 wins
    assert good.verdict == "better than baseline"
    same = stats["same"]
    assert (same.ties, same.p_value) == (6, 1.0)
    assert same.verdict == "no significant difference"


def test_paired_statistics_say_when_seeds_are_too_few():
    study = _study({"random": [3.0, 4.0, 5.0], "good": [1.0, 1.0, 1.0]})
    (p,) = report.paired_stats(study, "random")
    assert p.wins == 3
    assert p.verdict.startswith("too few seeds to conclude")
    with pytest.raises(ConfigError, match="baseline 'nope' was not run"):
        report.paired_stats(study, "nope")


def test_anytime_curve_is_monotone_and_ends_at_the_best():
    study = _study({"random": [4.0, 2.0], "good": [1.0, 3.0]})
    curves = report.anytime(study)
    for name, expected in (("random", 3.0), ("good", 2.0)):
        c = curves[curves.strategy == name].sort_values("epochs_spent")
        assert np.all(np.diff(c["mean"]) <= 0)  # minimising: never goes up
        assert c["mean"].iloc[-1] == pytest.approx(expected)  # mean of the runs' bests
    wall = report.anytime(study, "wall_time_s")
    assert wall.groupby("strategy")["mean"].last().min() == pytest.approx(2.0)


def test_heatmap_cells_are_means_of_the_trials_in_them():
    study = _study({"random": [4.0, 2.0]})
    grid = report.heatmap_frame(study, "x", "y", epoch=1)
    # x = trial index 0..2, y = seed; the cell (x=1, y=seed) holds that run's best
    assert grid.loc["0", "1"] == pytest.approx(4.0)
    assert grid.loc["1", "1"] == pytest.approx(2.0)
    with pytest.raises(ConfigError, match="was not searched"):
        report.heatmap_frame(study, "x", "nope", epoch=1)


def test_write_report_produces_markdown_and_plots(tmp_path: Path):
    study = _study({"random": [4.0, 2.0, 6.0], "good": [1.0, 1.0, 1.0]})
    path = report.write_report(study, tmp_path)
    text = path.read_text()
    assert "| good |" in text and "too few seeds" in text
    for png in ("anytime_epochs.png", "anytime_wall.png", "chosen_values.png", "heatmap.png"):
        assert (tmp_path / png).stat().st_size > 5_000


def test_duplicates_count_configurations_a_run_evaluated_again():
    study = _study({"random": [1.0, 2.0], "tpe": [0.5, 0.7]})
    trials = study.trials
    # tpe's seed-0 run proposes its first configuration twice more
    again = (trials.strategy == "tpe") & (trials.seed == 0)
    trials.loc[again, "config.x"] = 0.0
    dups = report.duplicates(study)
    assert dups[("tpe", 0)] == 2 and dups[("tpe", 1)] == 0 and dups[("random", 0)] == 0
    table = report.final_table(study, "random").set_index("strategy")
    assert table.loc["tpe", "duplicates mean"] == 1.0
    assert table.loc["random", "duplicates mean"] == 0.0
