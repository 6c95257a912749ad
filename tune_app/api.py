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
from tune_app.outbox import JOURNAL, Journal, Outbox, redact_uri
from tune_app.resume import (
    Manifest,
    ResumableSearcher,
    drop_orphans,
    latest_unfinished,
    locate,
)
from tune_app.spaces import SearchSpace
from tune_app.tasks.base import Task
from tune_app.tracking import (
    RunState,
    Tracker,
    TrackingCallback,
    resolve_tracking_uri,
    searcher_hook,
    validate_experiment_name,
)


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
    if strategy.scheduler is None and scheduler_options:
        raise ConfigError("scheduler options given but no scheduler; pass --scheduler too")
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
        isinstance(time_budget_s, int | float) and 0 < time_budget_s < math.inf
    ):
        raise ConfigError(f"--time-budget-s must be a number > 0, got {time_budget_s!r}")


def _check_options(
    strategy: registry.Strategy, space: SearchSpace, search_kwargs: Mapping[str, Any]
) -> None:
    """Unknown or bad searcher/scheduler options are errors before anything starts."""
    s_opts = dict(search_kwargs.get("strategy_options") or {})
    k_opts = dict(search_kwargs.get("scheduler_options") or {})
    seed = 0
    registry.build_searcher(strategy.searcher, space, space.metric, space.mode, seed, s_opts)
    if strategy.scheduler:
        registry.build_scheduler(strategy.scheduler, space, space.metric, space.mode, seed, k_opts)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_resources(
    num_workers: Any,
    gpus_per_worker: Any,
    cpus_per_worker: Any,
    max_concurrent: Any,
    max_failures: Any,
) -> None:
    """The cluster-independent resource checks, before Ray starts."""
    if not _is_int(num_workers) or num_workers < 0:
        raise ConfigError(f"--num-workers must be an integer >= 0, got {num_workers!r}")
    if not isinstance(cpus_per_worker, int | float) or not 0 < cpus_per_worker < math.inf:
        raise ConfigError(f"--cpus-per-worker must be a number > 0, got {cpus_per_worker!r}")
    if gpus_per_worker is not None and (
        not isinstance(gpus_per_worker, int | float) or not 0 <= gpus_per_worker < math.inf
    ):
        raise ConfigError(f"--gpus-per-worker must be a number >= 0, got {gpus_per_worker!r}")
    if max_concurrent is not None and (not _is_int(max_concurrent) or max_concurrent < 1):
        raise ConfigError(f"--max-concurrent must be an integer >= 1, got {max_concurrent!r}")
    if not _is_int(max_failures) or max_failures < 0:
        raise ConfigError(f"--max-failures must be an integer >= 0, got {max_failures!r}")


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
    resume: bool | str | Path = False,
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
        resume: True: continue the newest unfinished run of this same search under
            ``storage_path`` (a new run if there is none); a run directory or MLflow
            parent run id: continue that run. A new run never reuses a directory.
    """
    from ray import tune

    from tune_app.budget import BudgetCallback, DecisionTap, start_ledger
    from tune_app.placement import (
        ensure_ray,
        live_placement_groups,
        plan,
        release_leaked_groups,
    )
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
    s_opts = {**registry.budget_defaults(strat.searcher, sp, budget_epochs), **s_opts}
    if strat.scheduler is None and k_opts:
        raise ConfigError("scheduler options given but no scheduler; pass --scheduler too")
    _check_budget(strat, sp, budget_epochs, max_trials, time_budget_s, k_opts)
    _check_resources(num_workers, gpus_per_worker, cpus_per_worker, max_concurrent, max_failures)
    searcher = registry.build_searcher(strat.searcher, sp, metric, mode, seed, s_opts)
    sched = (
        registry.build_scheduler(strat.scheduler, sp, metric, mode, seed, k_opts)
        if strat.scheduler
        else None
    )

    fixed = tasks.with_data_dir(sp.fixed, data_dir, the_task.uses_data_dir)
    if "data_dir" in fixed and not (address or os.environ.get("RAY_ADDRESS")):
        the_task.check_data(fixed)  # local run: the driver sees the workers' files

    uri = resolve_tracking_uri(tracking_uri)
    exp_name = validate_experiment_name(experiment or f"{the_task.name}-{sp.name}")
    run_name = f"{strat.label}-{seed}-{sp.name}"
    root = Path(storage_path or "tune_runs").resolve() / exp_name
    wanted = Manifest(
        strategy=strategy,
        scheduler=scheduler,
        space=str(Path(sp.source).resolve()) if Path(sp.source).exists() else sp.source,
        space_digest=sp.digest,
        task=_task_ref(task, sp),
        budget_epochs=budget_epochs,
        max_trials=max_trials,
        time_budget_s=time_budget_s,
        seed=seed,
        num_workers=num_workers,
        gpus_per_worker=gpus_per_worker,
        cpus_per_worker=cpus_per_worker,
        max_concurrent=max_concurrent,
        max_failures=max_failures,
        experiment=exp_name,
        tracking_uri=redact_uri(uri),
        strategy_options=s_opts,
        scheduler_options=k_opts,
        run_name=run_name,
        metric=metric,
        data_dir=str(fixed["data_dir"]) if "data_dir" in fixed else None,
    )
    run_dir = _resume_dir(resume, root, run_name, wanted, tracking_uri)
    tracker = Tracker(uri, exp_name)

    ensure_ray(address)
    import ray

    placement = plan(
        ray.cluster_resources(), num_workers, gpus_per_worker, cpus_per_worker, max_concurrent
    )
    if run_dir is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        run_dir = root / f"{run_name}-{stamp}"
        if run_dir.exists():  # never overwrite an earlier run
            raise ConfigError(f"run directory {run_dir} already exists; pass another storage_path")
        run_dir.mkdir(parents=True)
        manifest = wanted
        manifest.parent_run_id = tracker.start_run(
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
        manifest.experiment_id = tracker.experiment_id
        manifest.save(run_dir)
        resuming = False
    else:
        manifest = Manifest.load(run_dir)
        tracker.safe(tracker.client.update_run, manifest.parent_run_id, "RUNNING")
        resuming = True
    parent = manifest.parent_run_id
    if verbose:
        what = f"resuming {run_dir}" if resuming else f"run dir {run_dir}"
        print(
            f"tune_app: {strat.label} on {the_task.name} ({sp.source}), seed {seed}, "
            f"budget {budget_epochs} epochs; {placement.describe()}; {what}",
            flush=True,
        )

    # Tune's new console output ignores verbose=0; we print our own progress.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Snapshot Tune's experiment state often: resume restarts from the newest one.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    journal = Journal(run_dir / JOURNAL)
    events = journal.read()
    state = RunState.replay(metric, mode, events)
    outbox = Outbox.replay(journal, tracker, parent, metric)
    if outbox.pending and verbose:
        print(f"tune_app: sending {len(outbox.pending)} journaled MLflow write(s)", flush=True)
    outbox.start()  # MLflow writes leave Tune's event loop: a slow server never holds it up
    ledger = start_ledger(budget_epochs, lockstep=sched is not None)
    recorded = {tid: rec.epochs for tid, rec in state.trials.items()}
    ended = [t for t, r in state.trials.items() if r.ended]
    # Not awaited: the actor starts while Tune sets up, and this driver's calls
    # reach it in order (the seed lands before the searcher's first request).
    ledger.seed.remote(recorded, ended, dict(state.aliases))
    # Tune knows a re-suggested trial by its new id; the budget callback does too.
    by_tune_id = {**recorded, **{new: recorded[old] for new, old in state.aliases.items()}}
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
    recorder = TrackingCallback(
        outbox,
        state,
        budget_epochs,
        sp.max_epochs,
        keys=tuple(the_task.metrics),
        verbose=verbose,
        ledger=ledger if resuming else None,
        task=the_task.name,
    )
    recorder.searcher = searcher  # per-trial tags (dqn: action, Q-values, state)
    search_alg = ResumableSearcher(searcher, ledger, recorder)
    tune_config = tune.TuneConfig(
        search_alg=search_alg,
        scheduler=DecisionTap(sched, ledger, the_task.name) if sched is not None else None,
        num_samples=max_trials if max_trials is not None else -1,
        max_concurrent_trials=placement.max_concurrent,
        time_budget_s=time_budget_s,
        # In-trial runs reuse the trial's process (no fresh Python + torch import
        # per trial); a Ray Train trial's workers are always new.
        reuse_actors=placement.num_workers == 0,
    )
    callbacks = [BudgetCallback(ledger, by_tune_id), recorder]
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, spec=spec), placement.trial_resources
    )
    tune_dir = run_dir / "tune"
    if resuming and tune.Tuner.can_restore(str(tune_dir)):
        tuner = tune.Tuner.restore(
            str(tune_dir), trainable, resume_unfinished=True, resume_errored=False
        )
        # Tune restores the searcher's *state* from its snapshot; the objects
        # (ledger handle, journal, MLflow client) belong to this driver.
        internal = tuner._local_tuner
        assert internal is not None
        internal._tune_config = tune_config
        internal._run_config.callbacks = callbacks
    else:
        tuner = tune.Tuner(
            trainable,
            tune_config=tune_config,
            run_config=tune.RunConfig(
                name="tune", storage_path=str(run_dir), callbacks=callbacks, verbose=0
            ),
        )
    status = "FAILED"
    groups_before = live_placement_groups()
    try:
        tuner.fit()
        status = "FINISHED"
    finally:
        leaked = release_leaked_groups(groups_before)
        if leaked:
            print(f"tune_app: released {leaked} placement group(s) left by ended trials")
        drop_orphans(recorder, ledger)
        result = _finish(recorder, manifest, strat.label, metric, started, run_dir, status)
        ledger.kill()
    if verbose:
        print(
            f"tune_app: {strat.label} done: best {metric} {result.best_metric:.4g} after "
            f"{result.epochs_spent} epochs in {len(result.trials)} trials "
            f"({result.wall_time_s:.0f}s); MLflow run {parent}",
            flush=True,
        )
    return result


def _task_ref(task: Task | str | None, sp: SearchSpace) -> str | None:
    """A reference that rebuilds the task on resume (None: the space's task)."""
    if task is None or isinstance(task, str):
        return task
    cls = type(task)
    return f"{cls.__module__}:{cls.__qualname__}"


def _resume_dir(
    resume: bool | str | Path,
    root: Path,
    run_name: str,
    wanted: Manifest,
    tracking_uri: str | None,
) -> Path | None:
    """The run directory to continue, or None for a new run."""
    if resume is False or resume is None:
        return None
    if resume is True:
        return latest_unfinished(root, run_name, wanted)
    run_dir = locate(resume, tracking_uri)
    old = Manifest.load(run_dir)
    differ = old.same_search(wanted)
    if differ:
        raise ConfigError(
            f"{run_dir} was started with different {', '.join(differ)}; resume it with "
            f"`tune-app resume {run_dir}` or start a new run without --resume"
        )
    if old.status == "FINISHED":
        raise ConfigError(
            f"{run_dir} already finished; start a new run (or `tune-app sync {run_dir}` "
            f"to send results MLflow missed)"
        )
    return run_dir


def resume_search(
    target: str | Path,
    *,
    tracking_uri: str | None = None,
    address: str | None = None,
    verbose: bool = True,
) -> SearchResult:
    """Continue the search in run directory (or of MLflow parent run) ``target``.

    The run's own arguments are read from its ``run.json``; finished trials stay
    finished, unfinished ones continue from their last checkpoint.
    """
    run_dir = locate(target, tracking_uri)
    m = Manifest.load(run_dir)
    if "***" in m.tracking_uri and tracking_uri is None:
        tracking_uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not tracking_uri:
            raise ConfigError(
                "the run's tracking URI holds a password that is not stored; pass "
                "--tracking-uri or set MLFLOW_TRACKING_URI"
            )
    extra = {"data_dir": m.data_dir} if m.data_dir else {}
    return run_search(
        m.strategy,
        m.space,
        scheduler=m.scheduler,
        task=m.task,
        budget_epochs=m.budget_epochs,
        max_trials=m.max_trials,
        time_budget_s=m.time_budget_s,
        seed=m.seed,
        num_workers=m.num_workers,
        gpus_per_worker=m.gpus_per_worker,
        cpus_per_worker=m.cpus_per_worker,
        max_concurrent=m.max_concurrent,
        max_failures=m.max_failures,
        address=address,
        tracking_uri=tracking_uri or m.tracking_uri,
        experiment=m.experiment,
        storage_path=run_dir.parent.parent,
        strategy_options=m.strategy_options,
        scheduler_options=m.scheduler_options,
        resume=run_dir,
        verbose=verbose,
        **extra,
    )


def _finish(
    recorder: TrackingCallback,
    manifest: Manifest,
    label: str,
    metric: str,
    started: float,
    run_dir: Path,
    status: str,
) -> SearchResult:
    """Write the trials table and history (run dir + MLflow) and close the parent run."""
    state = recorder.state
    trials, history = state.trials_frame(), state.history_frame()
    trials.to_parquet(run_dir / "trials.parquet", index=False)
    history.to_parquet(run_dir / "history.parquet", index=False)
    best_config: dict[str, Any] = {}
    best_rec = None
    for rec in state.trials.values():
        if best_rec is None or state.better(rec.best, best_rec.best):
            best_rec = rec
    if best_rec is not None and not math.isnan(best_rec.best):
        best_config = dict(best_rec.config)
    wall = recorder.elapsed()
    searcher_hook(recorder.searcher, "plot_walk", str(run_dir / "walk.png"))  # dqn only
    recorder.outbox.submit(
        {
            "k": "finish",
            "status": status,
            "spent": state.epochs_spent,
            "metrics": {
                f"final_best_{metric}": state.best,
                "trials": len(trials),
                "wall_time_s": wall,
                "epochs_spent_total": state.epochs_spent,
            },
            "tags": {"tune_app.best_config": repr(best_config)},
        }
    )
    if not recorder.outbox.close(timeout_s=20.0):
        print(
            f"tune_app: MLflow is unreachable; {len(recorder.outbox.pending)} write(s) are "
            f"kept in {run_dir / JOURNAL}; send them with `tune-app sync {run_dir}`",
            flush=True,
        )
    if status == "FINISHED":
        manifest.status = "FINISHED"
        manifest.save(run_dir)
    return SearchResult(
        strategy=label,
        seed=manifest.seed,
        metric=metric,
        mode=state.mode,
        best_metric=state.best,
        best_config=best_config,
        trials=trials,
        history=history,
        epochs_spent=state.epochs_spent,
        budget_epochs=manifest.budget_epochs,
        wall_time_s=wall,
        mlflow_run_id=manifest.parent_run_id,
        experiment_id=manifest.experiment_id,
        tracking_uri=recorder.outbox.tracker.uri,
        storage_path=str(run_dir),
    )
