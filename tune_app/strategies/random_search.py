"""``random``: independent uniform samples of the continuous ranges (seeded)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ray.tune.search import Searcher

from tune_app.spaces import SearchSpace
from tune_app.strategies.base import StrategyPlugin, parse_options


@dataclass(frozen=True)
class Options:
    """``random`` has no options."""


def build(
    space: SearchSpace, metric: str, mode: str, seed: int, options: Mapping[str, Any] | None
) -> Searcher:
    """Ray's ``OptunaSearch`` driving Optuna's seeded ``RandomSampler``."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    parse_options(Options, "random", options)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return OptunaSearch(
        space=OptunaSearch.convert_search_space(space.tune_param_space()),
        metric=metric,
        mode=mode,
        sampler=optuna.samplers.RandomSampler(seed=seed),
    )


PLUGIN = StrategyPlugin(build=build, options=Options)
