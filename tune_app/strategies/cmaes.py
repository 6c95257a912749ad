"""``cmaes``: Optuna's CMA-ES sampler, seeded.

CMA-ES searches a continuous box. Integer and ``discrete`` parameters are searched
as integers (a discrete parameter by its box index) with CMA-ES *with margin*,
which keeps integer coordinates from freezing on one value; ``choice`` parameters
have no order, so Optuna samples them independently at random (its documented
fallback). The strategy is at its best on continuous spaces.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from ray.tune.search import Searcher

from tune_app.spaces import SearchSpace
from tune_app.strategies.base import StrategyPlugin
from tune_app.strategies.options import CmaesOptions as Options
from tune_app.strategies.options import parse_options


def build(
    space: SearchSpace, metric: str, mode: str, seed: int, options: Mapping[str, Any] | None
) -> Searcher:
    """Ray's ``OptunaSearch`` with a seeded ``CmaEsSampler`` (discrete: by box index)."""
    import optuna

    from tune_app.strategies import optuna_space

    opts = parse_options(Options, "cmaes", options)
    integral = any(p.discrete or p.type == "int" for p in space.params)
    with warnings.catch_warnings():  # with_margin is marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = optuna.samplers.CmaEsSampler(
            seed=seed,
            n_startup_trials=opts.n_startup_trials,
            popsize=opts.popsize,
            with_margin=integral if opts.with_margin is None else opts.with_margin,
            warn_independent_sampling=False,
        )
    return optuna_space.searcher(space, metric, mode, sampler, ordinal=True)


PLUGIN = StrategyPlugin(build=build, options=Options)
