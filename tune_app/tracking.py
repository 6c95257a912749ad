"""MLflow tracking: one parent run per search run, one nested child run per trial.

Only the Tune driver talks to MLflow (through :class:`TrackingCallback`), with an
``MlflowClient`` and explicit run ids, so concurrent trials never race on
"active run" state or log a parameter twice. The parent carries the best-so-far
metric with ``step = epochs spent``, so MLflow's compare view puts strategies on
the same budget axis, plus the trials table and history as Parquet artifacts.
"""

from __future__ import annotations

import math
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

from tune_app.errors import TrackingError

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
                raise TrackingError(f"MLflow server at {uri} answered HTTP {resp.status}")
    except (urllib.error.URLError, OSError) as exc:
        raise TrackingError(
            f"cannot reach the MLflow tracking server at {uri} ({exc}); start it, fix "
            f"--tracking-uri / MLFLOW_TRACKING_URI, or omit it to log to ./mlflow.db"
        ) from None


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


class Tracker:
    """Thin wrapper over ``MlflowClient`` for the runs of one search."""

    def __init__(self, uri: str, experiment: str) -> None:
        from mlflow.tracking import MlflowClient

        check_reachable(uri)
        validate_experiment_name(experiment)
        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        try:
            exp = self.client.get_experiment_by_name(experiment)
            self.experiment_id = (
                exp.experiment_id if exp else self.client.create_experiment(experiment)
            )
        except Exception as exc:
            raise TrackingError(f"cannot use MLflow tracking store {uri}: {exc}") from None
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

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int) -> None:
        """Log finite numeric metrics at ``step``."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [
            Metric(k, float(v), now, step)
            for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        ]
        if batch:
            self.safe(self.client.log_batch, run_id, metrics=batch)

    def end_run(self, run_id: str, status: str, tags: dict[str, str] | None = None) -> None:
        """Set final tags and terminate the run with MLflow ``status``."""
        for k, v in (tags or {}).items():
            self.safe(self.client.set_tag, run_id, k, v)
        self.safe(self.client.set_terminated, run_id, status)

    def log_frame(self, run_id: str, frame: pd.DataFrame, name: str) -> None:
        """Log a DataFrame as a Parquet artifact."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            frame.to_parquet(path, index=False)
            self.safe(self.client.log_artifact, run_id, str(path))


class TrackingCallback(tune.Callback):
    """Records every trial and epoch on the driver, mirrors them to MLflow and
    prints progress."""

    def __init__(
        self,
        tracker: Tracker | None,
        parent_run_id: str,
        metric: str,
        mode: str,
        budget_epochs: int,
        max_epochs: int,
        verbose: bool = True,
    ) -> None:
        self.tracker = tracker
        self.parent = parent_run_id
        self.metric, self.mode = metric, mode
        self.budget, self.max_epochs = budget_epochs, max_epochs
        self.verbose = verbose
        self.trials: dict[str, TrialRecord] = {}
        self.history: list[dict[str, Any]] = []
        self.epochs_spent = 0
        self.best = math.nan
        self.start = time.time()

    def better(self, a: float, b: float) -> bool:
        """Whether ``a`` beats ``b`` (NaN never beats anything; anything beats NaN)."""
        if math.isnan(a):
            return False
        if math.isnan(b):
            return True
        return a > b if self.mode == "max" else a < b

    def _say(self, text: str) -> None:
        if self.verbose:
            print(f"[{time.time() - self.start:6.1f}s] {text}", flush=True)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Open the trial's child run (once, even if the trial restarts)."""
        rec = self.trials.get(trial.trial_id)
        if rec is None:
            rec = TrialRecord(trial.trial_id, len(self.trials) + 1, dict(trial.config))
            self.trials[trial.trial_id] = rec
            if self.tracker is not None:
                rec.run_id = (
                    self.tracker.safe(
                        self.tracker.start_run,
                        f"trial-{rec.index:03d}",
                        {TRIAL_TAG: trial.trial_id},
                        rec.config,
                        parent=self.parent,
                    )
                    or ""
                )
            shown = ", ".join(f"{k}={_fmt(v)}" for k, v in rec.config.items())
            self._say(f"trial {rec.index} started: {shown}")
        rec.status = "RUNNING"

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        """Record one epoch: child metrics, and the parent's best-so-far curve."""
        rec = self.trials.get(trial.trial_id)
        if rec is None or "epoch" not in result:
            return
        self.epochs_spent += 1
        rec.epochs = max(rec.epochs, int(result["epoch"]))
        value = result.get(self.metric)
        value = float(value) if isinstance(value, int | float) else math.nan
        rec.last = value
        rec.diverged = rec.diverged or bool(result.get("diverged", 0))
        if result.get("node_id"):
            rec.node_ids.add(str(result["node_id"]))
        if self.better(value, rec.best):
            rec.best = value
        if self.better(value, self.best):
            self.best = value
        elapsed = time.time() - self.start
        self.history.append(
            {
                "epochs_spent": self.epochs_spent,
                "wall_time_s": elapsed,
                "trial_id": trial.trial_id,
                "epoch": int(result["epoch"]),
                self.metric: value,
                "best_so_far": self.best,
            }
        )
        if self.tracker is not None:
            step = int(result["epoch"])
            metrics = {k: v for k, v in result.items() if k not in ("epoch", "node_id")}
            if rec.run_id:
                self.tracker.log_metrics(rec.run_id, metrics, step)
            self.tracker.log_metrics(
                self.parent,
                {f"best_{self.metric}": self.best, "epochs_spent": self.epochs_spent},
                self.epochs_spent,
            )

    def _finish(self, trial: Any, status: str, error: str = "") -> None:
        rec = self.trials.get(trial.trial_id)
        if rec is None or rec.status in ("FINISHED", "FAILED"):
            return
        if rec.diverged and status == "FINISHED":
            status = "DIVERGED"
        rec.status, rec.error = ("FAILED" if status == "FAILED" else "FINISHED"), error
        if self.tracker is not None and rec.run_id:
            tags = {"tune_app.status": status, "tune_app.epochs": str(rec.epochs)}
            if error:
                tags["tune_app.error"] = error[-4000:]
            self.tracker.end_run(rec.run_id, "FAILED" if status != "FINISHED" else "FINISHED", tags)
        self._say(
            f"trial {rec.index} {status.lower()}: {rec.epochs} epoch(s), {self.metric} "
            f"{_fmt(rec.last)} | budget {self.epochs_spent}/{self.budget} epochs | "
            f"best {_fmt(self.best)}"
        )

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Close the child run as FINISHED (or DIVERGED)."""
        self._finish(trial, "FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Close the child run as FAILED, keeping the error text."""
        err = ""
        path = getattr(trial, "error_file", None)
        if path and os.path.exists(path):
            err = Path(path).read_text(errors="replace")
        self._finish(trial, "FAILED", err or "trial failed")

    def trials_frame(self) -> pd.DataFrame:
        """One row per trial: config, status, epochs, last and best metric, run id."""
        rows = []
        for rec in self.trials.values():
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


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)
