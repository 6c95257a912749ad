"""MLflow tracking: one parent run per search run, one nested child run per trial.

Only the Tune driver talks to MLflow (through :class:`TrackingCallback`), with an
``MlflowClient`` and explicit run ids, so concurrent trials never race on
"active run" state or log a parameter twice. The parent carries the best-so-far
metric with ``step = epochs spent``, so MLflow's compare view puts strategies on
the same budget axis, plus the trials table and history as Parquet artifacts.

Every trial event goes through the run's journal and outbox
(:mod:`tune_app.outbox`) first: the driver's state can be rebuilt from the
journal after a crash (:class:`RunState`), and MLflow writes that fail while the
server is down are sent later without duplicates.
"""

from __future__ import annotations

import math
import numbers
import os
import re
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from ray import tune

from tune_app.errors import TaskError, TrackingError
from tune_app.outbox import Outbox, redact_uri

PARENT_TAG = "mlflow.parentRunId"
TRIAL_TAG = "tune_app.trial_id"
_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+=:@ -]{0,199}$")


def resolve_tracking_uri(uri: str | None) -> str:
    """``uri``, else ``$MLFLOW_TRACKING_URI``, else ``./mlflow.db`` (SQLite) in the cwd."""
    if uri:
        return uri
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def validate_experiment_name(name: str) -> str:
    """Reject names that could escape a directory or confuse the UI."""
    if ".." in name or not _NAME_OK.match(name):
        raise TrackingError(
            f"experiment name {name!r} is not allowed: use letters, digits, spaces and "
            f"_ . + = : @ - (no '/', '\\\\' or '..'), at most 200 characters"
        )
    return name


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, before any training, if an HTTP tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s) as resp:
            if resp.status != 200:
                raise TrackingError(
                    f"MLflow server at {redact_uri(uri)} answered HTTP {resp.status}"
                )
    except (urllib.error.URLError, OSError) as exc:
        raise TrackingError(
            f"cannot reach the MLflow tracking server at {redact_uri(uri)} ({exc}); start it, fix "
            f"--tracking-uri / MLFLOW_TRACKING_URI, or omit it to log to ./mlflow.db"
        ) from None


# Bounded MLflow HTTP calls: the driver must never hang on a dead server (MLflow's
# defaults retry for minutes). Failed writes wait in the outbox instead.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}


NON_NUMERIC = "reported a non-numeric value"


def check_numeric(task: str, metrics: dict[str, Any], keys: Any = None) -> None:
    """Raise :class:`TaskError` naming the metric if one of ``metrics`` (or of its
    ``keys``) is not a number; NaN/inf are numbers (they mark a diverged trial)."""
    for key in metrics if keys is None else keys:
        value = metrics.get(key)
        if value is None or (isinstance(value, numbers.Real) and not isinstance(value, bool)):
            continue
        raise TaskError(
            f"task {task!r} {NON_NUMERIC} for metric {key!r}: {str(value)[:80]!r} "
            f"({type(value).__name__}); eval_metrics must return numbers "
            f"(use float(...) or tensor.item())"
        )


def _task_error(text: str) -> str | None:
    """The message of a non-numeric-metric TaskError in a trial's error text."""
    for line in reversed(text.splitlines()):
        if NON_NUMERIC in line:
            return line.split("TaskError: ", 1)[-1].strip()
    return None


@dataclass
class TrialRecord:
    """What the driver knows about one trial."""

    trial_id: str
    index: int
    config: dict[str, Any]
    run_id: str = ""
    status: str = "RUNNING"
    epochs: int = 0
    last: float = math.nan
    best: float = math.nan
    diverged: bool = False
    node_ids: set[str] = field(default_factory=set)
    started: float = field(default_factory=time.time)
    error: str = ""

    @property
    def ended(self) -> bool:
        """Whether the trial finished, failed or was given up."""
        return self.status in ("FINISHED", "FAILED", "INTERRUPTED")


class Tracker:
    """Thin wrapper over ``MlflowClient`` for the runs of one search."""

    def __init__(self, uri: str, experiment: str) -> None:
        from mlflow.tracking import MlflowClient

        validate_experiment_name(experiment)
        for key, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)
        check_reachable(uri)
        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        try:
            exp = self.client.get_experiment_by_name(experiment)
            self.experiment_id = (
                exp.experiment_id if exp else self.client.create_experiment(experiment)
            )
        except Exception as exc:
            raise TrackingError(
                f"cannot use MLflow tracking store {redact_uri(uri)}: {exc}"
            ) from None
        self.experiment = experiment
        self._warned = False

    def safe(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Call an MLflow method; on failure warn once and keep training."""
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if not self._warned:
                warnings.warn(
                    f"MLflow logging failed ({exc}); results stay in the run dir", stacklevel=2
                )
                self._warned = True
            return None

    def start_run(
        self, name: str, tags: dict[str, str], params: dict[str, Any], parent: str | None = None
    ) -> str:
        """Create a (nested, if ``parent``) run with tags and params; return its id."""
        from mlflow.entities import Param

        all_tags = {**tags, **({PARENT_TAG: parent} if parent else {})}
        run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        if params:
            self.client.log_batch(
                run.info.run_id,
                params=[Param(k, str(v)[:6000]) for k, v in sorted(params.items())],
            )
        return str(run.info.run_id)

    def find_child(self, parent: str, trial_id: str) -> str | None:
        """The child run of ``parent`` tagged with ``trial_id``, if MLflow has one."""
        runs = self.client.search_runs(
            [self.experiment_id],
            f"tags.`{PARENT_TAG}` = '{parent}' and tags.`{TRIAL_TAG}` = '{trial_id}'",
        )
        return str(runs[0].info.run_id) if runs else None

    def log_metrics(
        self, run_id: str, metrics: dict[str, float], step: int, strict: bool = False
    ) -> None:
        """Log finite numeric metrics at ``step`` (``strict``: raise on failure)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [
            Metric(k, float(v), now, step)
            for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        ]
        if batch and strict:
            self.client.log_batch(run_id, metrics=batch)
        elif batch:
            self.safe(self.client.log_batch, run_id, metrics=batch)

    def end_run(
        self, run_id: str, status: str, tags: dict[str, str] | None = None, strict: bool = False
    ) -> None:
        """Set final tags and terminate the run with MLflow ``status``."""
        call = (lambda fn, *a: fn(*a)) if strict else self.safe
        for k, v in (tags or {}).items():
            call(self.client.set_tag, run_id, k, v)
        call(self.client.set_terminated, run_id, status)

    def log_artifact(self, run_id: str, path: Path) -> None:
        """Upload one file (raises on failure)."""
        self.client.log_artifact(run_id, str(path))

    def log_frame(self, run_id: str, frame: pd.DataFrame, name: str) -> None:
        """Log a DataFrame as a Parquet artifact."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            frame.to_parquet(path, index=False)
            self.safe(self.client.log_artifact, run_id, str(path))


class RunState:
    """The driver's view of a search run, rebuilt from journal events.

    ``apply`` is the only mutator, so a state replayed from the journal after a
    crash equals the one the dead driver had when it wrote its last event.
    """

    def __init__(self, metric: str, mode: str) -> None:
        self.metric, self.mode = metric, mode
        self.trials: dict[str, TrialRecord] = {}
        self.aliases: dict[str, str] = {}
        self.history: list[dict[str, Any]] = []
        self.epochs_spent = 0
        self.best = math.nan
        self.start = time.time()
        self.elapsed_before = 0.0  # wall time of earlier (crashed) drivers
        self.orphans: list[tuple[str, dict[str, Any]]] = []

    @classmethod
    def replay(cls, metric: str, mode: str, events: list[dict[str, Any]]) -> RunState:
        """Rebuild the state from a journal."""
        state = cls(metric, mode)
        for event in events:
            state.apply(event)
        state.elapsed_before = max((float(h["wall_time_s"]) for h in state.history), default=0.0)
        return state

    def canonical(self, trial_id: str) -> str:
        """The id a trial was first recorded under (a re-suggested orphan maps back)."""
        return self.aliases.get(trial_id, trial_id)

    def better(self, a: float, b: float) -> bool:
        """Whether ``a`` beats ``b`` (NaN never beats anything; anything beats NaN)."""
        if math.isnan(a):
            return False
        if math.isnan(b):
            return True
        return a > b if self.mode == "max" else a < b

    def apply(self, event: dict[str, Any]) -> None:
        """Fold one journal event into the state (fills ``spent``/``best`` of results)."""
        kind = event.get("k")
        if kind == "trial":
            tid = str(event["id"])
            self.trials[tid] = TrialRecord(tid, int(event["index"]), dict(event["config"]))
        elif kind == "alias":
            self.aliases[str(event["id"])] = str(event["to"])
        elif kind == "ack" and event.get("run") and str(event["trial"]) in self.trials:
            self.trials[str(event["trial"])].run_id = str(event["run"])
        elif kind == "result":
            self._result(event)
        elif kind == "end" and str(event["id"]) in self.trials:
            rec = self.trials[str(event["id"])]
            status = str(event["status"])
            rec.status = status if status in ("FAILED", "INTERRUPTED") else "FINISHED"
            rec.error = str(event.get("error", ""))

    def _result(self, event: dict[str, Any]) -> None:
        rec = self.trials[str(event["id"])]
        metrics = dict(event.get("metrics") or {})
        self.epochs_spent += 1
        rec.epochs = int(event["epoch"])
        value = metrics.get(self.metric)
        value = float(value) if isinstance(value, int | float) else math.nan
        rec.last = value
        rec.diverged = rec.diverged or bool(metrics.get("diverged", 0))
        if event.get("node_id"):
            rec.node_ids.add(str(event["node_id"]))
        if self.better(value, rec.best):
            rec.best = value
        if self.better(value, self.best):
            self.best = value
        event["spent"], event["best"] = self.epochs_spent, self.best
        self.history.append(
            {
                "epochs_spent": self.epochs_spent,
                "wall_time_s": float(event.get("wall", 0.0)),
                "trial_id": rec.trial_id,
                "epoch": rec.epochs,
                self.metric: value,
                "best_so_far": self.best,
            }
        )

    def trials_frame(self) -> pd.DataFrame:
        """One row per trial: config, status, epochs, last and best metric, run id."""
        rows = []
        for rec in sorted(self.trials.values(), key=lambda r: r.index):
            row: dict[str, Any] = {
                "trial": rec.index,
                "trial_id": rec.trial_id,
                "status": rec.status,
                "epochs": rec.epochs,
                f"last_{self.metric}": rec.last,
                f"best_{self.metric}": rec.best,
                "diverged": rec.diverged,
                "nodes": ",".join(sorted(rec.node_ids)),
                "mlflow_run_id": rec.run_id,
            }
            row.update({f"config.{k}": v for k, v in rec.config.items()})
            rows.append(row)
        return pd.DataFrame(rows)

    def history_frame(self) -> pd.DataFrame:
        """One row per reported epoch, in arrival order, with the best-so-far value."""
        return pd.DataFrame(self.history)


class TrackingCallback(tune.Callback):
    """Records every trial and epoch (journal first, then MLflow through the
    outbox) and prints progress. Results Tune delivers twice after a resume (a
    trial re-running an epoch from an older checkpoint) are recorded once."""

    def __init__(
        self,
        outbox: Outbox,
        state: RunState,
        budget_epochs: int,
        max_epochs: int,
        keys: tuple[str, ...] = (),
        verbose: bool = True,
        ledger: Any = None,
        task: str = "",
    ) -> None:
        self.outbox = outbox
        self.task = task
        self.keys = frozenset((*keys, state.metric, "train_loss", "diverged"))
        self.state = state
        self.metric, self.mode = state.metric, state.mode
        self.budget, self.max_epochs = budget_epochs, max_epochs
        self.verbose = verbose
        self.ledger = ledger  # set on resume only: reconcile at the first step
        self._stepped = False
        self.fatal: str | None = None
        self.searcher: Any = None  # run_search sets it; see searcher_hook()

    def __getstate__(self) -> dict[str, Any]:
        """Tune pickles its callbacks into ``tuner.pkl``; a resumed driver attaches
        fresh ones, so the live outbox (thread, MLflow client) stays out of it."""
        state = self.__dict__.copy()
        state.update(outbox=None, searcher=None, ledger=None)
        return state

    # Compatibility with the previous in-memory recorder.
    @property
    def trials(self) -> dict[str, TrialRecord]:
        """Trial records by (canonical) trial id."""
        return self.state.trials

    @property
    def best(self) -> float:
        """Best metric so far."""
        return self.state.best

    @property
    def epochs_spent(self) -> int:
        """Epochs recorded so far."""
        return self.state.epochs_spent

    def better(self, a: float, b: float) -> bool:
        """Whether ``a`` beats ``b``."""
        return self.state.better(a, b)

    def elapsed(self) -> float:
        """Wall time of the search, across crashed and resumed drivers."""
        return self.state.elapsed_before + time.time() - self.state.start

    def _say(self, text: str) -> None:
        if self.verbose:
            print(f"[{self.elapsed():6.1f}s] {text}", flush=True)

    def _record(self, event: dict[str, Any]) -> None:
        self.state.apply(event)
        self.outbox.submit(event)

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        """First step: let resume reconcile Tune's trials with the journal; then
        retry pending MLflow writes (after their backoff)."""
        if self.fatal:
            raise TaskError(self.fatal)
        if not self._stepped:
            self._stepped = True
            if self.ledger is not None:
                from tune_app.resume import reconcile

                reconcile(self, self.ledger, trials, self.max_epochs)
        self.outbox.flush()

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Open the trial's child run (once, even if the trial restarts or resumes)."""
        tid = self.state.canonical(trial.trial_id)
        rec = self.state.trials.get(tid)
        if rec is None:
            config = dict(trial.config)
            index = len(self.state.trials) + 1
            tags = searcher_hook(self.searcher, "trial_tags", trial.trial_id) or {}
            self._record({"k": "trial", "id": tid, "index": index, "config": config, "tags": tags})
            rec = self.state.trials[tid]
            shown = ", ".join(f"{k}={_fmt(v)}" for k, v in rec.config.items())
            self._say(f"trial {rec.index} started: {shown}")
        if not rec.ended:
            rec.status = "RUNNING"

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        """Record one epoch: child metrics, and the parent's best-so-far curve."""
        tid = self.state.canonical(trial.trial_id)
        rec = self.state.trials.get(tid)
        if rec is None or "epoch" not in result or rec.ended:
            return
        check_numeric(self.task, result, (self.metric,))
        epoch = int(result["epoch"])
        if epoch <= rec.epochs:
            return  # already recorded (re-run from an older checkpoint after a resume)
        metrics = {
            k: float(v)
            for k, v in result.items()
            if k in self.keys and isinstance(v, int | float) and not isinstance(v, bool)
        }
        self._record(
            {
                "k": "result",
                "id": tid,
                "epoch": epoch,
                "metrics": metrics,
                "node_id": str(result.get("node_id", "")),
                "wall": round(self.elapsed(), 3),
            }
        )

    def _finish(self, trial_id: str, status: str, error: str = "") -> None:
        rec = self.state.trials.get(self.state.canonical(trial_id))
        if rec is None or rec.ended:
            return
        if rec.diverged and status == "FINISHED":
            status = "DIVERGED"
        event = {"k": "end", "id": rec.trial_id, "status": status, "epochs": rec.epochs}
        if error:
            event["error"] = error[-4000:]
        self._record(event)
        self._say(
            f"trial {rec.index} {status.lower()}: {rec.epochs} epoch(s), {self.metric} "
            f"{_fmt(rec.last)} | budget {self.state.epochs_spent}/{self.budget} epochs | "
            f"best {_fmt(self.state.best)}"
        )

    def alias(self, new_id: str, old_id: str) -> None:
        """From now on, results of Tune trial ``new_id`` continue trial ``old_id``."""
        self._record({"k": "alias", "id": new_id, "to": old_id})
        rec = self.state.trials[old_id]
        self._say(f"trial {rec.index} re-suggested after the crash; it continues as {new_id}")

    def interrupt(self, trial_id: str) -> None:
        """Close a trial the crashed driver started and the resumed one cannot continue."""
        self._finish(trial_id, "INTERRUPTED", "the driver died and the searcher did not re-suggest")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Close the child run as FINISHED (or DIVERGED)."""
        self._finish(trial.trial_id, "FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Close the child run as FAILED, keeping the error text."""
        err = ""
        path = getattr(trial, "error_file", None)
        if path and os.path.exists(path):
            err = Path(path).read_text(errors="replace")
        self._finish(trial.trial_id, "FAILED", err or "trial failed")
        # A broken task fails every trial the same way: stop the search at the next
        # step with the task's own message (raised here, Tune would wrap it).
        self.fatal = self.fatal or _task_error(err)

    def trials_frame(self) -> pd.DataFrame:
        """One row per trial (see :meth:`RunState.trials_frame`)."""
        return self.state.trials_frame()

    def history_frame(self) -> pd.DataFrame:
        """One row per recorded epoch."""
        return self.state.history_frame()


def searcher_hook(searcher: Any, name: str, *args: Any) -> Any:
    """Call the optional method ``name`` of ``searcher`` or of a searcher it wraps
    (e.g. the dqn controller's ``trial_tags``); None when none of them has it."""
    for _ in range(5):
        if searcher is None:
            return None
        method = getattr(type(searcher), name, None)
        if method is not None:
            return getattr(searcher, name)(*args)
        searcher = getattr(searcher, "searcher", None)
    return None


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)
