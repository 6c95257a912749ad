"""Head-to-head comparisons: every strategy x every seed on one space and budget."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from tune_app import spaces, tasks
from tune_app import strategies as registry
from tune_app.comparison import report
from tune_app.comparison.finalists import cross_validate, finalists
from tune_app.comparison.finalists import with_without as with_without_tuning
from tune_app.comparison.html import write_html
from tune_app.comparison.verdict import Verdict, log_verdict, verdict
from tune_app.comparison.writer import write_report
from tune_app.errors import ConfigError
from tune_app.home import local_path
from tune_app.run.driver import SearchResult
from tune_app.run.request import DEFAULT_SPACE, SearchPlan, SearchRequest
from tune_app.spaces import SearchSpace
from tune_app.tasks.base import LookupObjective, Objective
from tune_app.tracking.store import Tracker, resolve_tracking_uri


@dataclass
class Comparison:
    """Several search runs on one study (same task, space, budget and seeds)."""

    results: list[SearchResult] = field(default_factory=list)
    mlflow_run_id: str = ""
    report_path: Path | None = None  # report.html (report.md and its files beside it)
    warnings: list[str] = field(default_factory=list)
    verdict: Verdict | None = None
    experiment_id: str = ""

    def table(self) -> pd.DataFrame:
        """One row per search run."""
        return pd.DataFrame([r.summary() for r in self.results])


def fairness_warnings(
    names: Sequence[str], space: SearchSpace, budget_epochs: int, search_kwargs: dict[str, Any]
) -> list[str]:
    """Settings that make a strategy's result say little at this budget."""
    out = []
    for name in names:
        strat = registry.resolve(name, search_kwargs.get("scheduler"))
        per_trial = registry.min_trial_epochs(strat, space, search_kwargs.get("scheduler_options"))
        full_trials = budget_epochs // space.max_epochs
        warmup = registry.warmup_trials(strat.searcher, search_kwargs.get("strategy_options"))
        if warmup and warmup * per_trial >= budget_epochs:
            out.append(
                f"{strat.label}: its {warmup} random start-up trials use the whole budget of "
                f"{budget_epochs} epochs, so it never models anything and is random search "
                f"here; raise --budget-epochs above {warmup * per_trial} or lower its start-up"
            )
        if full_trials < 3:
            out.append(
                f"{strat.label}: the budget allows only {full_trials} full-length trial(s); "
                f"differences between strategies will mostly be noise"
            )
    return list(dict.fromkeys(out))


def compare(
    strategies: Sequence[str] | None = None,
    space: str | Path | SearchSpace = DEFAULT_SPACE,
    *,
    seeds: Iterable[int] = (0,),
    baseline: str = "random",
    report_dir: str | Path | None = None,
    heatmap: tuple[str, str] | None = None,
    heatmap_epochs: Sequence[int] | None = None,
    optimum: float | None = None,
    cv_top: int = 0,
    folds: int = 5,
    cv_epochs: int | None = None,
    with_without: int = 0,
    **search_kwargs: Any,
) -> Comparison:
    """Run every strategy for every seed on the same space and budget, then report.

    ``search_kwargs`` are the fields of :class:`~tune_app.run.request.SearchRequest`
    (``budget_epochs``, ``tracking_uri``, ``num_workers``, ...), the same for every
    search. All search runs nest under one MLflow "comparison" parent run; the
    report (:mod:`tune_app.comparison.report`) is written to ``report_dir``
    (default: next to the search runs) and logged to the parent run as artifacts.
    ``cv_top`` > 0 cross-validates each strategy's best configs on ``folds`` folds;
    ``with_without`` > 0 trains the overall best and the default config that many
    times each.
    """
    names = list(strategies or registry.names())
    seeds = list(seeds)
    if not names or not seeds:
        raise ConfigError("compare needs at least one strategy and one seed")
    if len(set(names)) != len(names):
        raise ConfigError(f"--strategies lists a strategy twice: {','.join(names)}")
    for key in ("strategy", "seed", "parent_run_id"):
        if key in search_kwargs:
            raise ConfigError(f"compare sets {key!r} itself; pass strategies and seeds instead")
    base = SearchRequest.make(space=space, **search_kwargs)
    if not isinstance(space, SearchSpace):  # loaded once for every search
        base = base.replace(space=spaces.load(space))
    # Every (strategy, seed) is validated and built before the first search starts.
    plans = [[base.replace(strategy=n, seed=seed).plan() for n in names] for seed in seeds]
    first = plans[0][0]
    sp, the_task = first.space, first.objective
    if cv_top < 0 or with_without < 0:
        raise ConfigError("--cv-top and --with-without must be >= 0")
    if (cv_top or with_without) and isinstance(the_task, LookupObjective):
        raise ConfigError(
            f"{the_task.name} is a lookup benchmark: --cv-top/--with-without need a task "
            f"that trains"
        )
    if heatmap is not None:
        for p in heatmap:
            if p not in sp.names:
                raise ConfigError(
                    f"--heatmap parameter {p!r} is not in {sp.source}; pick two of "
                    f"{', '.join(sp.names)}"
                )
    if optimum is None and isinstance(the_task, LookupObjective):
        optimum = float(the_task.optimum)
    warnings = fairness_warnings(names, sp, base.budget_epochs, search_kwargs)
    for w in warnings:
        print(f"[compare] warning: {w}", flush=True)
    uri = resolve_tracking_uri(base.tracking_uri)
    tracker = Tracker(uri, first.experiment)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    title = f"compare-{sp.name}-{stamp}"
    params: dict[str, Any] = {
        "strategies": ",".join(names),
        "seeds": ",".join(map(str, seeds)),
        "budget_epochs": base.budget_epochs,
        "space": sp.name,
        "baseline": baseline,
    }
    if optimum is not None:
        params["optimum"] = optimum
    parent = tracker.start_run(
        title,
        tags={
            "tune_app.kind": "comparison",
            report.TITLE_TAG: title,
            "tune_app.strategies": ",".join(names),
            "tune_app.seeds": ",".join(map(str, seeds)),
            "tune_app.space": sp.source,
            "tune_app.space_hash": sp.digest,
            "tune_app.warnings": " | ".join(warnings),
        },
        params=params,
    )
    comparison = Comparison(
        mlflow_run_id=parent, warnings=warnings, experiment_id=tracker.experiment_id
    )
    status = "FAILED"
    out_dir = (
        local_path(report_dir)
        if report_dir
        else local_path(base.storage_path or "tune_runs") / tracker.experiment / title
    )
    try:
        for row in plans:
            for plan in row:
                comparison.results.append(_run(plan, uri, tracker.experiment, parent))
        status = "FINISHED"
    finally:
        if comparison.results:
            tracker.log_frame(parent, comparison.table(), "comparison.parquet")
            if status == "FINISHED":
                extra = _second_opinions(
                    comparison, the_task, sp, cv_top, folds, cv_epochs, with_without, base
                )
                comparison.report_path = _report(
                    comparison,
                    tracker,
                    parent,
                    out_dir,
                    optimum,
                    title,
                    baseline,
                    heatmap,
                    heatmap_epochs,
                    extra,
                    warnings,
                )
                if base.verbose:
                    print(f"[compare] report: {comparison.report_path}", flush=True)
        tracker.end_run(parent, status)
    return comparison


def _run(plan: SearchPlan, uri: str, experiment: str, parent: str) -> SearchResult:
    """One search of the comparison, nested under its MLflow run."""
    from tune_app.run import driver

    request = plan.request.replace(tracking_uri=uri, experiment=experiment, parent_run_id=parent)
    plan.request = request
    return driver.run(plan)


def _second_opinions(
    comparison: Comparison,
    the_task: Objective,
    sp: SearchSpace,
    cv_top: int,
    folds: int,
    cv_epochs: int | None,
    with_without: int,
    request: SearchRequest,
) -> dict[str, pd.DataFrame]:
    """Cross-validation of the finalists and with/without-tuning repeats, as tables."""
    extra: dict[str, pd.DataFrame] = {}
    if not (cv_top or with_without):
        return extra
    first = comparison.results[0]
    fixed = tasks.with_data_dir(sp.fixed, request.data_dir, the_task.uses_data_dir)
    epochs = cv_epochs or sp.max_epochs
    if cv_top:
        print(
            f"[compare] cross-validating the top {cv_top} config(s) of each strategy "
            f"on {folds} folds x {epochs} epochs",
            flush=True,
        )
        extra["cross_validation"] = cross_validate(
            the_task, finalists(comparison, cv_top), fixed, first.metric, folds, epochs
        )
    if with_without:
        best = max(
            comparison.results,
            key=lambda r: r.best_metric if first.mode == "max" else -r.best_metric,
        )
        print(
            f"[compare] training the best and the default config {with_without} times each",
            flush=True,
        )
        per, summary = with_without_tuning(
            the_task,
            best.best_config,
            sp.default_config(),
            fixed,
            first.metric,
            first.mode,
            with_without,
            epochs,
        )
        extra["with_and_without_tuning"] = summary
        extra["with_and_without_tuning_repeats"] = per
    return extra


def _report(
    comparison: Comparison,
    tracker: Tracker,
    parent: str,
    out_dir: Path,
    optimum: float | None,
    title: str,
    baseline: str,
    heatmap: tuple[str, str] | None,
    heatmap_epochs: Sequence[int] | None,
    extra: dict[str, pd.DataFrame],
    warnings: list[str],
) -> Path:
    """Write the report, log its files to the comparison run under ``report/`` and
    put the verdict on the run; return the HTML report's path."""
    study = report.from_comparison(comparison, optimum=optimum, title=title)
    study.extra.update(extra)
    study.notes.extend(warnings)
    path = write_report(study, out_dir, baseline, heatmap, heatmap_epochs)
    page = write_html(path)
    for f in sorted(out_dir.iterdir()):
        tracker.safe(tracker.log_artifact, parent, f, "report")
    comparison.verdict = verdict(study, baseline)
    log_verdict(tracker, parent, comparison.verdict, title)
    return page
