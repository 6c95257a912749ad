"""Where results go: run directories, the default MLflow store, reports.

Everything a search writes locally (``tune_runs/``, ``mlflow.db`` and its artifacts,
``compare`` reports) goes under one *home*:

- ``$TUNE_APP_HOME``, when set;
- else ``~/tune_app`` inside a ``ray job submit`` job, whose working directory is a
  temporary folder that Ray deletes with its session;
- else the current directory.

Relative local paths given by the user (``--storage-path runs``,
``--tracking-uri sqlite:///x.db``, ``--report-dir r``) are resolved against it.
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "TUNE_APP_HOME"
#: Set by Ray's job supervisor for a job's entrypoint process (and its children).
RAY_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"
JOB_HOME = Path("~/tune_app")


def in_ray_job() -> bool:
    """Whether this process is (a child of) a ``ray job submit`` entrypoint."""
    return RAY_JOB_ENV in os.environ


def home() -> Path:
    """The absolute directory that results go under (see the module docstring)."""
    explicit = os.environ.get(HOME_ENV, "").strip()
    if explicit:
        return Path(explicit).expanduser().resolve()
    if in_ray_job():
        return JOB_HOME.expanduser().resolve()
    return Path.cwd()


def local_path(path: str | Path) -> Path:
    """``path`` made absolute: a relative one is taken under :func:`home`."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else (home() / p).resolve()


def in_ray_temp(path: str | Path) -> bool:
    """Whether ``path`` lies in a Ray session's runtime-env folder (deleted with it)."""
    return "runtime_resources" in Path(path).parts
