"""The public Python API: :func:`run_search` and :func:`compare`.

Example (runs a real search on the embedded local Ray)::

    from tune_app import run_search
    result = run_search(strategy="asha", space="search_spaces/digits_mlp.yaml",
                        budget_epochs=24, seed=0)
    print(result.best_metric, result.best_config)
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from tune_app import spaces, tasks
from tune_app import strategies as registry
from tune_app.errors import ConfigError
from tune_app.spaces import SearchSpace
from tune_app.tasks.base import Task
from tune_app.tracking import Tracker, TrackingCallback, resolve_tracking_uri


@dataclass
class SearchResult:
    """The outcome of one search run."""

    strategy: str
    seed: int
    metric: str
    mode: str
    best_metric: float
    best_config: dict[str, Any]
    trials: pd.DataFrame
    history: pd.DataFrame
    epochs_spent: int
    budget_epochs: int
    wall_time_s: float
    mlflow_run_id: str
    experiment_id: str
    tracking_uri: str
    storage_path: str

    def summary(self) -> dict[str, Any]:
        """One row for a comparison table."""
        return {
            "strategy": self.strategy,
            "seed": self.seed,
            f"best {self.metric}": self.best_metric,
            "trials": len(self.trials),
            "epochs spent": self.epochs_spent,
            "wall time (s)": round(self.wall_time_s, 1),
        }


def _load_space(space: str | Path | SearchSpace) -> SearchSpace:
    return space if isinstance(space, SearchSpace) else spaces.load(space)


def _check_budget(
    strategy: registry.Strategy,
    space: SearchSpace,
    budget_epochs: Any,
    max_trials: Any,
    time_budget_s: Any,
    scheduler_options: dict[str, Any] | None,
) -> None:
    if isinstance(budget_epochs, bool) or not isinstance(budget_epochs, int) or budget_epochs < 1:
        raise ConfigError(f"--budget-epochs must be an integer >= 1, got {budget_epochs!r}")
    per_trial = registry.min_trial_epochs(strategy, space, scheduler_options)
    if budget_epochs < per_trial:
        raise ConfigError(
            f"budget of {budget_epochs} epoch(s) is smaller than one trial "
            f"({per_trial} epochs under {strategy.label}); raise --budget-epochs to at "
            f"least {per_trial} or lower max_epochs in {space.source}"
        )
    if strategy.searcher == "grid" and space.grid_size * per_trial > budget_epochs:
        raise ConfigError(
            f"the grid of {space.source} has {space.grid_size} configs x {per_trial} "
            f"epoch(s) = {space.grid_size * per_trial} epochs, more than the budget of "
            f"{budget_epochs}; raise --budget-epochs to {space.grid_size * per_trial} or "
            f"use fewer value boxes"
        )
    if max_trials is not None and (not isinstance(max_trials, int) or max_trials < 1):
        raise ConfigError(f"--max-trials must be an integer >= 1, got {max_trials!r}")
    if time_budget_s is not None and not (
        isinstance(time_budget_s, int | float) and time_budget_s > 0
    ):
        raise ConfigError(f"--time-budget-s must be > 0, got {time_budget_s!r}")


def run_search(
    strategy: str = "random",
    space: str | Path | SearchSpace = "search_spaces/digits_mlp.yaml",
    *,
    scheduler: str | None = None,
    task: Task | str | None = None,
    budget_epochs: int = 24,
    max_trials: int | None = None,
    time_budget_s: float | None = None,
    seed: int = 0,
    num_workers: int = 1,
    gpus_per_worker: float | None = None,
    cpus_per_worker: float = 1.0,
    max_concurrent: int | None = None,
    max_failures: int = 1,
    address: str | None = None,
    tracking_uri: str | None = None,
    experiment: str | None = None,
    storage_path: str | Path | None = None,
    strategy_options: Mapping[str, Any] | None = None,
    scheduler_options: Mapping[str, Any] | None = None,
    parent_run_id: str | None = None,
    verbose: bool = True,
    data_dir: str | Path | None = None,
) -> SearchResult:
    """Run one search: ``strategy`` on ``space`` within ``budget_epochs`` total epochs.

    Everything the user controls is validated before Ray starts; a bad argument
    raises a :class:`tune_app.errors.TuneAppError` that says what to change.

    Args:
        strategy: a registered searcher or scheduler preset (``tune-app strategies``).
        space: a search-space YAML file or a :class:`SearchSpace`.
        scheduler: a scheduler to combine with a searcher, e.g. ``"asha"``.
        task: a Task, built-in task name or ``"module:attr"``; default: the space's.
        budget_epochs: total training epochs across all trials.
        max_trials: optional cap on the number of trials.
        time_budget_s: optional wall-clock cap for the search.
        seed: seeds the searcher, the data split and model initialisation.
        num_workers: Ray Train workers per trial (0: run inside the trial process).
        gpus_per_worker: GPUs per worker; None = 1 if the cluster has GPUs, else 0.
        cpus_per_worker: CPUs per worker.
        max_concurrent: cap on trials running at once (default: as many as fit).
        max_failures: Ray Train restarts of a trial's worker group after a failure.
        address: Ray address; default ``$RAY_ADDRESS`` or an embedded local Ray.
        tracking_uri: MLflow URI; default ``$MLFLOW_TRACKING_URI`` or ``./mlflow.db``.
        experiment: MLflow experiment name; default ``<task>-<space name>``.
        storage_path: where Tune/Train write run state; default ``./tune_runs``.
        strategy_options: options of the searcher (unknown keys are errors).
        scheduler_options: options of the scheduler (unknown keys are errors).
        parent_run_id: nest this search run under an MLflow run (used by compare).
        verbose: print progress lines.
        data_dir: data directory of file-backed tasks; default the space's
            ``fixed.data_dir``, ``$TUNE_APP_DATA`` or ``~/.cache/tune_app/data``.
    """
    from ray import tune

    from tune_app.budget import BudgetCallback, DecisionTap, start_ledger
    from tune_app.placement import ensure_ray, plan
    from tune_app.strategies.base import GuardedSearcher
    from tune_app.tasks.loop import TrialSpec, run_trial

    started = time.time()
    sp = _load_space(space)
    the_task = tasks.resolve(task if task is not None else sp.task)
    metric, mode = sp.metric, sp.mode
    reported = (*the_task.metrics, "train_loss")
    if metric not in reported:
        raise ConfigError(
            f"{sp.source}: metric {metric!r} is never reported by task {the_task.name!r}; "
            f"it reports {', '.join(reported)}"
        )
    strat = registry.resolve(strategy, scheduler)
    s_opts, k_opts = dict(strategy_options or {}), dict(scheduler_options or {})
    if strat.scheduler is None and k_opts:
        raise ConfigError("scheduler options given but no scheduler; pass --scheduler too")
    _check_budget(strat, sp, budget_epochs, max_trials, time_budget_s, k_opts)
    searcher = registry.build_searcher(strat.searcher, sp, metric, mode, seed, s_opts)
    sched = (
        registry.build_scheduler(strat.scheduler, sp, metric, mode, seed, k_opts)
        if strat.scheduler
        else None
    )

    fixed = dict(sp.fixed)
    if data_dir is not None or "data_dir" in fixed or the_task.uses_data_dir:
        # Resolved here: workers on other nodes do not share the driver's env or cwd.
        fixed["data_dir"] = tasks.resolve_data_dir(data_dir, fixed)
        if not (address or os.environ.get("RAY_ADDRESS")):
            the_task.check_data(fixed)  # local run: the driver sees the workers' files

    uri = resolve_tracking_uri(tracking_uri)
    tracker = Tracker(uri, experiment or f"{the_task.name}-{sp.name}")

    ensure_ray(address)
    import ray

    placement = plan(
        ray.cluster_resources(), num_workers, gpus_per_worker, cpus_per_worker, max_concurrent
    )
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    run_name = f"{strat.label}-{seed}-{sp.name}"
    root = Path(storage_path or "tune_runs").resolve() / tracker.experiment
    run_dir = root / f"{run_name}-{stamp}"
    if run_dir.exists():  # never overwrite an earlier run
        raise ConfigError(f"run directory {run_dir} already exists; pass another storage_path")
    run_dir.mkdir(parents=True)
    if verbose:
        print(
            f"tune_app: {strat.label} on {the_task.name} ({sp.source}), seed {seed}, "
            f"budget {budget_epochs} epochs; {placement.describe()}",
            flush=True,
        )

    # Tune's new console output ignores verbose=0; we print our own progress.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    ledger = start_ledger(budget_epochs, lockstep=sched is not None)
    spec = TrialSpec(
        task=the_task,
        seed=seed,
        max_epochs=sp.max_epochs,
        fixed=fixed,
        num_workers=placement.num_workers,
        cpus_per_worker=placement.cpus_per_worker,
        gpus_per_worker=placement.gpus_per_worker,
        storage_path=str(run_dir / "train"),
        max_failures=max_failures,
        ledger=ledger,
    )
    parent = tracker.start_run(
        run_name,
        tags={
            "tune_app.kind": "search",
            "tune_app.strategy": strat.label,
            "tune_app.searcher": strat.searcher,
            "tune_app.scheduler": strat.scheduler or "",
            "tune_app.seed": str(seed),
            "tune_app.task": the_task.name,
            "tune_app.space": sp.source,
            "tune_app.space_hash": sp.digest,
            "tune_app.budget_epochs": str(budget_epochs),
            "tune_app.run_dir": str(run_dir),
        },
        params={
            "strategy": strat.label,
            "searcher": strat.searcher,
            "scheduler": strat.scheduler or "none",
            "seed": seed,
            "task": the_task.name,
            "space": sp.name,
            "metric": metric,
            "mode": mode,
            "budget_epochs": budget_epochs,
            "max_trials": max_trials,
            "time_budget_s": time_budget_s,
            "max_epochs": sp.max_epochs,
            "num_workers": placement.num_workers,
            "gpus_per_worker": placement.gpus_per_worker,
            **{f"option.{k}": v for k, v in s_opts.items()},
            **{f"scheduler_option.{k}": v for k, v in k_opts.items()},
        },
        parent=parent_run_id,
    )
    recorder = TrackingCallback(
        tracker, parent, metric, mode, budget_epochs, sp.max_epochs, verbose=verbose
    )
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(run_trial, spec=spec), placement.trial_resources),
        tune_config=tune.TuneConfig(
            search_alg=GuardedSearcher(searcher, ledger),
            scheduler=DecisionTap(sched, ledger) if sched is not None else None,
            num_samples=max_trials if max_trials is not None else -1,
            max_concurrent_trials=placement.max_concurrent,
            time_budget_s=time_budget_s,
            # In-trial runs reuse the trial's process (no fresh Python + torch import
            # per trial); a Ray Train trial's workers are always new.
            reuse_actors=placement.num_workers == 0,
        ),
        run_config=tune.RunConfig(
            name="tune",
            storage_path=str(run_dir),
            callbacks=[BudgetCallback(ledger), recorder],
            verbose=0,
        ),
    )
    status = "FAILED"
    try:
        tuner.fit()
        status = "FINISHED"
    finally:
        result = _finish(
            recorder,
            tracker,
            parent,
            strat.label,
            seed,
            metric,
            mode,
            budget_epochs,
            started,
            run_dir,
            status,
        )
        ray.kill(ledger)
    if verbose:
        print(
            f"tune_app: {strat.label} done: best {metric} {result.best_metric:.4g} after "
            f"{result.epochs_spent} epochs in {len(result.trials)} trials "
            f"({result.wall_time_s:.0f}s); MLflow run {parent}",
            flush=True,
        )
    return result


def _finish(
    recorder: TrackingCallback,
    tracker: Tracker,
    parent: str,
    label: str,
    seed: int,
    metric: str,
    mode: str,
    budget: int,
    started: float,
    run_dir: Path,
    status: str,
) -> SearchResult:
    """Write the trials table and history (run dir + MLflow) and close the parent run."""
    trials, history = recorder.trials_frame(), recorder.history_frame()
    trials.to_parquet(run_dir / "trials.parquet", index=False)
    history.to_parquet(run_dir / "history.parquet", index=False)
    best_config: dict[str, Any] = {}
    best_rec = None
    for rec in recorder.trials.values():
        if best_rec is None or recorder.better(rec.best, best_rec.best):
            best_rec = rec
    if best_rec is not None and not math.isnan(best_rec.best):
        best_config = dict(best_rec.config)
    wall = time.time() - started
    tracker.log_frame(parent, trials, "trials.parquet")
    tracker.log_frame(parent, history, "history.parquet")
    tracker.log_metrics(
        parent,
        {
            f"final_best_{metric}": recorder.best,
            "trials": len(trials),
            "wall_time_s": wall,
            "epochs_spent_total": recorder.epochs_spent,
        },
        recorder.epochs_spent,
    )
    tracker.end_run(parent, status, {"tune_app.best_config": repr(best_config)})
    return SearchResult(
        strategy=label,
        seed=seed,
        metric=metric,
        mode=mode,
        best_metric=recorder.best,
        best_config=best_config,
        trials=trials,
        history=history,
        epochs_spent=recorder.epochs_spent,
        budget_epochs=budget,
        wall_time_s=wall,
        mlflow_run_id=parent,
        experiment_id=tracker.experiment_id,
        tracking_uri=tracker.uri,
        storage_path=str(run_dir),
    )
