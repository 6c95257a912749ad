"""Drive a searcher against a benchmark in-process: ask, evaluate, tell.

The same searcher objects Tune uses (built from the strategy registry), without
Ray: each proposal is evaluated at full fidelity (``max_epochs``) at once, in
sequence. This is how thousands of (strategy, seed, budget) runs fit in minutes;
schedulers (ASHA, Hyperband) need Tune's trial machinery and run through
:func:`tune_app.run_search` on the same benchmarks instead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ray.tune.search import Searcher

from tune_app import strategies as registry
from tune_app.benchmarks.base import Benchmark
from tune_app.errors import ConfigError
from tune_app.spaces import SearchSpace


def variant(strategy: str) -> tuple[str, dict[str, Any]]:
    """``name@key=value,...`` (a searcher with options, e.g. ``dqn@design=1``) split
    into the searcher's name and its options (numbers parsed)."""
    name, _, spec = strategy.partition("@")
    opts: dict[str, Any] = {}
    for item in filter(None, spec.split(",")):
        key, _, raw = item.partition("=")
        value: Any = raw
        for cast in (int, float):
            try:
                value = cast(raw)
                break
            except ValueError:
                continue
        opts[key] = value
    return name, opts


@dataclass
class Trace:
    """What one driven search saw, in order."""

    strategy: str
    seed: int
    configs: list[dict[str, Any]] = field(default_factory=list)
    values: list[float] = field(default_factory=list)

    def best_so_far(self, mode: str) -> list[float]:
        """Best value after each evaluation (NaN/inf count as no improvement)."""
        out: list[float] = []
        best = math.inf if mode == "min" else -math.inf
        for v in self.values:
            if math.isfinite(v):
                best = min(best, v) if mode == "min" else max(best, v)
            out.append(best)
        return out


def drive(
    strategy: str | Searcher,
    bench: Benchmark,
    evaluations: int,
    seed: int,
    options: Mapping[str, Any] | None = None,
    name: str | None = None,
    space: SearchSpace | None = None,
) -> Trace:
    """Run ``evaluations`` full-fidelity trials of ``strategy`` on ``bench`` (over
    ``space`` instead of the benchmark's own, e.g. with ``discrete`` removed)."""
    if evaluations < 1:
        raise ConfigError(f"evaluations must be >= 1, got {evaluations}")
    space = space or bench.space
    if isinstance(strategy, Searcher):
        searcher, label = strategy, name or type(strategy).__name__
    else:
        searcher = registry.build_searcher(
            strategy, space, bench.metric, bench.mode, seed, dict(options or {})
        )
        label = name or strategy
    trace = Trace(label, seed)
    fixed = dict(space.fixed)
    for i in range(evaluations):
        trial_id = f"{label}-{seed}-{i:05d}"
        config = searcher.suggest(trial_id)
        if config is None or config == Searcher.FINISHED:
            break
        value = bench.evaluate({**fixed, **config}, bench.max_epochs)
        trace.configs.append(dict(config))
        trace.values.append(value)
        epochs = bench.max_epochs
        result = {bench.metric: value, "training_iteration": epochs, "epoch": epochs}
        searcher.on_trial_complete(trial_id, result)
    return trace
