"""Benchmarks with known optima: objectives whose "training" is a formula or a lookup.

A :class:`Benchmark` is an objective over a :class:`~tune_app.spaces.SearchSpace`
that returns the metric a trial would report after ``epoch`` epochs, instantly and
deterministically. Every strategy runs against it in seconds, and because the best
reachable value (:attr:`Benchmark.optimum`) is known, results are comparable as
*regret*. Each benchmark is a :class:`~tune_app.tasks.base.LookupObjective`, so the same
objective runs through :func:`tune_app.run_search` (Tune trials, schedulers, MLflow)
and through the fast in-process driver :mod:`tune_app.benchmarks.drive`.
"""

from __future__ import annotations

import hashlib
import json
import math
from abc import abstractmethod
from collections.abc import Mapping
from typing import Any

from tune_app.errors import TaskError
from tune_app.spaces import SearchSpace
from tune_app.tasks.base import LookupObjective


class Benchmark(LookupObjective):
    """An objective with a known optimum whose per-epoch values are computed, not trained."""

    @property
    @abstractmethod
    def space(self) -> SearchSpace:
        """The search space the benchmark is defined over."""

    @abstractmethod
    def evaluate(self, config: Mapping[str, Any], epoch: int) -> float:
        """The metric after ``epoch`` epochs (1-based) for ``config``; deterministic."""

    def lookup(self, config: Mapping[str, Any], epoch: int) -> dict[str, float]:
        """What a trial reports at ``epoch``: the metric under its own name."""
        if not 1 <= epoch <= self.max_epochs:
            raise TaskError(f"{self.name}: epoch must be in 1..{self.max_epochs}, got {epoch}")
        return {self.metric: float(self.evaluate(config, epoch))}

    def regret(self, value: float) -> float:
        """Distance of ``value`` from the optimum, >= 0 for every reachable value."""
        return value - self.optimum if self.mode == "min" else self.optimum - value


def config_noise(config: Mapping[str, Any], epoch: int, salt: str) -> float:
    """A standard-normal draw fixed by (config, epoch, salt): repeatable noise."""
    key = json.dumps(
        {k: round(float(v), 9) if isinstance(v, int | float) else v for k, v in config.items()},
        sort_keys=True,
    )
    digest = hashlib.sha256(f"{salt}|{epoch}|{key}".encode()).digest()
    u1 = (int.from_bytes(digest[:8], "big") + 0.5) / 2**64
    u2 = (int.from_bytes(digest[8:16], "big") + 0.5) / 2**64
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)
