"""Small user-defined tasks used by the tests (importable as ``tests.user_tasks``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from tune_app.tasks import ClassificationTask
from tune_app.tasks.base import LookupObjective


class Blobs(ClassificationTask):
    """Two Gaussian blobs in 2-D: a user task that learns in one epoch."""

    name = "blobs"

    def load_data(self, config: Mapping[str, Any], seed: int) -> tuple[Dataset, Dataset]:
        g = torch.Generator().manual_seed(seed)
        y = torch.randint(0, 2, (400,), generator=g)
        x = torch.randn(400, 2, generator=g) + 3.0 * y[:, None].float()
        return TensorDataset(x[:300], y[:300]), TensorDataset(x[300:], y[300:])

    def build_model(self, config: Mapping[str, Any]) -> nn.Module:
        return nn.Sequential(
            nn.Linear(2, int(config.get("hidden", 8))),
            nn.ReLU(),
            nn.Linear(int(config.get("hidden", 8)), 2),
        )


class Exploding(Blobs):
    """A task whose loss is always infinite: every trial diverges."""

    name = "exploding"

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return super().loss(output, target) * float("inf")


BLOBS = Blobs()


class Rendezvous(Blobs):
    """Blobs whose workers wait in ``build_model`` until ``parties`` workers (of any
    trials) have arrived, or ``timeout_s`` passed: concurrent trials then overlap
    for certain, however fast the machine is. (Not in ``load_data``: over Ray
    Train workers the run's data store loads the data, once.)"""

    name = "rendezvous"

    def __init__(self, folder: str = "", parties: int = 2, timeout_s: float = 120.0) -> None:
        self.folder, self.parties, self.timeout_s = folder, parties, timeout_s

    def build_model(self, config: Mapping[str, Any]) -> nn.Module:
        import os
        import time
        from pathlib import Path

        here = Path(self.folder)
        (here / f"arrived-{os.getpid()}").touch()
        deadline = time.monotonic() + self.timeout_s
        while len(list(here.glob("arrived-*"))) < self.parties and time.monotonic() < deadline:
            time.sleep(0.2)
        return super().build_model(config)


class Sphere(LookupObjective):
    """A lookup objective over any number of parameters ``x*``: the squared distance
    from 0.6 in every coordinate (minimised, optimum 0), one epoch."""

    name = "sphere"
    metrics = ("value",)

    def lookup(self, config: Mapping[str, Any], epoch: int) -> dict[str, float]:
        xs = [float(v) for k, v in config.items() if k.startswith("x")]
        return {"value": sum((x - 0.6) ** 2 for x in xs)}
