"""``report.md``: a :class:`~tune_app.comparison.report.Study` written out with its
plots (:mod:`tune_app.comparison.plots`) and CSV tables."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tune_app.comparison.plots import plot_anytime, plot_chosen_values, plot_heatmap
from tune_app.comparison.report import (
    Study,
    final_table,
    markdown_table,
    paired_frame,
    paired_stats,
    shared_starts_note,
)


def _paragraph(text: str | None) -> list[str]:
    return [text, ""] if text else []


def write_report(
    study: Study,
    out_dir: Path,
    baseline: str = "random",
    heatmap: tuple[str, str] | None = None,
    heatmap_epochs: Sequence[int] | None = None,
) -> Path:
    """Write ``report.md``, its PNGs and CSV tables into ``out_dir``; return the Markdown path."""

    out_dir.mkdir(parents=True, exist_ok=True)
    table = final_table(study, baseline)
    table.to_csv(out_dir / "final_table.csv", index=False)
    seeds = study.runs["seed"].nunique()
    budget = int(study.runs["budget_epochs"].max())
    parts = [
        f"# {study.title}",
        "",
        f"{len(study.strategies)} strategies x {seeds} seed(s), budget {budget} epochs "
        f"per search, metric `{study.metric}` ({study.mode})"
        + (f", known optimum {study.optimum:.6g}" if study.optimum is not None else "")
        + ".",
        "",
        *[f"> **Warning:** {n}\n" for n in study.notes],
        *_paragraph(shared_starts_note(study)),
        "## Final results",
        "",
        markdown_table(table),
        "",
    ]
    if baseline in study.strategies and len(study.strategies) > 1:
        pairs = paired_frame(paired_stats(study, baseline))
        pairs.to_csv(out_dir / "paired.csv", index=False)
        parts += [
            f"## Paired against `{baseline}` (same seeds)",
            "",
            "Improvement is in the metric's better direction. The CI is a bootstrap "
            "of the mean paired difference; the test is Wilcoxon's signed-rank.",
            "",
            markdown_table(pairs),
            "",
        ]
    else:
        parts += [f"_No paired statistics: baseline `{baseline}` was not run._", ""]
    plot_anytime(study, out_dir / "anytime_epochs.png", "epochs_spent")
    plot_anytime(study, out_dir / "anytime_wall.png", "wall_time_s")
    parts += [
        "## Anytime performance",
        "",
        "![best so far vs epochs](anytime_epochs.png)",
        "",
        "![best so far vs wall time](anytime_wall.png)",
        "",
    ]
    if study.params and not study.trials.empty:
        plot_chosen_values(study, out_dir / "chosen_values.png")
        parts += ["## Values chosen", "", "![chosen values](chosen_values.png)", ""]
        if len(study.params) >= 2 and not study.history.empty:
            x, y = heatmap or (study.params[0], study.params[1])
            top = int(study.history["epoch"].max())
            epochs = list(heatmap_epochs or sorted({1, top}))
            plot_heatmap(study, x, y, epochs, out_dir / "heatmap.png")
            parts += [
                f"## {study.metric} over {x} and {y}",
                "",
                "Mean over every trial of every strategy and seed that reached the epoch.",
                "",
                "![heatmap](heatmap.png)",
                "",
            ]
    for name, frame in study.extra.items():
        frame.to_csv(out_dir / f"{name}.csv", index=False)
        parts += [f"## {name.replace('_', ' ').capitalize()}", "", markdown_table(frame), ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(parts))
    return path
