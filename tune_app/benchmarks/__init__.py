"""Benchmarks with known optima.

Their one list of names is :data:`BENCHMARKS` (:mod:`tune_app.benchmarks.registry`);
every benchmark is a :class:`~tune_app.tasks.base.LookupObjective` and is also
reachable as a task by name, so ``python -m tune_app run --space
benchmarks/<name>`` (a built-in space) tunes it like any model.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tune_app.benchmarks.registry import BENCHMARKS
from tune_app.errors import ConfigError

if TYPE_CHECKING:
    from tune_app.benchmarks.base import Benchmark

__all__ = ["BENCHMARKS", "Benchmark", "get"]


def get(name: str) -> Benchmark:
    """The benchmark registered as ``name``."""
    if name not in BENCHMARKS:
        raise ConfigError(f"unknown benchmark {name!r}; valid: {', '.join(BENCHMARKS)}")
    module, _, attr = BENCHMARKS[name].partition(":")
    attr, _, arg = attr.partition("/")
    factory = getattr(importlib.import_module(module), attr)
    bench: Benchmark = factory(arg) if arg else factory()
    return bench


def __getattr__(name: str) -> Any:
    if name == "Benchmark":  # imported on use: the task registry imports this package
        from tune_app.benchmarks.base import Benchmark

        return Benchmark
    raise AttributeError(f"module 'tune_app.benchmarks' has no attribute {name!r}")
