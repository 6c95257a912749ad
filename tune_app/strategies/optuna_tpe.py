"""``optuna``: Optuna's Tree-structured Parzen Estimator (TPE), seeded."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ray.tune.search import Searcher

from tune_app.spaces import SearchSpace
from tune_app.strategies.base import StrategyPlugin, parse_options, require, whole


@dataclass(frozen=True)
class Options:
    """Options of ``optuna`` (defaults: Optuna's own, so it runs as its docs run it).

    Attributes:
        n_startup_trials: random trials before TPE starts modelling.
        multivariate: model parameters jointly (multivariate TPE) instead of one
            at a time; unset: Optuna's default (multivariate since Optuna 5).
    """

    n_startup_trials: int = 10
    multivariate: bool | None = None

    def __post_init__(self) -> None:
        require(
            whole(self.n_startup_trials, 0),
            "optuna: 'n_startup_trials' must be an integer >= 0",
        )
        require(
            self.multivariate is None or isinstance(self.multivariate, bool),
            "optuna: 'multivariate' must be true, false or unset",
        )


def build(
    space: SearchSpace, metric: str, mode: str, seed: int, options: Mapping[str, Any] | None
) -> Searcher:
    """Ray's ``OptunaSearch`` with a seeded ``TPESampler``."""
    import optuna

    from tune_app.strategies import optuna_space

    opts = parse_options(Options, "optuna", options)
    sampler = optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=opts.n_startup_trials, multivariate=opts.multivariate
    )  # multivariate=None: Optuna's default
    return optuna_space.searcher(space, metric, mode, sampler)


PLUGIN = StrategyPlugin(build=build, options=Options, warmup_option="n_startup_trials")
