"""``digits_tabular``: the full grid of ``digits_mlp`` trained once, looked up.

The table (``data/digits_mlp_tabular.parquet``, built by
``benchmarks/build_tabular.py``) holds validation accuracy and loss for every
configuration of :data:`GRID` at every epoch 1..9, trained with the project's own
loop on split seed 0. A trial's "training" looks its learning curve up, so every
strategy (schedulers included) runs in seconds with the optimum known: the best
accuracy anywhere in the table. Its parameters are declared ``discrete``, so every
strategy proposes grid values; a continuous proposal (the same space with
``discrete`` off, as ``benchmarks/compare_strategies.py --continuous`` runs it) is
snapped to the nearest grid value (on a log scale for log-scaled parameters).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

import pandas as pd

from tune_app.benchmarks.base import Benchmark
from tune_app.errors import TaskError
from tune_app.spaces import SearchSpace

TABLE = Path(__file__).parent / "data" / "digits_mlp_tabular.parquet"
MAX_EPOCHS = 9
# The grid the table covers: the value boxes of the space below.
GRID: dict[str, dict[str, Any]] = {
    "lr": {"type": "loguniform", "low": 1.0e-4, "high": 0.3, "boxes": 8, "discrete": True},
    "hidden": {
        "type": "int",
        "low": 8,
        "high": 128,
        "log": True,
        "boxes": [8, 16, 32, 64, 128],
        "discrete": True,
    },
    "layers": {"type": "int", "low": 1, "high": 3, "boxes": [1, 2, 3], "discrete": True},
    "dropout": {
        "type": "uniform",
        "low": 0.0,
        "high": 0.5,
        "boxes": [0.0, 0.25, 0.5],
        "discrete": True,
    },
}
FIXED = {"activation": "relu", "batch_size": 64, "optimizer": "adam"}


def grid_space() -> SearchSpace:
    """The tabular benchmark's search space (also the grid that was trained)."""
    return SearchSpace.from_dict(
        {
            "name": "digits_tabular",
            "task": "digits_tabular",
            "metric": "val_accuracy",
            "mode": "max",
            "max_epochs": MAX_EPOCHS,
            "params": GRID,
            "fixed": FIXED,
        },
        source="<benchmark digits_tabular>",
    )


class DigitsTabular(Benchmark):
    """Learning curves of 360 ``digits_mlp`` configurations x 9 epochs, looked up."""

    name = "digits_tabular"
    metric = "val_accuracy"
    metrics = ("val_accuracy", "val_loss")
    mode = "max"
    max_epochs = MAX_EPOCHS

    @property
    def space(self) -> SearchSpace:
        return grid_space()

    @cached_property
    def table(self) -> pd.DataFrame:
        """The stored curves, indexed by (lr, hidden, layers, dropout, epoch)."""
        if not TABLE.exists():
            raise TaskError(
                f"the tabular benchmark table {TABLE} is missing; rebuild it with "
                f"`python benchmarks/build_tabular.py`"
            )
        frame = pd.read_parquet(TABLE)
        return frame.set_index([*GRID, "epoch"]).sort_index()

    @property
    def optimum(self) -> float:  # type: ignore[override]
        return float(self.table[self.metric].max())

    def snap(self, config: Mapping[str, Any]) -> tuple[Any, ...]:
        """The grid point nearest to ``config``."""
        return tuple(p.boxes[p.nearest_box(float(config[p.name]))] for p in self.space.params)

    def curve(self, config: Mapping[str, Any]) -> pd.DataFrame:
        """The stored per-epoch rows of the grid point nearest to ``config``."""
        return self.table.loc[self.snap(config)]

    def lookup(self, config: Mapping[str, Any], epoch: int) -> dict[str, float]:
        if not 1 <= epoch <= self.max_epochs:
            raise TaskError(f"{self.name}: epoch must be in 1..{self.max_epochs}, got {epoch}")
        row = self.table.loc[(*self.snap(config), epoch)]
        return {m: float(row[m]) for m in self.metrics}

    def evaluate(self, config: Mapping[str, Any], epoch: int) -> float:
        return self.lookup(config, epoch)[self.metric]
