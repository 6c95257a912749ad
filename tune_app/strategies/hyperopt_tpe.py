"""``hyperopt``: HyperOpt's TPE, seeded."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ray.tune.search import Searcher

from tune_app.spaces import SearchSpace
from tune_app.strategies.base import StrategyPlugin, parse_options, require


@dataclass(frozen=True)
class Options:
    """Options of ``hyperopt``.

    Attributes:
        n_initial_points: random trials before TPE starts modelling (default:
            Ray's ``HyperOptSearch`` and HyperOpt's own, 20).
        gamma: TPE's quantile splitting good from bad trials.
    """

    n_initial_points: int = 20
    gamma: float = 0.25

    def __post_init__(self) -> None:
        require(
            isinstance(self.n_initial_points, int) and self.n_initial_points >= 1,
            "hyperopt: 'n_initial_points' must be an integer >= 1",
        )
        require(0 < float(self.gamma) < 1, "hyperopt: 'gamma' must be in (0, 1)")


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
