"""``random``: independent uniform samples of the ranges, and of the boxes of finite
parameters (seeded)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ray.tune.search import Searcher

from tune_app.spaces import SearchSpace
from tune_app.strategies.base import StrategyPlugin
from tune_app.strategies.options import RandomOptions as Options
from tune_app.strategies.options import parse_options


def build(
    space: SearchSpace, metric: str, mode: str, seed: int, options: Mapping[str, Any] | None
) -> Searcher:
    """Ray's ``OptunaSearch`` driving Optuna's seeded ``RandomSampler``."""
    import optuna

    from tune_app.strategies import optuna_space

    parse_options(Options, "random", options)
    return optuna_space.searcher(space, metric, mode, optuna.samplers.RandomSampler(seed=seed))


PLUGIN = StrategyPlugin(build=build, options=Options)
