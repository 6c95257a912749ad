"""``hyperopt``: HyperOpt's TPE, seeded."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ray.tune.search import Searcher

from tune_app.spaces import SearchSpace
from tune_app.strategies.base import StrategyPlugin
from tune_app.strategies.options import HyperoptOptions as Options
from tune_app.strategies.options import parse_options


def build(
    space: SearchSpace, metric: str, mode: str, seed: int, options: Mapping[str, Any] | None
) -> Searcher:
    """Ray's ``HyperOptSearch``."""
    from ray.tune.search.hyperopt import HyperOptSearch

    opts = parse_options(Options, "hyperopt", options)
    return HyperOptSearch(
        space=HyperOptSearch.convert_search_space(space.tune_param_space()),
        metric=metric,
        mode=mode,
        n_initial_points=opts.n_initial_points,
        gamma=opts.gamma,
        random_state_seed=seed,
    )


PLUGIN = StrategyPlugin(build=build, options=Options, warmup_option="n_initial_points")
