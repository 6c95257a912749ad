"""``pb2``: Population Based Bandits (Parker-Holder, Nguyen and Roberts, NeurIPS
2020): population-based training whose *explore* step is a GP bandit instead of a
random perturbation. Ray Tune's ``PB2``, synchronous, with real weight inheritance.

Everything but the explore step is ``pbt``'s (:mod:`tune_app.strategies.pbt`): the
first generation, synchronous exploits every ``perturbation_interval`` epochs,
the bottom ``quantile_fraction`` continuing a top member's checkpoint, exact
budget accounting and the MLflow parent tags. At an exploit, Ray's PB2 fits a
Gaussian process with a time-varying kernel to every member's improvement per
epoch so far (against epoch, value before, and hyperparameters) and picks the
``mutate`` parameters of the child by UCB, penalising those the members explored
in this round already hold. Every epoch is a data row (Ray adds one per exploit
boundary only, so at the first exploit the bandit has nothing to fit and the
child keeps its parent's configuration).

The GP works on coordinates where distances mean something: a log-scale
parameter in log10, a linear one as is, a finite one (value boxes) by its box
index, then mapped back (rounded for integers, snapped to the nearest box).
Unordered ``choice`` parameters have no such coordinate: ``pb2`` refuses them in
``mutate`` (``pbt`` can redraw them). Needs scikit-learn (a dependency already).
Seeded: NumPy's and Python's generators are the scheduler's own during each step.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from ray.tune.schedulers import PopulationBasedTraining, TrialScheduler
from ray.tune.schedulers.pb2 import PB2, _explore
from ray.tune.schedulers.pbt import _PBTTrialState
from sklearn.exceptions import ConvergenceWarning

from tune_app.errors import ConfigError
from tune_app.spaces import Param, SearchSpace
from tune_app.strategies.options import PB2Options as Options
from tune_app.strategies.pbt import Synchronous, interval, mutable, plugin, split


def bounds(p: Param) -> tuple[float, float]:
    """The GP's range of ``p`` (see :func:`to_unit`)."""
    if p.is_finite:
        return 0.0, float(len(p.boxes) - 1)
    assert p.low is not None and p.high is not None
    if p.is_log:
        return math.log10(p.low), math.log10(p.high)
    return float(p.low), float(p.high)


def to_unit(p: Param, value: Any) -> float:
    """``value`` of ``p`` as the GP sees it: box index, log10, or itself."""
    if p.is_finite:
        return float(p.nearest_box(value))
    return math.log10(value) if p.is_log else float(value)


def from_unit(p: Param, x: float) -> Any:
    """The value of ``p`` at the GP's coordinate ``x`` (inside the space)."""
    low, high = bounds(p)
    x = min(max(float(x), low), high)
    if p.is_finite:
        return p.boxes[round(x)]
    value = 10.0**x if p.is_log else x
    assert p.low is not None and p.high is not None
    value = min(max(value, p.low), p.high)
    return round(value) if p.type == "int" else value


class SeededPB2(Synchronous, PB2):
    """Ray's PB2, synchronous over the epoch axis, seeded, in the GP coordinates of
    :func:`to_unit`, with a searcher for its first generation."""

    NAME = "pb2"

    def __init__(
        self,
        space: SearchSpace,
        seed: int,
        mutate: list[str],
        max_t: int,
        **kwargs: Any,
    ) -> None:
        refused = [n for n in mutate if space.param(n).type == "choice"]
        if refused:
            raise ConfigError(
                f"pb2: {refused} are unordered choices a GP cannot model; leave them out "
                f"of --scheduler-opt mutate=... (or use pbt, which redraws them)"
            )
        ranges: dict[str, Any] = {n: list(bounds(space.param(n))) for n in mutate}
        super().__init__(synch=True, time_attr="epoch", hyperparam_bounds=ranges, **kwargs)
        self._setup(space, seed, mutate, max_t)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        """Add the epoch to PB2's data, then take pbt's step."""
        if self._metric in result and self._time_attr in result:
            self._record(trial, int(result[self._time_attr]), result[self._metric])
        return super().on_trial_result(tune_controller, trial, result)

    def _record(self, trial: Any, time: int, value: float) -> None:
        """One row of PB2's data, in GP coordinates. Ray records a row only at each
        exploit boundary, so at the first exploit no member has two rows and the
        bandit has nothing to fit (the child keeps its parent's config); a row per
        epoch gives it each member's improvement per epoch from the start."""
        assert self._metric_op is not None
        values = [to_unit(self.space.param(n), trial.config[n]) for n in self.mutate]
        row = pd.DataFrame(
            [[str(trial), time, *values, self._metric_op * float(value)]],
            columns=["Trial", "Time", *self.mutate, "Reward"],
        )
        self.data = pd.concat([self.data, row]).reset_index(drop=True)

    def _save_trial_state(
        self, state: _PBTTrialState, time: int, result: dict[str, Any], trial: Any
    ) -> Any:
        """Ray's record of the result (the data row is :meth:`_record`'s)."""
        return PopulationBasedTraining._save_trial_state(self, state, time, result, trial)

    def _get_new_config(self, trial: Any, trial_to_clone: Any) -> tuple[dict, dict]:
        """The parent's config with the ``mutate`` parameters chosen by the GP bandit
        (Ray's ``PB2._get_new_config`` in GP coordinates)."""
        # The points chosen in this round so far (a new epoch starts a new round).
        current: Any = self.current
        if self.data["Time"].max() > self.last_exploration_time:
            current = None
        parent = dict(trial_to_clone.config)
        unit: Any = {n: to_unit(self.space.param(n), parent[n]) for n in self.mutate}
        with warnings.catch_warnings():  # the GP's bounds on few points: not news
            warnings.simplefilter("ignore", ConvergenceWarning)
            chosen, data = _explore(
                self.data, self._hyperparam_bounds_flat, current, trial_to_clone, trial, unit
            )
        self.data = data.copy()
        new = np.array([[float(chosen[n]) for n in self.mutate]])
        if self.data["Time"].max() > self.last_exploration_time:
            self.last_exploration_time = self.data["Time"].max()
            current = new.copy()
        else:
            current = np.concatenate((current, new), axis=0)
        self.current = current
        config = copy.deepcopy(parent)
        ops: dict[str, str] = {}
        for name in self.mutate:
            config[name] = from_unit(self.space.param(name), chosen[name])
            ops[name] = f"{parent[name]} -> {config[name]}"
        self.exploits.append(
            {"trial": trial.trial_id, "parent": trial_to_clone.trial_id, "operations": ops}
        )
        return config, ops


def build(
    space: SearchSpace, metric: str, mode: str, seed: int, options: Mapping[str, Any] | None
) -> TrialScheduler:
    """:class:`SeededPB2` over the epoch axis."""
    opts = split(Options, options, "scheduler")
    names = mutable(space, opts.mutate, "pb2")
    if opts.mutate is None:  # by default the ordered ones only
        names = [n for n in names if space.param(n).type != "choice"]
    if not names:
        raise ConfigError(f"pb2: every parameter of {space.source} is an unordered choice; use pbt")
    return SeededPB2(
        space,
        seed,
        names,
        space.max_epochs,
        metric=metric,
        mode=mode,
        perturbation_interval=interval(space, opts),
        quantile_fraction=opts.quantile_fraction,
        log_config=False,
    )


PLUGIN = plugin(build, Options)
