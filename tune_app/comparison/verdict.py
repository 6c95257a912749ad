"""A comparison's verdict, put where the MLflow UI shows it.

The comparison run gets per-strategy metrics (mean best metric, mean rank, and
normalised regret when the optimum is known), tags with the best strategy and the
paired verdicts, a Markdown description (MLflow's ``mlflow.note.content``, shown at
the top of the run page), and a run name that starts with the best strategy, so the
runs list shows the answer without choosing any column.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from tune_app.comparison import report
from tune_app.comparison.report import Study

NOTE_TAG = "mlflow.note.content"
RUN_NAME_TAG = "mlflow.runName"


@dataclass(frozen=True)
class Verdict:
    """What a person wants from a comparison, in MLflow's terms."""

    best: str
    summary: str
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    description: str = ""


def metric_key(prefix: str, strategy: str) -> str:
    """An MLflow metric name for one strategy (``optuna+asha`` -> ``optuna_asha``)."""
    return f"{prefix}/{re.sub(r'[^A-Za-z0-9_.-]+', '_', strategy)}"


def _ordered(study: Study, table: pd.DataFrame) -> pd.DataFrame:
    """Strategies best first: lowest mean rank, then best mean metric."""
    best_col = f"best {study.metric} mean"
    key = table.assign(_score=table[best_col] * -study.sign)
    return key.sort_values(["mean rank", "_score"], kind="stable").drop(columns="_score")


def _paired_line(pairs: list[report.Paired]) -> str:
    """One line: each strategy's paired verdict against the baseline (said once when
    too few seeds leave every strategy without one)."""
    if pairs and all(p.verdict.startswith("too few seeds") for p in pairs):
        return f"every strategy: {pairs[0].verdict}"
    parts = []
    for p in pairs:
        where = f"{p.wins}-{p.ties}-{p.losses} over {p.pairs} seeds"
        pval = "" if math.isnan(p.p_value) else f", p={p.p_value:.3g}"
        parts.append(f"{p.strategy}: {p.verdict} ({where}{pval})")
    return "; ".join(parts)


def verdict(study: Study, baseline: str = "random") -> Verdict:
    """The best strategy, per-strategy metrics and the paired verdicts of ``study``."""
    table = _ordered(study, report.final_table(study, baseline))
    best = str(table.iloc[0]["strategy"])
    best_col = f"best {study.metric} mean"
    metrics: dict[str, float] = {}
    for row in table.itertuples(index=False):
        values = dict(zip(table.columns, row, strict=True))
        name = str(values["strategy"])
        metrics[metric_key(f"best_{study.metric}", name)] = float(values[best_col])
        metrics[metric_key("mean_rank", name)] = float(values["mean rank"])
        regret = values.get("normalised regret")
        if regret is not None and not math.isnan(float(regret)):
            metrics[metric_key("normalised_regret", name)] = float(regret)
    pairs = (
        report.paired_stats(study, baseline)
        if baseline in study.strategies and len(study.strategies) > 1
        else []
    )
    seeds = int(study.runs["seed"].nunique())
    top = table.iloc[0]
    summary = (
        f"best: {best} (mean rank {top['mean rank']:.2f} of {len(table)}, "
        f"mean best {study.metric} {top[best_col]:.4g}, {seeds} seed(s))"
    )
    if seeds < report.MIN_PAIRS:
        summary += f"; too few seeds for a paired verdict (need >= {report.MIN_PAIRS})"
    paired = _paired_line(pairs)
    tags = {"tune_app.best_strategy": best, "tune_app.verdict": summary}
    if paired:
        tags["tune_app.paired_verdict"] = f"vs {baseline}: {paired}"[:5000]
    return Verdict(best, summary, metrics, tags, _description(study, table, summary, pairs))


def _description(
    study: Study, table: pd.DataFrame, summary: str, pairs: list[report.Paired]
) -> str:
    """The run's Markdown description: the verdict, the table, where the report is."""
    shown = {"strategy", "seeds", f"best {study.metric} mean", "normalised regret"}
    shown |= {"mean rank", "epochs spent mean"}
    cols = [c for c in table.columns if c in shown]
    lines = [
        f"**{summary[0].upper()}{summary[1:]}.**",
        "",
        report.markdown_table(table[cols]),
        "",
    ]
    if pairs:
        lines += [f"Paired against `{pairs[0].baseline}` over the same seeds (Wilcoxon):", ""]
        lines += [f"- `{p.strategy}`: {p.verdict}" for p in pairs]
        lines.append("")
    lines.append(
        "The full report (tables, paired statistics, plots) is the artifact `report/report.html`."
    )
    return "\n".join(lines)


def log_verdict(tracker: Any, run_id: str, result: Verdict, run_name: str) -> None:
    """Put ``result`` on the comparison run: metrics, tags, description, run name."""
    tags = {
        **result.tags,
        NOTE_TAG: result.description,
        # The verdict first: the runs list shows only the start of a long name.
        RUN_NAME_TAG: f"best: {result.best} · {run_name}",
    }
    tracker.safe(tracker.log_summary, run_id, result.metrics, tags)
