"""The MLflow store: the one module that talks to MLflow.

Every MLflow call of tune_app goes through here (searches, ``compare``, the
report, ``resume``'s run lookup, the controller's pretraining), so all of them
get the same bounded HTTP timeouts, the same reachability check before any
training starts, and the same redaction of passwords in URIs.

* :class:`Tracker` writes: runs of one experiment (tags, params, metrics,
  artifacts). The search's writes go through :mod:`tune_app.tracking.outbox`.
* :class:`Reader` reads: runs, experiments and artifacts, with MLflow's errors
  turned into one-line :class:`~tune_app.errors.TrackingError`.
"""

from __future__ import annotations

import base64
import math
import os
import re
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import pandas as pd

from tune_app.errors import TrackingError
from tune_app.home import in_ray_temp, local_path

PARENT_TAG = "mlflow.parentRunId"
TRIAL_TAG = "tune_app.trial_id"
_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+=:@ -]{0,199}$")

# Bounded MLflow HTTP calls: the driver must never hang on a dead server (MLflow's
# defaults retry for minutes). Failed writes wait in the outbox instead.
HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
}


def redact_uri(uri: str) -> str:
    """``uri`` with any password replaced by ``***`` (safe to log and to store)."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri
    if parts.password is None:
        return uri
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


#: Where ``mlflow ui`` serves by default.
LOCAL_UI = "http://127.0.0.1:5000"


def ui_url(uri: str, experiment_id: str, run_id: str | None = None) -> str:
    """The MLflow UI page of an experiment's runs (or of one run) in the model-training
    view: ``uri`` itself for a tracking server, else where ``mlflow ui`` serves."""
    base = LOCAL_UI
    if uri.startswith(("http://", "https://")):
        parts = urlsplit(uri)
        host = parts.hostname or ""
        base = urlunsplit(parts._replace(netloc=f"{host}:{parts.port}" if parts.port else host))
    page = f"#/experiments/{experiment_id}/runs" + (f"/{run_id}" if run_id else "")
    return f"{base.rstrip('/')}/{page}?workflowType=machine_learning"


def resolve_tracking_uri(uri: str | None) -> str:
    """``uri``, else ``$MLFLOW_TRACKING_URI``, else ``mlflow.db`` (SQLite) in the home.

    The home is :func:`tune_app.home.home` (``$TUNE_APP_HOME``, ``~/tune_app`` in a
    Ray job, else the current directory). A relative SQLite path is made absolute
    here, against the home, so that ``run.json``, ``resume`` and ``sync`` find the
    same store from any directory. MLflow's file-system store (``file:`` or a bare
    directory) is refused with a one-line :class:`TrackingError`: MLflow 3 no longer
    accepts it.
    """
    uri = uri or os.environ.get("MLFLOW_TRACKING_URI") or ""
    if not uri:
        return f"sqlite:///{local_path('mlflow.db')}"
    if urlsplit(uri).scheme in ("", "file") and not uri.startswith("databricks"):
        raise TrackingError(
            f"tracking URI {redact_uri(uri)!r} is MLflow's file-system store, which MLflow 3 "
            f"no longer accepts; use sqlite:///path/to/mlflow.db or an http(s):// server"
        )
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        path, sep, query = uri[len(prefix) :].partition("?")
        if path and path != ":memory:":
            return f"{prefix}{local_path(path)}{sep}{query}"
    return uri


def validate_experiment_name(name: str) -> str:
    """Reject names that could escape a directory or confuse the UI."""
    if ".." in name or not _NAME_OK.match(name):
        raise TrackingError(
            f"experiment name {name!r} is not allowed: use letters, digits, spaces and "
            f"_ . + = : @ - (no '/', '\\\\' or '..'), at most 200 characters"
        )
    return name


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """Fail fast, before any training, if an HTTP tracking server does not answer.

    Credentials in the URI (``http://user:pass@host``) or in MLflow's
    ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD`` are sent as HTTP
    basic auth, as MLflow's own client sends them; they never appear in a message.
    """
    if not uri.startswith(("http://", "https://")):
        return
    parts = urlsplit(uri)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    plain = urlunsplit(parts._replace(netloc=host))
    request = urllib.request.Request(f"{plain.rstrip('/')}/health")
    user = parts.username or os.environ.get("MLFLOW_TRACKING_USERNAME")
    password = parts.password or os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user is not None and password is not None:
        token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            if resp.status != 200:
                raise TrackingError(
                    f"MLflow server at {redact_uri(uri)} answered HTTP {resp.status}"
                )
    except (urllib.error.URLError, OSError) as exc:
        raise TrackingError(
            f"cannot reach the MLflow tracking server at {redact_uri(uri)} ({exc}); start it, fix "
            f"--tracking-uri / MLFLOW_TRACKING_URI, or omit it to log to ./mlflow.db"
        ) from None


def _client(uri: str) -> Any:
    """An ``MlflowClient`` with bounded HTTP calls, after a reachability check."""
    from mlflow.tracking import MlflowClient

    for key, value in HTTP_DEFAULTS.items():
        os.environ.setdefault(key, value)
    check_reachable(uri)
    return MlflowClient(tracking_uri=uri)


#: Makes the MLflow 3 UI open an experiment in its model-training view, not GenAI's.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def _experiment(client: Any, uri: str, name: str) -> str:
    """The id of experiment ``name``, created if missing.

    With a SQLite store, a new experiment keeps its artifacts next to the database
    (``<db dir>/mlruns/<name>``) instead of MLflow's ``./mlruns`` in whatever the
    current directory is (a Ray job's is temporary). Experiments are tagged so
    that the UI shows runs, not traces.
    """
    exp = client.get_experiment_by_name(name)
    if exp is None:
        location, db = None, Path()
        if uri.startswith("sqlite:///"):
            db = Path(uri[len("sqlite:///") :].partition("?")[0])
        if uri.startswith("sqlite:///") and db.is_absolute():
            location = str(db.parent / "mlruns" / re.sub(r"[^A-Za-z0-9_.=+@-]+", "_", name))
        exp_id = str(client.create_experiment(name, artifact_location=location))
        client.set_experiment_tag(exp_id, *EXPERIMENT_KIND)
        return exp_id
    if in_ray_temp(exp.artifact_location or ""):
        warnings.warn(
            f"experiment {name!r} keeps its artifacts in a Ray job's temporary folder "
            f"({exp.artifact_location}); pass another --experiment so they are kept",
            stacklevel=3,
        )
    if EXPERIMENT_KIND[0] not in (exp.tags or {}):
        client.set_experiment_tag(exp.experiment_id, *EXPERIMENT_KIND)
    return str(exp.experiment_id)


class Tracker:
    """Thin wrapper over ``MlflowClient`` for the runs of one search."""

    def __init__(self, uri: str, experiment: str) -> None:
        validate_experiment_name(experiment)
        self.uri = uri
        self.client = _client(uri)
        try:
            self.experiment_id = _experiment(self.client, uri, experiment)
        except Exception as exc:
            raise TrackingError(
                f"cannot use MLflow tracking store {redact_uri(uri)}: {exc}"
            ) from None
        self.experiment = experiment
        self._warned = False

    @classmethod
    def for_run(cls, uri: str, run_id: str) -> Tracker:
        """A tracker for the experiment that holds run ``run_id``."""
        client = _client(uri)
        try:
            exp = client.get_experiment(client.get_run(run_id).info.experiment_id)
        except Exception as exc:
            raise TrackingError(f"cannot find run {run_id} in {redact_uri(uri)}: {exc}") from None
        return cls(uri, exp.name)

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

    def log_series(self, run_id: str, points: Sequence[tuple[int, str, float]]) -> None:
        """Log ``(step, key, value)`` points, batched (raises on failure)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, int(step)) for step, k, v in points]
        for i in range(0, len(batch), 1000):  # MLflow's limit per batch
            self.client.log_batch(run_id, metrics=batch[i : i + 1000])

    def log_summary(self, run_id: str, metrics: dict[str, float], tags: dict[str, str]) -> None:
        """Metrics (step 0) and tags of a run in one batch."""
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        self.client.log_batch(
            run_id,
            metrics=[Metric(k, v, now, 0) for k, v in sorted(metrics.items())],
            tags=[RunTag(k, v) for k, v in tags.items()],
        )

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        """Set tags on a run in one batch (raises on failure)."""
        from mlflow.entities import RunTag

        self.client.log_batch(run_id, tags=[RunTag(k, str(v)[:8000]) for k, v in tags.items()])

    def end_run(
        self, run_id: str, status: str, tags: dict[str, str] | None = None, strict: bool = False
    ) -> None:
        """Set final tags and terminate the run with MLflow ``status``."""
        call = (lambda fn, *a: fn(*a)) if strict else self.safe
        for k, v in (tags or {}).items():
            call(self.client.set_tag, run_id, k, v)
        call(self.client.set_terminated, run_id, status)

    def log_artifact(self, run_id: str, path: Path, folder: str | None = None) -> None:
        """Upload one file, optionally into artifact ``folder`` (raises on failure)."""
        self.client.log_artifact(run_id, str(path), folder)

    def reopen(self, run_id: str) -> None:
        """Mark a run RUNNING again (a resumed search); failures only warn."""
        self.safe(self.client.update_run, run_id, "RUNNING")

    def log_frame(self, run_id: str, frame: pd.DataFrame, name: str) -> None:
        """Log a DataFrame as a Parquet artifact ``name`` and, for the UI's preview,
        as CSV beside it."""
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            frame.to_parquet(path, index=False)
            frame.to_csv(path.with_suffix(".csv"), index=False)
            for f in (path, path.with_suffix(".csv")):
                self.safe(self.client.log_artifact, run_id, str(f))


class Reader:
    """Read access to an MLflow store; MLflow's errors become :class:`TrackingError`."""

    def __init__(self, uri: str | None, must_exist: bool = False) -> None:
        self.uri = resolve_tracking_uri(uri)
        local = self.uri.removeprefix("sqlite:///")
        if must_exist and self.uri.startswith("sqlite:///") and not Path(local).exists():
            raise TrackingError(
                f"no MLflow store at {local}; run from the directory of the search or "
                f"pass --tracking-uri"
            )
        self.client = _client(self.uri)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        from mlflow.exceptions import MlflowException

        try:
            return fn(*args, **kwargs)
        except MlflowException as exc:
            raise TrackingError(
                f"cannot read {what} from MLflow at {redact_uri(self.uri)}: {exc.message}"
            ) from None

    def get_run(self, run_id: str) -> Any | None:
        """The run with this id, or None when the store has none."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_run(run_id)
        except MlflowException:
            return None

    def experiment_id(self, name: str) -> str | None:
        """The id of the experiment called ``name``, or None."""
        exp = self._call(repr(name), self.client.get_experiment_by_name, name)
        return None if exp is None else str(exp.experiment_id)

    def search_runs(
        self,
        experiment_ids: Sequence[str],
        filter_string: str,
        order_by: Sequence[str] | None = None,
        max_results: int = 10_000,
    ) -> list[Any]:
        """Runs matching ``filter_string`` (MLflow's search syntax)."""
        return list(
            self._call(
                "runs",
                self.client.search_runs,
                list(experiment_ids),
                filter_string=filter_string,
                order_by=list(order_by) if order_by else None,
                max_results=max_results,
            )
        )

    def children(self, parent: Any) -> list[Any]:
        """The runs nested directly under ``parent`` (an MLflow run)."""
        return self.search_runs(
            [parent.info.experiment_id], f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'"
        )

    def frame(self, run_id: str, name: str) -> pd.DataFrame:
        """The Parquet artifact ``name`` of a run as a DataFrame (empty when missing)."""
        from mlflow.exceptions import MlflowException

        with tempfile.TemporaryDirectory() as tmp:
            try:
                path = self.client.download_artifacts(run_id, name, tmp)
                return pd.read_parquet(path)
            except (MlflowException, OSError):
                return pd.DataFrame()
