"""The public Python API: :func:`run_search`, :func:`resume_search` (and
:func:`tune_app.compare`).

Example (runs a real search on the embedded local Ray)::

    from tune_app import run_search
    result = run_search(strategy="asha", space="digits_mlp",
                        budget_epochs=24, seed=0)
    print(result.best_metric, result.best_config)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tune_app.errors import ConfigError
from tune_app.run.driver import SearchResult
from tune_app.run.request import DEFAULT_SPACE, SearchRequest

__all__ = ["SearchRequest", "SearchResult", "resume_search", "run_search"]


def run_search(
    strategy: str = "random", space: Any = DEFAULT_SPACE, **options: Any
) -> SearchResult:
    """Run one search: ``strategy`` on ``space`` within ``budget_epochs`` total epochs.

    ``options`` are the fields of :class:`~tune_app.run.request.SearchRequest`
    (``budget_epochs``, ``seed``, ``scheduler``, ``task``, ``num_workers``,
    ``tracking_uri``, ``strategy_options``, ``resume``, ...), each documented
    there with its default. Everything the user controls is validated before Ray
    starts; a bad argument raises a :class:`tune_app.errors.TuneAppError` that
    says what to change.
    """
    from tune_app.run import driver

    request = SearchRequest.make(strategy=strategy, space=space, **options)
    return driver.run(request.plan())


def resume_search(
    target: str | Path,
    *,
    tracking_uri: str | None = None,
    address: str | None = None,
    verbose: bool = True,
) -> SearchResult:
    """Continue the search in run directory (or of MLflow parent run) ``target``.

    The run's own request is read from its ``run.json``; finished trials stay
    finished, unfinished ones continue from their last checkpoint.
    """
    from tune_app.run import driver
    from tune_app.run.resume import Manifest, locate

    run_dir = locate(target, tracking_uri)
    m = Manifest.load(run_dir)
    if "***" in m.tracking_uri and tracking_uri is None:
        tracking_uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not tracking_uri:
            raise ConfigError(
                "the run's tracking URI holds a password that is not stored; pass "
                "--tracking-uri or set MLFLOW_TRACKING_URI"
            )
    request = m.to_request(
        tracking_uri=tracking_uri or m.tracking_uri,
        address=address,
        storage_path=run_dir.parent.parent,
        resume=run_dir,
        verbose=verbose,
    )
    return driver.run(request.plan())
