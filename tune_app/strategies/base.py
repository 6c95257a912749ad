"""The strategy contract and shared pieces: the plugin record every strategy
module exports, what a searcher may add to tracking, and the guarded searcher.

A strategy module (one per strategy, listed in :data:`tune_app.strategies.REGISTRY`)
defines ``build`` over its frozen options dataclass (declared, Ray-free, in
:mod:`tune_app.strategies.options`), and exports them as
``PLUGIN = StrategyPlugin(build=build, options=Options, ...)`` with its optional
hooks. Nothing is looked up by attribute name: what a strategy can do is what its
plugin declares.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import ray
from ray.tune.search import Searcher

from tune_app.strategies.options import parse_options

if TYPE_CHECKING:
    from tune_app.spaces import SearchSpace


@dataclass(frozen=True)
class StrategyPlugin:
    """What a strategy module exports as ``PLUGIN``.

    Attributes:
        build: ``build(space, metric, mode, seed, options)`` returns the Tune
            ``Searcher`` (searchers) or ``TrialScheduler`` (schedulers); unknown
            or bad options raise :class:`ConfigError`.
        options: the frozen dataclass of the strategy's options (validated in
            ``__post_init__``); the same class as its registry entry's.
        min_epochs: schedulers: ``min_epochs(space, options)``, the fewest epochs
            one trial can cost (what the budget must at least allow).
        budget_defaults: ``budget_defaults(space, budget_epochs)``, options derived
            from the budget (e.g. dqn's horizon); the user's options win.
        warmup_option: the option that counts random start-up trials before the
            model is used (``compare`` warns when they fill the whole budget).
        searcher: schedulers registered with ``own_searcher``:
            ``searcher(space, metric, mode, seed, options)`` builds the searcher
            that runs under them (the strategy's ``--opt`` options).
        copies_trials: the scheduler restores trials from checkpoints Tune holds
            (PBT's exploit), so Ray Train trials hand Tune every checkpoint.
    """

    build: Callable[[SearchSpace, str, str, int, Mapping[str, Any] | None], Any]
    options: type
    min_epochs: Callable[[SearchSpace, Mapping[str, Any] | None], int] | None = None
    budget_defaults: Callable[[SearchSpace, int], dict[str, Any]] | None = None
    warmup_option: str | None = None
    searcher: Callable[[SearchSpace, str, str, int, Mapping[str, Any] | None], Any] | None = None
    copies_trials: bool = False

    def parse(self, name: str, options: Mapping[str, Any] | None) -> Any:
        """The validated options object (a :class:`ConfigError` names the problem)."""
        return parse_options(self.options, name, options)


@runtime_checkable
class TrialTagger(Protocol):
    """A searcher that adds MLflow tags to each trial's child run (e.g. dqn's
    action and Q-values). Called once, when the trial starts."""

    def trial_tags(self, trial_id: str) -> dict[str, str]:
        """Tags for the child run of ``trial_id`` (empty when none)."""
        ...


@runtime_checkable
class RunArtifacts(Protocol):
    """A searcher that writes files about the whole search when it ends (e.g.
    dqn's walk plot); they are logged to the search's MLflow parent run."""

    def write_artifacts(self, run_dir: Path) -> list[str]:
        """Write files into ``run_dir``; return their names."""
        ...


def metric_value(result: Mapping[str, Any] | None, metric: str) -> float | None:
    """The finite value of ``metric`` in ``result``, or None (missing, NaN, inf, non-numeric)."""
    if not result:
        return None
    value = result.get(metric)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


class SpaceSearcher(Searcher):
    """Base of the searchers written here: the space comes from :class:`SearchSpace`
    (Tune's ``param_space`` is ignored), Tune's metric and mode are taken when unset,
    and each trial's last finite value is kept, for a trial a scheduler stops early."""

    def __init__(self, space: SearchSpace, metric: str | None, mode: str | None) -> None:
        super().__init__(metric=metric, mode=mode)
        self.space = space
        self.last: dict[str, float] = {}  # trial_id -> last reported metric

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict[str, Any], **spec: Any
    ) -> bool:
        """Take metric/mode from Tune when not set; the space comes from SearchSpace."""
        if self._metric is None and metric:
            self._metric = metric
        if self._mode is None and mode:
            self._mode = mode
        return True

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        """Remember the last reported value (a scheduler may stop the trial early)."""
        value = metric_value(result, self._metric or "")
        if value is not None:
            self.last[trial_id] = value

    def common_state(self, rng: random.Random) -> dict[str, Any]:
        """What every searcher here saves besides its own state (JSON): the last
        values, its generator ``rng``, metric and mode."""
        version, internal, gauss = rng.getstate()
        return {
            "last": self.last,
            "rng": [version, list(internal), gauss],
            "metric": self._metric,
            "mode": self._mode,
        }

    def set_common_state(self, state: Mapping[str, Any], rng: random.Random) -> None:
        """Read back what :meth:`common_state` returned."""
        self.last = {k: float(v) for k, v in state["last"].items()}
        version, internal, gauss = state["rng"]
        rng.setstate((version, tuple(internal), gauss))
        self._metric, self._mode = state["metric"], state["mode"]

    def final_value(
        self, trial_id: str, result: dict[str, Any] | None, error: bool
    ) -> float | None:
        """A completed trial's value: its final result's, else its last reported one;
        None if it failed or reported nothing finite. Forgets the trial's last value."""
        last = self.last.pop(trial_id, None)
        if error:
            return None
        value = metric_value(result, self._metric or "")
        return last if value is None else value


class GuardedSearcher(Searcher):
    """Wraps any searcher: reserves each trial's first epoch from the budget
    ledger (and finishes when the budget is spent), and turns missing, NaN or
    infinite results into failed trials, so no searcher sees a non-finite value."""

    def __init__(self, searcher: Searcher, ledger: Any = None) -> None:
        self.searcher = searcher
        self.ledger = ledger
        super().__init__(metric=searcher.metric, mode=searcher.mode)

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict[str, Any], **spec: Any
    ) -> bool:
        """Forward Tune's properties to the wrapped searcher."""
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        """Forward the concurrency limit."""
        return self.searcher.set_max_concurrency(max_concurrent)

    def suggest(self, trial_id: str) -> Any:
        """The wrapped searcher's next config, with its first epoch reserved.

        Returns None (ask again later) while running trials may still hand back
        unused epochs, and FINISHED once the budget is truly spent.
        """
        if self.ledger is None:
            return self.searcher.suggest(trial_id)
        if ray.get(self.ledger.acquire.remote(trial_id, 1)) != "granted":
            _, pending = ray.get(self.ledger.state.remote())
            return None if pending else Searcher.FINISHED
        config = self.searcher.suggest(trial_id)
        if config is None or config == Searcher.FINISHED:
            ray.get(self.ledger.settle.remote(trial_id, 0))
        return config

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        """Forward intermediate results that carry a finite metric."""
        if metric_value(result, self.searcher.metric) is not None:
            self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        """Forward completion; a trial without a finite metric counts as failed."""
        if error or metric_value(result, self.searcher.metric) is None:
            self.searcher.on_trial_complete(trial_id, result=None, error=True)
        else:
            self.searcher.on_trial_complete(trial_id, result=result, error=False)

    def on_pause(self, trial_id: str) -> None:
        """Forward a scheduler's pause to a searcher that counts its running trials
        (``HyperBandForBOHB`` calls this on Tune's searcher)."""
        hook = getattr(self.searcher, "on_pause", None)
        if hook is not None:
            hook(trial_id)

    def on_unpause(self, trial_id: str) -> None:
        """Forward a scheduler's unpause (see :meth:`on_pause`)."""
        hook = getattr(self.searcher, "on_unpause", None)
        if hook is not None:
            hook(trial_id)

    def save(self, checkpoint_path: str) -> None:
        """Save the wrapped searcher's state."""
        self.searcher.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        """Restore the wrapped searcher's state."""
        self.searcher.restore(checkpoint_path)

    def get_state(self) -> dict[str, Any]:
        """State of the wrapper itself (the ledger handle is re-attached on resume)."""
        return {}

    def set_state(self, state: dict[str, Any]) -> None:
        """Nothing to restore for the wrapper itself."""
