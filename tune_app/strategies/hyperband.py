"""``hyperband``: Hyperband's brackets of successive halving, run asynchronously.

Synchronous Hyperband needs every bracket's trials up front; an epoch budget
does not fix the trial count in advance, and Ray's synchronous scheduler then
never halves. So this preset runs Hyperband's brackets asynchronously (Li et al.,
"A System for Massively Parallel Hyperparameter Tuning", 2020): one ASHA bracket
per Hyperband grace period, ``1 + floor(log_eta(max_epochs))`` brackets, trials
spread over brackets. With one bracket it is exactly ``asha``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

from tune_app.spaces import SearchSpace
from tune_app.strategies.base import StrategyPlugin
from tune_app.strategies.options import HyperbandOptions as Options
from tune_app.strategies.options import parse_options


class SeededAsyncHyperBand(AsyncHyperBandScheduler):
    """Ray's async Hyperband with a seeded choice of bracket per trial."""

    def __init__(self, seed: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._seed, self._added = seed, 0

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        """Assign the trial to a bracket, reproducibly for a given seed."""
        state = np.random.get_state()
        np.random.seed((self._seed * 1_000_003 + self._added) % 2**32)
        self._added += 1
        try:
            super().on_trial_add(tune_controller, trial)
        finally:
            np.random.set_state(state)


def min_epochs(space: SearchSpace, options: Mapping[str, Any] | None) -> int:
    """The fewest epochs a trial can run under this scheduler."""
    parse_options(Options, "hyperband", options)
    return 1


def build(
    space: SearchSpace, metric: str, mode: str, seed: int, options: Mapping[str, Any] | None
) -> TrialScheduler:
    """Async Hyperband over the epoch axis, up to the space's ``max_epochs``."""
    opts = parse_options(Options, "hyperband", options)
    eta = opts.reduction_factor
    brackets = opts.brackets or 1 + math.floor(math.log(space.max_epochs) / math.log(eta) + 1e-9)
    return SeededAsyncHyperBand(
        seed,
        time_attr="epoch",
        metric=metric,
        mode=mode,
        max_t=space.max_epochs,
        grace_period=1,
        reduction_factor=eta,
        brackets=brackets,
    )


PLUGIN = StrategyPlugin(build=build, options=Options, min_epochs=min_epochs)
