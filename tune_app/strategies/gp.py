"""``gp``: Bayesian optimisation with Optuna's Gaussian-process sampler, seeded."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ray.tune.search import Searcher

from tune_app.spaces import SearchSpace
from tune_app.strategies.base import StrategyPlugin
from tune_app.strategies.options import GPOptions as Options
from tune_app.strategies.options import parse_options


def build(
    space: SearchSpace, metric: str, mode: str, seed: int, options: Mapping[str, Any] | None
) -> Searcher:
    """Ray's ``OptunaSearch`` with a seeded ``GPSampler`` (finite parameters: categorical)."""
    import optuna

    from tune_app.strategies import optuna_space

    opts = parse_options(Options, "gp", options)
    sampler = optuna.samplers.GPSampler(
        seed=seed,
        n_startup_trials=opts.n_startup_trials,
        deterministic_objective=opts.deterministic_objective,
    )
    return optuna_space.searcher(space, metric, mode, sampler)


PLUGIN = StrategyPlugin(build=build, options=Options, warmup_option="n_startup_trials")
