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

import copy
import json
import random
from collections.abc import Mapping
from typing import Any

from ray.tune.schedulers import PopulationBasedTraining, TrialScheduler
from ray.tune.schedulers.pbt import _PBTTrialState
from ray.tune.search import Searcher

from tune_app.errors import ConfigError
from tune_app.spaces import Param, SearchSpace
from tune_app.strategies.base import SpaceSearcher, StrategyPlugin
from tune_app.strategies.evolution import sample
from tune_app.strategies.options import PBTOptions as Options
from tune_app.strategies.options import parse_side

SEARCHER_OPTIONS = ("population",)  # the rest are the scheduler's


def _split(options: Mapping[str, Any] | None, side: str) -> Options:
    return parse_side(Options, "pbt", options, side, SEARCHER_OPTIONS)


def mutable(space: SearchSpace, names: str | None) -> list[str]:
    """The parameters PBT perturbs: ``names`` (comma-separated), else the continuous
    ones (rates and regularisers, in practice), else all."""
    if names is None:
        cont = [p.name for p in space.params if not p.is_finite and p.type != "int"]
        return cont or list(space.names)
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in space.names]
    if unknown:
        raise ConfigError(
            f"pbt: 'mutate' names {unknown}, not parameters of {space.source}; "
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


class SeededPBT(PopulationBasedTraining):
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
        self.space, self.mutate, self.max_t = space, mutate, max_t
        # Read by Ray only to name and log what changed (exploring is _get_new_config's).
        self._hyperparam_mutations = {n: space.param(n).tune_domain() for n in mutate}
        self._rng = random.Random(seed)
        self.exploits: list[dict[str, Any]] = []  # trial, parent, epoch, operations

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        """Track the trial (Ray's check against search algorithms is skipped: the
        searcher here only draws the first generation)."""
        if not self._metric or not self._metric_op:
            raise ConfigError("pbt: the scheduler needs the space's metric and mode")
        self._trial_state[trial] = _PBTTrialState(trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        """Ray's PBT step with this scheduler's own random state; no exploit at the
        last epoch (the trial ends there)."""
        if int(result.get(self._time_attr, 0)) >= self.max_t:
            return TrialScheduler.CONTINUE
        outer = random.getstate()
        random.setstate(self._rng.getstate())
        try:
            decision: str = super().on_trial_result(tune_controller, trial, result)
        finally:
            self._rng.setstate(random.getstate())
            random.setstate(outer)
        return decision

    def choose_trial_to_run(self, tune_controller: Any) -> Any:
        """Ray's choice; when it finds none because every live member waits at the
        boundary for one that ended early (refused by the budget, failed), take the
        synchronous step Ray would have taken at that member's result."""
        trial = super().choose_trial_to_run(tune_controller)
        if trial is None and self._stalled(tune_controller):
            outer = random.getstate()
            random.setstate(self._rng.getstate())
            try:
                self._perturb_all(tune_controller)
            finally:
                self._rng.setstate(random.getstate())
                random.setstate(outer)
            trial = super().choose_trial_to_run(tune_controller)
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
        lower, upper = self._quantiles()
        rest = [t for t in tune_controller.get_trials() if t not in lower and t not in upper]
        for t in upper + rest + lower:
            self._trial_state[t].last_perturbation_time = int(self._next_perturbation_sync)
            self._checkpoint_or_exploit(t, tune_controller, upper, lower)
        latest = max(self._trial_state[t].last_train_time for t in tune_controller.get_trials())
        step = self._next_perturbation_sync + self._perturbation_interval
        self._next_perturbation_sync = int(max(step, latest))

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

    def debug_string(self) -> str:
        """One line for Tune's status output."""
        return f"PBT (synchronous): {len(self.exploits)} exploit(s)"


def interval(space: SearchSpace, opts: Options) -> int:
    """Epochs between exploits (unset: a third of a trial)."""
    return opts.perturbation_interval or max(1, space.max_epochs // 3)


def min_epochs(space: SearchSpace, options: Mapping[str, Any] | None) -> int:
    """A PBT trial trains to the end (members are copied, never stopped)."""
    _split(options, "scheduler")
    return space.max_epochs


def budget_defaults(space: SearchSpace, budget_epochs: int) -> dict[str, Any]:
    """The population: as many full-length trials as the budget holds (at least 2)."""
    return {"population": max(2, budget_epochs // max(space.max_epochs, 1))}


def build_searcher(
    space: SearchSpace, metric: str, mode: str, seed: int, options: Mapping[str, Any] | None
) -> Searcher:
    """The first generation's :class:`PopulationSearcher`."""
    opts = _split(options, "searcher")
    population = opts.population or budget_defaults(space, 2 * space.max_epochs)["population"]
    return PopulationSearcher(space, metric, mode, seed, population)


def build(
    space: SearchSpace, metric: str, mode: str, seed: int, options: Mapping[str, Any] | None
) -> TrialScheduler:
    """:class:`SeededPBT` over the epoch axis."""
    opts = _split(options, "scheduler")
    every = interval(space, opts)
    if space.max_epochs < 2:
        raise ConfigError(
            f"pbt: trials of {space.source} last one epoch, so no exploit fits before the "
            f"end; raise max_epochs to at least 2"
        )
    if every >= space.max_epochs:
        raise ConfigError(
            f"pbt: 'perturbation_interval' {every} leaves no exploit before the last epoch "
            f"({space.max_epochs}); use at most {space.max_epochs - 1}"
        )
    return SeededPBT(
        space,
        seed,
        mutable(space, opts.mutate),
        space.max_epochs,
        metric=metric,
        mode=mode,
        perturbation_interval=every,
        quantile_fraction=opts.quantile_fraction,
        resample_probability=opts.resample_probability,
        log_config=False,
    )


PLUGIN = StrategyPlugin(
    build=build,
    options=Options,
    min_epochs=min_epochs,
    budget_defaults=budget_defaults,
    searcher=build_searcher,
    copies_trials=True,
)
