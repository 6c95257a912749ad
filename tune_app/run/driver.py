"""The driver: one search run from a :class:`~tune_app.run.request.SearchPlan` to a result.

:func:`run` reads like the architecture::

    run directory (new, or resumed)  ->  MLflow parent run + journal + outbox
    Ray (local or cluster) + placement  ->  epoch ledger actor
    Tuner(trainable over Ray Train workers, guarded searcher, tapped scheduler,
          callbacks relayed to this driver)  ->  fit  ->  trials table, history, artifacts

Only Ray Tune's public API is used. On resume, ``Tuner.restore`` brings back the
searcher, scheduler and callbacks Tune pickled; they reach this driver's live
objects through :mod:`tune_app.run.live` (by the run's key) and its ledger by name.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from tune_app.errors import ConfigError
from tune_app.home import local_path
from tune_app.run import live
from tune_app.run.lock import acquire
from tune_app.run.placement import Placement
from tune_app.run.request import SearchPlan, SearchRequest
from tune_app.run.resume import (
    Manifest,
    ResumableSearcher,
    drop_orphans,
    drop_torn_snapshots,
    latest_unfinished,
    locate,
    reconcile,
)
from tune_app.strategies.base import RunArtifacts
from tune_app.tracking.callback import TrackingCallback
from tune_app.tracking.outbox import JOURNAL, Journal, Outbox
from tune_app.tracking.state import RunState
from tune_app.tracking.store import Tracker, redact_uri, resolve_tracking_uri

TABLES = ("trials.parquet", "history.parquet")
# Tune hands a finished trial's process to the next trial, except over Ray Train under
# a scheduler: a trial it stops or pauses is still inside its Train run when Tune
# resets the process, and Tune then fails the next trial (benchmarks/trial_overhead.py
# measures reuse against fresh processes: --fresh-trial-actors).
REUSE_TRIAL_ACTORS = True


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


def run(plan: SearchPlan) -> SearchResult:
    """Run (or resume) the search ``plan`` describes; return its result."""
    req, started = plan.request, time.time()
    if "data_dir" in plan.fixed and not (req.address or os.environ.get("RAY_ADDRESS")):
        plan.objective.check_data(plan.fixed)  # local run: the driver sees the workers' files
    wanted = _manifest(plan)
    root = local_path(req.storage_path or "tune_runs") / plan.experiment
    run_dir = _resume_dir(req.resume, root, plan.run_name, wanted, req.tracking_uri)
    resuming = run_dir is not None
    with ExitStack() as held:  # the run directory's lock, released however run ends
        if run_dir is not None:
            held.callback(acquire(run_dir).release)  # one driver per run
        tracker = Tracker(resolve_tracking_uri(req.tracking_uri), plan.experiment)
        placement = _start_ray(req)
        if run_dir is None:
            run_dir, manifest = _new_run(plan, wanted, root, tracker, placement, held)
        else:
            manifest = Manifest.load(run_dir)
            tracker.reopen(manifest.parent_run_id)
        key = manifest.parent_run_id
        if req.verbose:
            what = f"resuming {run_dir}" if resuming else f"run dir {run_dir}"
            print(
                f"tune_app: {plan.strategy.label} on {plan.objective.name} "
                f"({plan.space.source}), seed {req.seed}, budget {req.budget_epochs} epochs; "
                f"{placement.describe()}; {what}",
                flush=True,
            )
        recorder, ledger = _start_recording(plan, run_dir, key, tracker, resuming)
        store = _data_store(plan, held, placement)
        tuner = _tuner(plan, run_dir, key, ledger, placement, resuming, store)
        result = _fit(plan, tuner, recorder, ledger, manifest, run_dir, started)
        if req.verbose:
            print(
                f"tune_app: {plan.strategy.label} done: best {plan.metric} "
                f"{result.best_metric:.4g} after {result.epochs_spent} epochs in "
                f"{len(result.trials)} trials ({result.wall_time_s:.0f}s); MLflow run {key}",
                flush=True,
            )
        return result


def _manifest(plan: SearchPlan) -> Manifest:
    """The manifest a new run of ``plan`` writes (and a resumed one must match)."""
    uri = resolve_tracking_uri(plan.request.tracking_uri)
    data_dir = plan.fixed.get("data_dir")
    return Manifest(
        request=plan.request.stored(plan.space_source, plan.task_ref)
        | {
            "experiment": plan.experiment,
            "tracking_uri": redact_uri(uri),
            "strategy_options": plan.strategy_options,
            "data_dir": str(data_dir) if data_dir is not None else None,
        },
        space_digest=plan.space.digest,
        metric=plan.metric,
        run_name=plan.run_name,
    )


def _start_ray(req: SearchRequest) -> Placement:
    """Connect to (or start) Ray and plan where trials and their workers go."""
    from tune_app.run import placement as place

    place.ensure_ray(req.address)
    import ray

    return place.plan(
        ray.cluster_resources(),
        req.num_workers,
        req.gpus_per_worker,
        req.cpus_per_worker,
        req.max_concurrent,
    )


def _start_recording(
    plan: SearchPlan, run_dir: Path, key: str, tracker: Tracker, resuming: bool
) -> tuple[TrackingCallback, Any]:
    """The journal and its MLflow outbox, the epoch ledger (both seeded from the
    journal), the tracking callback, and this driver's live objects."""
    from tune_app.run.budget import BudgetCallback, start_ledger

    req = plan.request
    # Tune's new console output ignores verbose=0; we print our own progress.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Snapshot Tune's experiment state often: resume restarts from the newest one.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    journal = Journal(run_dir / JOURNAL)
    state = RunState.replay(plan.metric, plan.mode, journal.read())
    outbox = Outbox.replay(journal, tracker, key, plan.metric)
    if outbox.pending and req.verbose:
        print(f"tune_app: sending {len(outbox.pending)} journaled MLflow write(s)", flush=True)
    outbox.start()  # MLflow writes leave Tune's event loop: a slow server never holds it up
    ledger = start_ledger(key, req.budget_epochs, lockstep=plan.scheduler is not None)
    recorded = {tid: max(rec.epochs, rec.charged) for tid, rec in state.trials.items()}
    ended = [t for t, r in state.trials.items() if r.ended]
    # Not awaited: the actor starts while Tune sets up, and this driver's calls
    # reach it in order (the seed lands before the searcher's first request).
    # A trial Tune restores although it ended after the snapshot reports this again.
    finals = {
        tid: {plan.metric: rec.last, "epoch": rec.epochs, "diverged": int(rec.diverged)}
        for tid, rec in state.trials.items()
        if rec.ended
    }
    ledger.seed.remote(recorded, ended, dict(state.aliases), finals)
    recorder = TrackingCallback(
        outbox,
        state,
        req.budget_epochs,
        plan.space.max_epochs,
        keys=tuple(plan.objective.metrics),
        verbose=req.verbose,
        task=plan.objective.name,
        on_first_step=(
            (lambda trials: reconcile(recorder, ledger, trials, plan.space.max_epochs))
            if resuming
            else None
        ),
    )
    # Tune knows a re-suggested trial by its new id; the budget callback does too.
    by_tune_id = {**recorded, **{new: recorded[old] for new, old in state.aliases.items()}}
    budget = BudgetCallback(ledger, by_tune_id)
    live.register(key, live.Live(recorder=recorder, callbacks=[budget, recorder]))
    return recorder, ledger


@contextmanager
def unreported_trials_allowed() -> Iterator[None]:
    """Let a trial end without a result while the Tuner runs.

    A trial the epoch ledger refuses its first epoch (after a resume the budget
    may already be spent) returns without reporting. Tune means to accept that
    ("no result was ever received and the trial just returned"), but for a
    trial it restored from a checkpoint without metrics the last result is the
    trial's config, whose flattened ``config/*`` keys its check counts as
    reported metrics: it fails the whole run for a missing metric. The check is
    off while the Tuner runs; the loop checks every epoch's metrics itself
    (``tasks.base.check_reported``).
    """
    key = "TUNE_DISABLE_STRICT_METRIC_CHECKING"
    before = os.environ.get(key)
    os.environ[key] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def _fit(
    plan: SearchPlan,
    tuner: Any,
    recorder: TrackingCallback,
    ledger: Any,
    manifest: Manifest,
    run_dir: Path,
    started: float,
) -> SearchResult:
    """Run the Tuner; whatever happens, release what it leaves behind and record the end."""
    from tune_app.run import placement as place

    status = "FAILED"
    groups_before = place.live_placement_groups()
    try:
        with unreported_trials_allowed():
            tuner.fit()
        status = "FINISHED"
    finally:
        leaked = place.release_leaked_groups(groups_before)
        if leaked:
            print(f"tune_app: released {len(leaked)} placement group(s) left by ended trials")
        drop_orphans(recorder, ledger)
        result = _finish(plan, recorder, manifest, started, run_dir, status)
        ledger.kill()
        live.release(manifest.parent_run_id)
        # Again, after the seconds of recording: a group whose creation was still in
        # flight at the first sweep exists now.
        late = place.release_leaked_groups(groups_before | leaked)
        if late:
            print(f"tune_app: released {len(late)} more placement group(s) created late")
    return result


def _new_run(
    plan: SearchPlan,
    wanted: Manifest,
    root: Path,
    tracker: Tracker,
    placement: Placement,
    held: ExitStack,
) -> tuple[Path, Manifest]:
    """A fresh run directory (locked until ``held`` closes), its MLflow parent run
    and its manifest."""
    req, strat = plan.request, plan.strategy
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    run_dir = root / f"{plan.run_name}-{stamp}"
    if run_dir.exists():  # never overwrite an earlier run
        raise ConfigError(f"run directory {run_dir} already exists; pass another storage_path")
    run_dir.mkdir(parents=True)
    held.callback(acquire(run_dir).release)
    manifest = wanted
    manifest.parent_run_id = tracker.start_run(
        plan.run_name,
        tags={
            "tune_app.kind": "search",
            "tune_app.strategy": strat.label,
            "tune_app.searcher": strat.searcher,
            "tune_app.scheduler": strat.scheduler or "",
            "tune_app.seed": str(req.seed),
            "tune_app.task": plan.objective.name,
            "tune_app.space": plan.space.source,
            "tune_app.space_hash": plan.space.digest,
            "tune_app.budget_epochs": str(req.budget_epochs),
            "tune_app.run_dir": str(run_dir),
        },
        params={
            "strategy": strat.label,
            "searcher": strat.searcher,
            "scheduler": strat.scheduler or "none",
            "seed": req.seed,
            "task": plan.objective.name,
            "space": plan.space.name,
            "metric": plan.metric,
            "mode": plan.mode,
            "budget_epochs": req.budget_epochs,
            "max_trials": req.max_trials,
            "time_budget_s": req.time_budget_s,
            "max_epochs": plan.space.max_epochs,
            "num_workers": placement.num_workers,
            "gpus_per_worker": placement.gpus_per_worker,
            **{f"option.{k}": v for k, v in plan.strategy_options.items()},
            **{f"scheduler_option.{k}": v for k, v in plan.scheduler_options.items()},
            **_inner_params(plan),
        },
        parent=req.parent_run_id,
    )
    manifest.experiment_id = tracker.experiment_id
    manifest.save(run_dir)
    return run_dir, manifest


def _data_store(plan: SearchPlan, held: ExitStack, placement: Placement) -> Any:
    """The run's shared-data actor (:mod:`tune_app.tasks.shared_data`) when its
    trials train a model on Ray Train workers (each a new process); stopped when the
    run ends. In-trial runs reuse their trial processes, which keep their data."""
    import ray

    from tune_app.tasks.base import Task
    from tune_app.tasks.shared_data import start_store

    if not isinstance(plan.objective, Task) or placement.num_workers == 0:
        return None
    store = start_store(prefetch=(plan.objective, plan.fixed, plan.request.seed))
    held.callback(ray.kill, store)
    return store


def _inner_params(plan: SearchPlan) -> dict[str, Any]:
    """The inner controller's settings as the parent run's params (none when off)."""
    if plan.inner is None:
        return {}
    return {
        "inner_controller": ",".join(plan.inner.controls),
        "inner_every": plan.inner.every,
        "inner_policy": ",".join(p.source for p in plan.inner.policies.values()),
    }


def _tuner(
    plan: SearchPlan,
    run_dir: Path,
    key: str,
    ledger: Any,
    placement: Placement,
    resuming: bool,
    store: Any = None,
) -> Any:
    """The Tuner: the trial function over Ray Train workers, the guarded searcher,
    the tapped scheduler and the relay callback; restored when resuming."""
    from ray import tune

    from tune_app.run.budget import DecisionTap
    from tune_app.strategies import plugin
    from tune_app.tasks.loop import TrialSpec, run_trial

    req = plan.request
    scheduler_name = plan.strategy.scheduler
    spec = TrialSpec(
        task=plan.objective,
        seed=req.seed,
        max_epochs=plan.space.max_epochs,
        fixed=plan.fixed,
        num_workers=placement.num_workers,
        cpus_per_worker=placement.cpus_per_worker,
        gpus_per_worker=placement.gpus_per_worker,
        storage_path=str(run_dir / "train"),
        tune_dir=str(run_dir / "tune"),
        max_failures=req.max_failures,
        ledger=ledger,
        data=store,
        checkpoints_to_tune=bool(scheduler_name and plugin(scheduler_name).copies_trials),
        checkpoint_every_epoch=plan.scheduler is not None,
        inner=plan.inner,
    )
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, spec=spec), placement.trial_resources
    )
    tune_dir = run_dir / "tune"
    if resuming and tune_dir.is_dir():
        torn = drop_torn_snapshots(tune_dir)
        if torn:
            print(
                f"tune_app: resume: set aside Tune's snapshot(s) {', '.join(torn)}: a file was "
                f"cut short when the driver died; restoring the newest intact one"
            )
    if resuming and tune.Tuner.can_restore(str(tune_dir)):
        # Tune brings back the searcher (with its state), the scheduler and the relay
        # it pickled when the run started; they find this driver by the run's key.
        return tune.Tuner.restore(
            str(tune_dir), trainable, resume_unfinished=True, resume_errored=False
        )
    scheduler = plan.scheduler
    tune_config = tune.TuneConfig(
        search_alg=ResumableSearcher(plan.searcher, ledger, key),
        scheduler=DecisionTap(scheduler, ledger, plan.objective.name) if scheduler else None,
        num_samples=req.max_trials if req.max_trials is not None else -1,
        max_concurrent_trials=placement.max_concurrent,
        time_budget_s=req.time_budget_s,
        # Trials reuse their process (no fresh Python, Tune and torch import per
        # trial); a Ray Train trial's controller and workers are always new.
        reuse_actors=REUSE_TRIAL_ACTORS and (placement.num_workers == 0 or scheduler is None),
    )
    return tune.Tuner(
        trainable,
        tune_config=tune_config,
        run_config=tune.RunConfig(
            name="tune", storage_path=str(run_dir), callbacks=[live.Relay(key)], verbose=0
        ),
    )


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


def _finish(
    plan: SearchPlan,
    recorder: TrackingCallback,
    manifest: Manifest,
    started: float,
    run_dir: Path,
    status: str,
) -> SearchResult:
    """Write the trials table, the history and the searcher's artifacts (run dir and
    MLflow) and close the parent run."""
    state = recorder.state
    trials, history = state.trials_frame(), state.history_frame()
    for frame, name in zip((trials, history), TABLES, strict=True):
        frame.to_parquet(run_dir / name, index=False)
        # CSV beside Parquet: the MLflow UI previews CSV, not Parquet.
        frame.to_csv(run_dir / Path(name).with_suffix(".csv"), index=False)
    best_config: dict[str, Any] = {}
    best_rec = None
    for rec in state.trials.values():
        if best_rec is None or state.better(rec.best, best_rec.best):
            best_rec = rec
    if best_rec is not None and not math.isnan(best_rec.best):
        best_config = dict(best_rec.config)
    wall = recorder.elapsed()
    artifacts = [n for t in TABLES for n in (t, str(Path(t).with_suffix(".csv")))]
    searcher = live.lookup(manifest.parent_run_id).searcher or plan.searcher
    if isinstance(searcher, RunArtifacts):
        artifacts += searcher.write_artifacts(run_dir)
    metric = plan.metric
    recorder.outbox.submit(
        {
            "k": "finish",
            "status": status,
            "spent": state.epochs_spent,
            "artifacts": artifacts,
            "metrics": {
                f"final_best_{metric}": state.best,
                "trials": len(trials),
                "wall_time_s": wall,
                "epochs_spent_total": state.charged,
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
        strategy=plan.strategy.label,
        seed=plan.request.seed,
        metric=metric,
        mode=state.mode,
        best_metric=state.best,
        best_config=best_config,
        trials=trials,
        history=history,
        epochs_spent=state.charged,
        budget_epochs=plan.request.budget_epochs,
        wall_time_s=wall,
        mlflow_run_id=manifest.parent_run_id,
        experiment_id=manifest.experiment_id,
        tracking_uri=recorder.outbox.tracker.uri,
        storage_path=str(run_dir),
    )
