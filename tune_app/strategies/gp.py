"""``gp``: Bayesian optimisation with Optuna's Gaussian-process sampler, seeded."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ray.tune.search import Searcher

from tune_app.spaces import SearchSpace
from tune_app.strategies.base import StrategyPlugin, parse_options, require, whole


@dataclass(frozen=True)
class Options:
    """Options of ``gp`` (defaults: Optuna's).

    Attributes:
        n_startup_trials: random trials before the Gaussian process is fitted.
        deterministic_objective: the metric has no noise (e.g. a lookup table), so
            the GP interpolates instead of smoothing.
    """

    n_startup_trials: int = 10
    deterministic_objective: bool = False

    def __post_init__(self) -> None:
        require(
            whole(self.n_startup_trials, 0),
            "gp: 'n_startup_trials' must be an integer >= 0",
        )
        require(
            isinstance(self.deterministic_objective, bool),
            "gp: 'deterministic_objective' must be true or false",
        )


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
