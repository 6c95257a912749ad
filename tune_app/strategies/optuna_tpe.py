"""``optuna``: Optuna's Tree-structured Parzen Estimator (TPE), seeded."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ray.tune.search import Searcher

from tune_app.spaces import SearchSpace
from tune_app.strategies.base import StrategyPlugin, parse_options, require


@dataclass(frozen=True)
class Options:
    """Options of ``optuna``.

    Attributes:
        n_startup_trials: random trials before TPE starts modelling. Optuna's
            default is 10; 5 keeps TPE active at the small budgets we compare on.
        multivariate: model parameters jointly instead of independently.
    """

    n_startup_trials: int = 5
    multivariate: bool = False

    def __post_init__(self) -> None:
        require(
            isinstance(self.n_startup_trials, int) and self.n_startup_trials >= 0,
            "optuna: 'n_startup_trials' must be an integer >= 0",
        )


def build(
    space: SearchSpace, metric: str, mode: str, seed: int, options: Mapping[str, Any] | None
) -> Searcher:
    """Ray's ``OptunaSearch`` with a seeded ``TPESampler``."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    opts = parse_options(Options, "optuna", options)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=opts.n_startup_trials, multivariate=opts.multivariate
    )
    return OptunaSearch(
        space=OptunaSearch.convert_search_space(space.tune_param_space()),
        metric=metric,
        mode=mode,
        sampler=sampler,
    )


PLUGIN = StrategyPlugin(build=build, options=Options, warmup_option="n_startup_trials")
