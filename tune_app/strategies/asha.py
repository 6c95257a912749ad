"""``asha``: asynchronous successive halving (stops poor trials early)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from tune_app.spaces import SearchSpace
from tune_app.strategies.base import StrategyPlugin
from tune_app.strategies.options import AshaOptions as Options
from tune_app.strategies.options import parse_options


def min_epochs(space: SearchSpace, options: Mapping[str, Any] | None) -> int:
    """The fewest epochs a trial can run under this scheduler."""
    return min(parse_options(Options, "asha", options).grace_period, space.max_epochs)


def build(
    space: SearchSpace, metric: str, mode: str, seed: int, options: Mapping[str, Any] | None
) -> TrialScheduler:
    """Ray's ``ASHAScheduler`` with the epoch as its time axis."""
    opts = parse_options(Options, "asha", options)
    return ASHAScheduler(
        time_attr="epoch",
        metric=metric,
        mode=mode,
        max_t=space.max_epochs,
        grace_period=min(opts.grace_period, space.max_epochs),
        reduction_factor=opts.reduction_factor,
    )


PLUGIN = StrategyPlugin(build=build, options=Options, min_epochs=min_epochs)
