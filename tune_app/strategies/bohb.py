"""``bohb``: BOHB (Falkner, Klein and Hutter, ICML 2018), Ray Tune's ``TuneBOHB``
searcher with its ``HyperBandForBOHB`` scheduler.

Hyperband's brackets of successive halving decide how long each trial trains;
instead of drawing every new trial at random, BOHB fits kernel density estimates
of good and bad configurations at the largest budget (epoch count) that has
enough results (hpbandster's ``BOHB`` config generator, ``min_points_in_model``
per budget) and proposes the configuration maximising their ratio, with a
``random_fraction`` of proposals still drawn at random. ``HyperBandForBOHB`` fills
the largest bracket first and pauses a trial at the end of its rung until the
rung is complete, so every halving compares whole rungs; paused trials resume
from their checkpoints. Its brackets follow Ray's Hyperband over
``max_epochs`` with ``reduction_factor`` (eta).

The scheduler and the searcher only work together (the scheduler tells the
searcher each trial's budget and pauses), so ``bohb`` brings its own searcher and
composes with no other. Needs ``hpbandster`` and ``ConfigSpace`` (project
dependencies). hpbandster draws from NumPy's global generator; this searcher
keeps its own generator state and swaps it in around each call, so a seed gives
the same proposals.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import numpy as np
from ray.tune.schedulers import HyperBandForBOHB, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.bohb import TuneBOHB

from tune_app.spaces import SearchSpace
from tune_app.strategies.base import StrategyPlugin
from tune_app.strategies.options import BOHBOptions as Options
from tune_app.strategies.options import parse_side

SCHEDULER_OPTIONS = ("reduction_factor",)
SEARCHER_OPTIONS = tuple(
    name for name in Options.__dataclass_fields__ if name not in SCHEDULER_OPTIONS
)
R = TypeVar("R")


def _plain(value: Any) -> Any:
    """A NumPy scalar as the Python value (``SearchSpace.contains`` wants Python types)."""
    return value.item() if isinstance(value, np.generic) else value


class SeededBOHB(TuneBOHB):
    """``TuneBOHB`` over a :class:`SearchSpace`, with its own NumPy random state."""

    def __init__(
        self,
        space: SearchSpace,
        metric: str,
        mode: str,
        seed: int,
        bohb_config: dict[str, Any],
    ) -> None:
        self._np_state: Any = np.random.RandomState(seed).get_state()
        self._space_def = space
        cs = TuneBOHB.convert_search_space(space.tune_param_space())
        super().__init__(space=cs, bohb_config=bohb_config, metric=metric, mode=mode, seed=seed)
        self.model_based: dict[str, bool] = {}  # trial_id -> proposed by the model

    def _seeded(self, fn: Callable[[], R]) -> R:
        outer = np.random.get_state()
        np.random.set_state(self._np_state)
        try:
            return fn()
        finally:
            self._np_state = np.random.get_state()
            np.random.set_state(outer)

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        """BOHB's next proposal (model-based once a budget has enough results), as
        ``TuneBOHB.suggest`` makes it, keeping whether the model picked it."""
        limit = self._max_concurrent if self._max_concurrent > 0 else math.inf
        if len(self.running) >= limit:
            return None
        config, info = self._seeded(lambda: self.bohber.get_config(None))
        self.trial_to_params[trial_id] = copy.deepcopy(config)
        self.running.add(trial_id)
        self.model_based[trial_id] = bool(info.get("model_based_pick", False))
        return {k: _plain(v) for k, v in config.items()}

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        """Feed a rung's result (with its budget) to the model."""
        if trial_id in self.trial_to_params:
            self._seeded(lambda: TuneBOHB.on_trial_result(self, trial_id, result))

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        """Forget the trial (an unknown id is ignored)."""
        self.trial_to_params.pop(trial_id, None)
        self.paused.discard(trial_id)
        self.running.discard(trial_id)

    def trial_tags(self, trial_id: str) -> dict[str, str]:
        """MLflow tags: whether the model proposed the trial or it was drawn at random."""
        if trial_id not in self.model_based:
            return {}
        return {"bohb.model_based": str(self.model_based[trial_id]).lower()}


def _brackets(max_t: int, eta: int) -> list[int]:
    """The first rung of each of Ray's Hyperband brackets over ``max_t`` (non-empty ones)."""
    s_max_1 = int(np.round(np.log(max_t) / np.log(eta))) + 1
    return [r for s in range(s_max_1) if (r := int(max_t * eta ** (-s))) > 0]


def min_epochs(space: SearchSpace, options: Mapping[str, Any] | None) -> int:
    """The fewest epochs a trial can run: the smallest bracket's first rung."""
    opts = parse_side(Options, "bohb", options, "scheduler", SEARCHER_OPTIONS)
    return min(_brackets(space.max_epochs, opts.reduction_factor))


def build_searcher(
    space: SearchSpace, metric: str, mode: str, seed: int, options: Mapping[str, Any] | None
) -> Searcher:
    """BOHB's searcher (the kernel-density model)."""
    opts = parse_side(Options, "bohb", options, "searcher", SEARCHER_OPTIONS)
    config = {
        "top_n_percent": opts.top_n_percent,
        "num_samples": opts.num_samples,
        "random_fraction": opts.random_fraction,
        "bandwidth_factor": opts.bandwidth_factor,
    }
    if opts.min_points_in_model is not None:
        config["min_points_in_model"] = opts.min_points_in_model
    return SeededBOHB(space, metric, mode, seed, config)


def build(
    space: SearchSpace, metric: str, mode: str, seed: int, options: Mapping[str, Any] | None
) -> TrialScheduler:
    """``HyperBandForBOHB`` over the epoch axis, up to the space's ``max_epochs``."""
    opts = parse_side(Options, "bohb", options, "scheduler", SEARCHER_OPTIONS)
    return HyperBandForBOHB(
        time_attr="epoch",
        metric=metric,
        mode=mode,
        max_t=space.max_epochs,
        reduction_factor=opts.reduction_factor,
    )


PLUGIN = StrategyPlugin(
    build=build, options=Options, min_epochs=min_epochs, searcher=build_searcher
)
