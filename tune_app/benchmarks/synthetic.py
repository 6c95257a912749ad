"""Synthetic test functions with known optima (minimised).

- ``branin``: 2-d Branin-Hoo, three global minima of 0.397887.
- ``hartmann6``: 6-d Hartmann, global minimum -3.32237.
- ``levy12``: 12-d Levy, global minimum 0 at every x = 1 (a box of each parameter),
  more parameters than the DQN controller's network has slots.
- ``branin_mf``: a noisy multi-fidelity Branin over 9 "epochs": early epochs are
  biased towards a different region (low fidelity misleads, as short training
  does) and noisy; the noise and bias vanish at the last epoch, so the optimum is
  exactly Branin's.

Each space has value boxes, so grid search and the DQN controller can walk it,
while random search and TPE sample the continuous ranges.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from tune_app.benchmarks.base import Benchmark, config_noise
from tune_app.spaces import SearchSpace

_HARTMANN_A = (
    (10.0, 3.0, 17.0, 3.5, 1.7, 8.0),
    (0.05, 10.0, 17.0, 0.1, 8.0, 14.0),
    (3.0, 3.5, 1.7, 10.0, 17.0, 8.0),
    (17.0, 8.0, 0.05, 10.0, 0.1, 14.0),
)
_HARTMANN_P = (
    (0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886),
    (0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991),
    (0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650),
    (0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381),
)
_HARTMANN_ALPHA = (1.0, 1.2, 3.0, 3.2)


def branin(x1: float, x2: float) -> float:
    """Branin-Hoo on [-5, 10] x [0, 15]."""
    b, c = 5.1 / (4 * math.pi**2), 5 / math.pi
    t = 1 / (8 * math.pi)
    return (x2 - b * x1**2 + c * x1 - 6) ** 2 + 10 * (1 - t) * math.cos(x1) + 10


def hartmann6(x: tuple[float, ...]) -> float:
    """Hartmann-6 on [0, 1]^6."""
    total = 0.0
    for alpha, a_row, p_row in zip(_HARTMANN_ALPHA, _HARTMANN_A, _HARTMANN_P, strict=True):
        total -= alpha * math.exp(
            -sum(a * (xi - p) ** 2 for a, xi, p in zip(a_row, x, p_row, strict=True))
        )
    return total


def levy(x: tuple[float, ...]) -> float:
    """Levy in any dimension; minimum 0 at x = (1, ..., 1)."""
    w = [1.0 + (xi - 1.0) / 4.0 for xi in x]
    total = math.sin(math.pi * w[0]) ** 2
    for wi in w[:-1]:
        total += (wi - 1.0) ** 2 * (1.0 + 10.0 * math.sin(math.pi * wi + 1.0) ** 2)
    return total + (w[-1] - 1.0) ** 2 * (1.0 + math.sin(2.0 * math.pi * w[-1]) ** 2)


def _space(name: str, params: dict[str, Any], max_epochs: int) -> SearchSpace:
    return SearchSpace.from_dict(
        {
            "name": name,
            "task": name,
            "metric": "value",
            "mode": "min",
            "max_epochs": max_epochs,
            "params": params,
        },
        source=f"<benchmark {name}>",
    )


class Branin(Benchmark):
    """Branin-Hoo, one evaluation = one epoch."""

    name = "branin"
    metrics = ("value",)
    optimum = 0.397887

    @property
    def space(self) -> SearchSpace:
        return _space(
            self.name,
            {
                "x1": {"type": "uniform", "low": -5.0, "high": 10.0, "boxes": 16},
                "x2": {"type": "uniform", "low": 0.0, "high": 15.0, "boxes": 16},
            },
            self.max_epochs,
        )

    def evaluate(self, config: Mapping[str, Any], epoch: int) -> float:
        return branin(float(config["x1"]), float(config["x2"]))


class Hartmann6(Benchmark):
    """Hartmann-6, one evaluation = one epoch."""

    name = "hartmann6"
    metrics = ("value",)
    optimum = -3.32237

    @property
    def space(self) -> SearchSpace:
        box = {"type": "uniform", "low": 0.0, "high": 1.0, "boxes": 8}
        return _space(self.name, {f"x{i}": dict(box) for i in range(1, 7)}, self.max_epochs)

    def evaluate(self, config: Mapping[str, Any], epoch: int) -> float:
        return hartmann6(tuple(float(config[f"x{i}"]) for i in range(1, 7)))


class Levy12(Benchmark):
    """Levy in 12 dimensions on [-5, 10] (16 boxes: integers), one evaluation = one epoch."""

    name = "levy12"
    metrics = ("value",)
    optimum = 0.0

    @property
    def space(self) -> SearchSpace:
        box = {"type": "uniform", "low": -5.0, "high": 10.0, "boxes": 16}
        return _space(self.name, {f"x{i:02d}": dict(box) for i in range(1, 13)}, self.max_epochs)

    def evaluate(self, config: Mapping[str, Any], epoch: int) -> float:
        return levy(tuple(float(config[f"x{i:02d}"]) for i in range(1, 13)))


class BraninMultiFidelity(Branin):
    """Branin over 9 epochs: biased and noisy early, exact at the last epoch."""

    name = "branin_mf"
    max_epochs = 9

    def evaluate(self, config: Mapping[str, Any], epoch: int) -> float:
        x1, x2 = float(config["x1"]), float(config["x2"])
        gap = 1.0 - epoch / self.max_epochs  # 0 at the last epoch
        # Low fidelity rewards large x1 (the wrong basin) and adds a decaying offset,
        # like a learning curve that has not converged yet.
        bias = 20.0 * gap * (1.0 + (2.5 - x1) / 7.5) + 15.0 * gap
        noise = 3.0 * gap * config_noise(config, epoch, self.name)
        return branin(x1, x2) + bias + noise
