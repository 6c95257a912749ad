"""tune_app: compare and run hyperparameter search strategies on Ray, tracked in MLflow."""

from __future__ import annotations

import os

# Ray reads this when it is first imported: a local Ray started by this process
# then listens on 127.0.0.1 only. Drivers started by `ray job submit` (RAY_ADDRESS
# set) keep the cluster's own address; set it to 1 yourself to reach a remote cluster.
if "RAY_ADDRESS" not in os.environ:
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
# Ray 2.60 turns token authentication on; keep it, and send the token when
# connecting to an existing cluster (~/.ray/auth_token or $RAY_AUTH_TOKEN).
os.environ.setdefault("RAY_AUTH_MODE", "token")
# Reports download many small artifacts; MLflow's per-file progress bars are noise.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from typing import TYPE_CHECKING, Any

from tune_app.errors import ConfigError, SpaceError, TaskError, TrackingError, TuneAppError

if TYPE_CHECKING:
    from tune_app.api import SearchResult, run_search
    from tune_app.comparison.compare import Comparison, compare

# Imported on first use: Ray worker processes that only need a small module (the
# epoch ledger actor) then start without importing torch, pandas and MLflow.
_LAZY = {
    "SearchResult": "tune_app.api",
    "run_search": "tune_app.api",
    "Comparison": "tune_app.comparison.compare",
    "compare": "tune_app.comparison.compare",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tune_app' has no attribute {name!r}")


__all__ = [
    "Comparison",
    "ConfigError",
    "SearchResult",
    "SpaceError",
    "TaskError",
    "TrackingError",
    "TuneAppError",
    "compare",
    "run_search",
]
__version__ = "0.1.0"
