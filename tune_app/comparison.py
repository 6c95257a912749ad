"""Head-to-head comparisons: every strategy x every seed on one space and budget."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from tune_app import strategies as registry
from tune_app import tasks
from tune_app.api import SearchResult, _check_budget, _load_space, run_search
from tune_app.errors import ConfigError
from tune_app.spaces import SearchSpace
from tune_app.tracking import Tracker, resolve_tracking_uri


@dataclass
class Comparison:
    """Several search runs on one study (same task, space, budget and seeds)."""

    results: list[SearchResult] = field(default_factory=list)
    mlflow_run_id: str = ""

    def table(self) -> pd.DataFrame:
        """One row per search run."""
        return pd.DataFrame([r.summary() for r in self.results])


def compare(
    strategies: Sequence[str] | None = None,
    space: str | Path | SearchSpace = "search_spaces/digits_mlp.yaml",
    *,
    seeds: Iterable[int] = (0,),
    budget_epochs: int = 24,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    verbose: bool = True,
    **search_kwargs: Any,
) -> Comparison:
    """Run every strategy for every seed on the same space and budget.

    All search runs nest under one MLflow "comparison" parent run; ``search_kwargs``
    are passed to :func:`run_search` unchanged (unknown ones are errors there).
    """
    names = list(strategies or registry.names())
    seeds = list(seeds)
    if not names or not seeds:
        raise ConfigError("compare needs at least one strategy and one seed")
    sp = _load_space(space)
    for name in names:  # validate everything before the first search starts
        strat = registry.resolve(name, search_kwargs.get("scheduler"))
        _check_budget(
            strat,
            sp,
            budget_epochs,
            search_kwargs.get("max_trials"),
            search_kwargs.get("time_budget_s"),
            search_kwargs.get("scheduler_options"),
        )
    the_task = tasks.resolve(search_kwargs.get("task") or sp.task)
    uri = resolve_tracking_uri(tracking_uri)
    tracker = Tracker(uri, experiment or f"{the_task.name}-{sp.name}")
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    parent = tracker.start_run(
        f"compare-{sp.name}-{stamp}",
        tags={
            "tune_app.kind": "comparison",
            "tune_app.strategies": ",".join(names),
            "tune_app.seeds": ",".join(map(str, seeds)),
            "tune_app.space": sp.source,
            "tune_app.space_hash": sp.digest,
        },
        params={
            "strategies": ",".join(names),
            "seeds": ",".join(map(str, seeds)),
            "budget_epochs": budget_epochs,
            "space": sp.name,
        },
    )
    comparison = Comparison(mlflow_run_id=parent)
    status = "FAILED"
    try:
        for seed in seeds:
            for name in names:
                comparison.results.append(
                    run_search(
                        name,
                        sp,
                        seed=seed,
                        budget_epochs=budget_epochs,
                        tracking_uri=uri,
                        experiment=tracker.experiment,
                        parent_run_id=parent,
                        verbose=verbose,
                        **search_kwargs,
                    )
                )
        status = "FINISHED"
    finally:
        if comparison.results:
            tracker.log_frame(parent, comparison.table(), "comparison.parquet")
        tracker.end_run(parent, status)
    return comparison
