"""Benchmarks with known optima, and the one list of their names.

``BENCHMARKS`` maps a name to its class; every benchmark is also a task (see
:mod:`tune_app.tasks`), so ``python -m tune_app run --space
search_spaces/benchmarks/<name>.yaml`` tunes it like any model.
"""

from __future__ import annotations

from tune_app.benchmarks.base import Benchmark
from tune_app.benchmarks.synthetic import Branin, BraninMultiFidelity, Hartmann6
from tune_app.benchmarks.tabular import DigitsTabular
from tune_app.errors import ConfigError

BENCHMARKS: dict[str, type[Benchmark]] = {
    "branin": Branin,
    "hartmann6": Hartmann6,
    "branin_mf": BraninMultiFidelity,
    "digits_tabular": DigitsTabular,
}

__all__ = ["BENCHMARKS", "Benchmark", "get"]


def get(name: str) -> Benchmark:
    """The benchmark registered as ``name``."""
    if name not in BENCHMARKS:
        raise ConfigError(f"unknown benchmark {name!r}; valid: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]()
