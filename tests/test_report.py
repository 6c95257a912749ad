"""Report math on small hand-made result sets whose answers are known."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tune_app.comparison import plots, report, writer
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
    grid = plots.heatmap_frame(study, "x", "y", epoch=1)
    # x = trial index 0..2, y = seed; the cell (x=1, y=seed) holds that run's best
    assert grid.loc["0", "1"] == pytest.approx(4.0)
    assert grid.loc["1", "1"] == pytest.approx(2.0)
    with pytest.raises(ConfigError, match="was not searched"):
        plots.heatmap_frame(study, "x", "nope", epoch=1)


def test_write_report_produces_markdown_and_plots(tmp_path: Path):
    study = _study({"random": [4.0, 2.0, 6.0], "good": [1.0, 1.0, 1.0]})
    path = writer.write_report(study, tmp_path)
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


# ---------------------------------------------------------------- plots readable in MLflow

MLFLOW_PREVIEW_PX = 900  # width at which MLflow's artifact preview shows a PNG
MIN_TEXT_PX = 8


def _rich_study(
    strategies: int = 7, seeds: int = 2, trials: int = 12, epochs: int = 3, mode: str = "max"
) -> report.Study:
    """A study like a real one: a log-scaled lr, an int width, a choice; multi-epoch curves."""
    names = ["random", "optuna", "hyperopt", "asha", "hyperband", "dqn", "gp", "cmaes"]
    runs, hist, rows = [], [], []
    for name in names[:strategies]:
        for seed in range(seeds):
            rng = np.random.default_rng([seed, len(name)])
            spent, best = 0, -math.inf
            for i in range(trials):
                lr = float(10 ** rng.uniform(-4, -1))
                hidden, act = int(rng.choice([16, 32, 64, 128])), str(rng.choice(["relu", "tanh"]))
                cfg = {"lr": lr, "hidden": hidden, "act": act}
                top = 1.0 - abs(math.log10(lr) + 2.5) / 4
                for epoch in range(1, epochs + 1):
                    spent += 1
                    value = top * epoch / epochs
                    best = max(best, value)
                    hist.append(
                        {
                            "strategy": name,
                            "seed": seed,
                            "epochs_spent": spent,
                            "wall_time_s": 0.2 * spent,
                            "trial_id": f"t{i}",
                            "epoch": epoch,
                            "acc": value,
                            "best_so_far": best,
                        }
                    )
                rows.append(
                    {"strategy": name, "seed": seed, "trial": i, "trial_id": f"t{i}"}
                    | {"best_acc": top, **{f"config.{k}": v for k, v in cfg.items()}}
                )
            runs.append(
                {
                    "strategy": name,
                    "seed": seed,
                    "best": best,
                    "trials": trials,
                    "epochs_spent": spent,
                    "budget_epochs": spent,
                    "wall_time_s": 0.2 * spent,
                    "run_id": f"{name}{seed}",
                }
            )
    frames = (pd.DataFrame(runs), pd.DataFrame(hist), pd.DataFrame(rows))
    return report.Study("acc", mode, *frames, optimum=1.0, title="synthetic")


def _figures(study: report.Study) -> dict[str, object]:
    return {
        "anytime_epochs": plots.anytime_figure(study, "epochs_spent"),
        "anytime_wall": plots.anytime_figure(study, "wall_time_s"),
        "heatmap": plots.heatmap_figure(study, "lr", "hidden", [1, 2, 3]),
        "chosen_values": plots.chosen_values_figure(study),
    }


def _unreadable(fig, png: Path) -> list[str]:
    """What breaks readability: PNG over 1400 x 1200 px, text under 8 px at 900 px wide."""
    from matplotlib.image import imread
    from matplotlib.text import Text

    height, width = imread(png).shape[:2]
    problems = [f"png {width}x{height} px"] if width > 1400 or height > 1200 else []
    assert (width, height) == tuple(round(v) for v in fig.get_size_inches() * plots.DPI)
    px_per_pt = width / fig.get_figwidth() / 72  # the PNG's real resolution
    scale = min(1.0, MLFLOW_PREVIEW_PX / width)
    for text in fig.findobj(Text):
        shown = text.get_fontsize() * px_per_pt * scale
        if text.get_visible() and text.get_text().strip() and shown < MIN_TEXT_PX:
            problems.append(f"{text.get_text()!r} at {shown:.1f} px")
    return problems


@pytest.mark.parametrize("strategies", [1, 3, 7])
def test_every_plot_is_readable_at_mlflow_preview_size(tmp_path: Path, strategies: int):
    import matplotlib.pyplot as plt

    for name, fig in _figures(_rich_study(strategies)).items():
        png = plots.save_figure(fig, tmp_path / f"{name}.png")
        problems = _unreadable(fig, png)
        plt.close(fig)
        assert not problems, f"{name}: {problems[:5]}"


def test_chosen_values_share_one_colour_scale_with_a_colour_bar():
    import matplotlib.pyplot as plt

    fig = plots.chosen_values_figure(_rich_study(7))
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 1 and "best acc" in bars[0].get_ylabel()
    limits = {c.get_clim() for ax in fig.axes for c in ax.collections if c.get_array() is not None}
    assert len(limits) == 1  # every panel on the colour bar's scale
    plt.close(fig)


def test_heatmap_on_a_log_range_is_labelled_with_real_positive_values():
    import matplotlib.pyplot as plt

    study = _rich_study(2)
    grid = plots.heatmap_frame(study, "lr", "hidden", epoch=1)
    edges = [float(v) for label in grid.columns for v in label.split("..")]
    lrs = study.trials["config.lr"]
    assert min(edges) == pytest.approx(lrs.min(), rel=0.05) and all(e > 0 for e in edges)
    assert list(grid.index) == ["16", "32", "64", "128"]
    fig = plots.heatmap_figure(study, "lr", "hidden", [1, 3])
    fig.canvas.draw()
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert len(ticks) == 7 and all(float(t) > 0 for t in ticks), ticks
    assert ticks[0] == plots._sci(lrs.min()) and all("e-" in t for t in ticks)  # 1e-4, 9.6e-2
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(bars) == 1 and bars[0].get_ylabel().startswith("mean acc")
    assert len({im.get_clim() for ax in fig.axes for im in ax.images}) == 1
    plt.close(fig)


def test_anytime_band_only_with_two_seeds_and_a_marker_per_strategy():
    import matplotlib.pyplot as plt

    one = plots.anytime_figure(_rich_study(3, seeds=1))
    ax = one.axes[0]
    assert "no band" in ax.get_title() and "standard error" not in ax.get_title()
    assert not ax.collections  # no band drawn
    lines = [
        line for line in ax.get_lines() if line.get_label() in {"random", "optuna", "hyperopt"}
    ]
    assert len({(line.get_marker(), line.get_linestyle()) for line in lines}) == 3
    assert ax.get_legend() is not None
    two = plots.anytime_figure(_rich_study(3, seeds=2))
    assert "±1 standard error" in two.axes[0].get_title() and two.axes[0].collections
    plt.close("all")


def test_shared_first_configurations_are_explained_only_when_they_occur(tmp_path: Path):
    study = _study({"random": [4.0, 2.0], "optuna": [3.0, 1.0], "grid": [5.0, 5.0]})
    trials = study.trials
    # optuna leaves random's draws after two trials in seed 0; grid proposes its own
    third_of_seed0 = (trials.strategy == "optuna") & (trials.seed == 0) & (trials.trial == 2)
    trials.loc[third_of_seed0, "config.x"] = 9.0
    trials.loc[trials.strategy == "grid", "config.x"] += 0.5
    shared = report.shared_starts(study).set_index(["strategy", "other", "seed"])["shared"]
    assert shared[("random", "optuna", 0)] == 2 and shared[("random", "optuna", 1)] == 3
    assert shared[("random", "grid", 0)] == 0
    head = writer.write_report(study, tmp_path / "a").read_text().split("## Final")[0]
    sentence = "`random` and `optuna` share their first configurations in every seed"
    assert f"{sentence} (seed 0: 2, seed 1: 3)" in head
    assert "common random numbers" in head and "`grid`" not in head
    trials.loc[trials.strategy == "optuna", "config.x"] += 0.25
    assert report.shared_starts_note(study) is None
    text = writer.write_report(study, tmp_path / "b").read_text()
    assert "Shared first configurations" not in text


def test_duplicates_count_configs_with_list_values() -> None:
    study = _study({"random": [1.0]})
    study.trials["config.sizes"] = [[100, 50], [100, 50], [64]]
    study.trials["config.x"] = 0.0
    assert report.duplicates(study).loc[("random", 0)] == 1
