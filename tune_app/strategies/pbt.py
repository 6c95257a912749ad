"""``pbt``: population-based training (Jaderberg et al. 2017) with real weight
inheritance: Ray Tune's ``PopulationBasedTraining``, synchronous.

A *population* of ``population`` trials (unset: as many full-length trials as the
budget holds) is drawn at random and trained side by side; Tune time-slices them
when fewer fit the cluster at once. Every ``perturbation_interval`` epochs, once
all live members reached that epoch, the bottom ``quantile_fraction`` of them
*exploit*: each continues from a top member's checkpoint (its weights, optimiser
state and epoch; :mod:`tune_app.tasks.loop` restores it) with the top member's
hyperparameters *explored*: each parameter in ``mutate`` is either drawn afresh
(probability ``resample_probability``) or perturbed (a finite one moves one box
left or right, a log-scale one is multiplied by 0.8 or 1.2, a linear one moves by
a fifth of its range), and the other parameters are copied, so the parent's
weights fit. Because the exploit waits until every member reached the same epoch,
the child continues exactly where the parent stopped and the epoch budget counts
each trained epoch once. The child's MLflow run records the parent at every
exploit (tags ``pbt.parent`` and ``pbt.exploit.epoch_NNN``).

Ray's PBT refuses any search algorithm; here the first generation comes from
:class:`PopulationSearcher` (uniform seeded draws, then FINISHED), which never
sees the exploited configurations, so PBT composes with no other searcher.
Seeded: the scheduler keeps its own ``random`` state.
"""

from __future__ import annotations

import contextlib
import copy
import json
import random
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import numpy as np
from ray.tune.schedulers import PopulationBasedTraining, TrialScheduler
from ray.tune.schedulers.pbt import _PBTTrialState
from ray.tune.search import Searcher

from tune_app.errors import ConfigError
from tune_app.spaces import Param, SearchSpace
from tune_app.strategies.base import SpaceSearcher, StrategyPlugin
from tune_app.strategies.evolution import sample
from tune_app.strategies.options import PBTOptions as Options
from tune_app.strategies.options import PopulationOptions, parse_side

SEARCHER_OPTIONS = ("population",)  # the rest are the scheduler's
OptionsT = TypeVar("OptionsT", bound=PopulationOptions)


def split(cls: type[OptionsT], options: Mapping[str, Any] | None, side: str) -> OptionsT:
    """The options of ``pbt`` or ``pb2`` given on ``side`` (``searcher``: ``--opt``)."""
    return parse_side(cls, cls.NAME, options, side, SEARCHER_OPTIONS)


def mutable(space: SearchSpace, names: str | None, strategy: str = "pbt") -> list[str]:
    """The parameters PBT perturbs: ``names`` (comma-separated), else the continuous
    ones (rates and regularisers, in practice), else all."""
    if names is None:
        cont = [p.name for p in space.params if not p.is_finite and p.type != "int"]
        return cont or list(space.names)
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in space.names]
    if unknown:
        raise ConfigError(
            f"{strategy}: 'mutate' names {unknown}, not parameters of {space.source}; "
            f"use some of {', '.join(space.names)}"
        )
    return wanted


def perturb(p: Param, value: Any, rng: random.Random, resample: float) -> tuple[Any, str]:
    """One parameter explored: drawn afresh, or moved (see the module docstring)."""
    if rng.random() < resample:
        return sample(p, rng), "resample"
    if p.is_finite:
        i = p.nearest_box(value) if p.type != "choice" else list(p.boxes).index(value)
        j = min(max(i + rng.choice((-1, 1)), 0), len(p.boxes) - 1)
        return p.boxes[j], f"box {i} -> {j}"
    assert p.low is not None and p.high is not None
    if p.is_log:
        factor = rng.choice((0.8, 1.2))
        out, op = value * factor, f"* {factor}"
    else:
        step = rng.choice((-0.2, 0.2)) * (p.high - p.low)
        out, op = value + step, f"{step:+.4g}"
    out = min(max(out, p.low), p.high)
    if p.type == "int":
        out = round(out)
    return out, op


def _keep(config: dict[str, Any]) -> dict[str, Any]:
    """Ray's PBT needs an explore function or mutations; ours is :meth:`_get_new_config`."""
    return config


class PopulationSearcher(SpaceSearcher):
    """The first generation: ``population`` uniform seeded draws, then FINISHED.

    It handles concurrency itself (``set_max_concurrency`` returns True), so Tune
    creates the whole population even when fewer trials fit the cluster at once:
    PBT pauses and resumes them in turn.
    """

    def __init__(
        self, space: SearchSpace, metric: str | None, mode: str | None, seed: int, population: int
    ) -> None:
        super().__init__(space, metric, mode)
        self.population = population
        self.rng = random.Random(seed)
        self.drawn = 0

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        """The whole population runs (time-sliced by PBT), whatever the cluster holds."""
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        """The next member of the first generation, or FINISHED."""
        if self.drawn >= self.population:
            return Searcher.FINISHED  # type: ignore[return-value]
        self.drawn += 1
        return {p.name: sample(p, self.rng) for p in self.space.params}

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        """The population does not adapt; PBT does."""

    def save(self, checkpoint_path: str) -> None:
        """JSON: the draws so far and the generator's state."""
        version, internal, gauss = self.rng.getstate()
        with open(checkpoint_path, "w") as fh:
            json.dump({"drawn": self.drawn, "rng": [version, list(internal), gauss]}, fh)

    def restore(self, checkpoint_path: str) -> None:
        """Read what :meth:`save` wrote."""
        with open(checkpoint_path) as fh:
            state = json.load(fh)
        self.drawn = int(state["drawn"])
        version, internal, gauss = state["rng"]
        self.rng.setstate((version, tuple(internal), gauss))


class Synchronous:
    """What ``pbt`` and ``pb2`` add to Ray's schedulers (a mixin before them):
    synchronous exploits over the epoch axis, seeded (Python's and NumPy's global
    generators are swapped for the scheduler's own around each step), a searcher
    for the first generation, and no stall when a member ends early."""

    NAME = "pbt"
    _metric: str | None
    _metric_op: float | None
    _time_attr: str
    _trial_state: dict[Any, _PBTTrialState]
    _next_perturbation_sync: float
    _perturbation_interval: float

    def _setup(self, space: SearchSpace, seed: int, mutate: list[str], max_t: int) -> None:
        self.space, self.mutate, self.max_t = space, mutate, max_t
        self._rng = random.Random(seed)
        self._np_state: Any = np.random.RandomState(seed).get_state()
        self.exploits: list[dict[str, Any]] = []  # trial, parent, operations

    @contextlib.contextmanager
    def _seeded(self) -> Iterator[None]:
        """Run Ray's step with this scheduler's random state, not the process's."""
        outer, np_outer = random.getstate(), np.random.get_state()
        random.setstate(self._rng.getstate())
        np.random.set_state(self._np_state)
        try:
            yield
        finally:
            self._rng.setstate(random.getstate())
            self._np_state = np.random.get_state()
            random.setstate(outer)
            np.random.set_state(np_outer)

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        """Track the trial (Ray's check against search algorithms is skipped: the
        searcher here only draws the first generation)."""
        if not self._metric or not self._metric_op:
            raise ConfigError(f"{self.NAME}: the scheduler needs the space's metric and mode")
        self._trial_state[trial] = _PBTTrialState(trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        """Ray's step with this scheduler's own random state; no exploit at the last
        epoch (the trial ends there)."""
        if int(result.get(self._time_attr, 0)) >= self.max_t:
            return TrialScheduler.CONTINUE
        with self._seeded():
            decision: str = super().on_trial_result(tune_controller, trial, result)  # type: ignore[misc]
        return decision

    def choose_trial_to_run(self, tune_controller: Any) -> Any:
        """Ray's choice; when it finds none because every live member waits at the
        boundary for one that ended early (refused by the budget, failed), take the
        synchronous step Ray would have taken at that member's result."""
        trial = super().choose_trial_to_run(tune_controller)  # type: ignore[misc]
        if trial is None and self._stalled(tune_controller):
            with self._seeded():
                self._perturb_all(tune_controller)
            trial = super().choose_trial_to_run(tune_controller)  # type: ignore[misc]
        return trial

    def _stalled(self, tune_controller: Any) -> bool:
        live = [t for t in tune_controller.get_trials() if not t.is_finished()]
        return bool(live) and all(
            t.status == "PAUSED"
            and self._trial_state[t].last_train_time >= self._next_perturbation_sync
            for t in live
        )

    def _perturb_all(self, tune_controller: Any) -> None:
        """The synchronous exploit step of Ray's ``on_trial_result``, for all members."""
        lower, upper = self._quantiles()  # type: ignore[attr-defined]
        rest = [t for t in tune_controller.get_trials() if t not in lower and t not in upper]
        for t in upper + rest + lower:
            self._trial_state[t].last_perturbation_time = int(self._next_perturbation_sync)
            self._checkpoint_or_exploit(t, tune_controller, upper, lower)  # type: ignore[attr-defined]
        latest = max(self._trial_state[t].last_train_time for t in tune_controller.get_trials())
        step = self._next_perturbation_sync + self._perturbation_interval
        self._next_perturbation_sync = int(max(step, latest))

    def debug_string(self) -> str:
        """One line for Tune's status output."""
        return f"{self.NAME} (synchronous): {len(self.exploits)} exploit(s)"


class SeededPBT(Synchronous, PopulationBasedTraining):
    """Ray's synchronous PBT over the epoch axis, seeded, exploring in the space's
    geometry, with a searcher for its first generation."""

    def __init__(
        self,
        space: SearchSpace,
        seed: int,
        mutate: list[str],
        max_t: int,
        **kwargs: Any,
    ) -> None:
        super().__init__(custom_explore_fn=_keep, synch=True, time_attr="epoch", **kwargs)
        self._setup(space, seed, mutate, max_t)
        # Read by Ray only to name and log what changed (exploring is _get_new_config's).
        self._hyperparam_mutations = {n: space.param(n).tune_domain() for n in mutate}

    def _get_new_config(self, trial: Any, trial_to_clone: Any) -> tuple[dict, dict]:
        """The parent's config with each ``mutate`` parameter explored."""
        config = copy.deepcopy(trial_to_clone.config)
        ops: dict[str, str] = {}
        for name in self.mutate:
            if name in config:
                config[name], ops[name] = perturb(
                    self.space.param(name), config[name], self._rng, self._resample_probability
                )
        self.exploits.append(
            {"trial": trial.trial_id, "parent": trial_to_clone.trial_id, "operations": ops}
        )
        return config, ops


def interval(space: SearchSpace, opts: PopulationOptions) -> int:
    """Epochs between exploits (unset: a third of a trial); an exploit must fit."""
    every = opts.perturbation_interval or max(1, space.max_epochs // 3)
    if space.max_epochs < 2:
        raise ConfigError(
            f"{opts.NAME}: trials of {space.source} last one epoch, so no exploit fits "
            f"before the end; raise max_epochs to at least 2"
        )
    if every >= space.max_epochs:
        raise ConfigError(
            f"{opts.NAME}: 'perturbation_interval' {every} leaves no exploit before the "
            f"last epoch ({space.max_epochs}); use at most {space.max_epochs - 1}"
        )
    return every


def budget_defaults(space: SearchSpace, budget_epochs: int) -> dict[str, Any]:
    """The population: as many full-length trials as the budget holds (at least 2)."""
    return {"population": max(2, budget_epochs // max(space.max_epochs, 1))}


def plugin(
    build: Callable[[SearchSpace, str, str, int, Mapping[str, Any] | None], TrialScheduler],
    cls: type[PopulationOptions],
) -> StrategyPlugin:
    """The plugin of a population-based scheduler: its trials train to the end
    (members are copied, never stopped), the first generation is drawn by
    :class:`PopulationSearcher`, and trials copy each other's checkpoints."""

    def min_epochs(space: SearchSpace, options: Mapping[str, Any] | None) -> int:
        split(cls, options, "scheduler")
        return space.max_epochs

    def searcher(
        space: SearchSpace, metric: str, mode: str, seed: int, options: Mapping[str, Any] | None
    ) -> Searcher:
        opts = split(cls, options, "searcher")
        population = opts.population or budget_defaults(space, 2 * space.max_epochs)["population"]
        return PopulationSearcher(space, metric, mode, seed, population)

    return StrategyPlugin(
        build=build,
        options=cls,
        min_epochs=min_epochs,
        budget_defaults=budget_defaults,
        searcher=searcher,
        copies_trials=True,
    )


def build(
    space: SearchSpace, metric: str, mode: str, seed: int, options: Mapping[str, Any] | None
) -> TrialScheduler:
    """:class:`SeededPBT` over the epoch axis."""
    opts = split(Options, options, "scheduler")
    return SeededPBT(
        space,
        seed,
        mutable(space, opts.mutate),
        space.max_epochs,
        metric=metric,
        mode=mode,
        perturbation_interval=interval(space, opts),
        quantile_fraction=opts.quantile_fraction,
        resample_probability=opts.resample_probability,
        log_config=False,
    )


PLUGIN = plugin(build, Options)
