"""The live driver objects of a run, found again by key after Tune restores.

Ray Tune pickles its searcher, scheduler and callbacks into the experiment
directory when a run starts, and ``Tuner.restore`` brings those pickled copies
back. What they need from the driver that is running now (the tracking
callback with its MLflow outbox, the budget callback) cannot be pickled, so
they hold only the run's *key* and look the live objects up here. The driver
registers them under the run's key before ``Tuner.fit`` and releases them after.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ray import tune

from tune_app.strategies.base import TrialTagger

if TYPE_CHECKING:
    from tune_app.tracking.callback import TrackingCallback

_LIVE: dict[str, Live] = {}


@dataclass
class Live:
    """What the running driver provides to the objects Tune pickled."""

    recorder: TrackingCallback
    callbacks: list[tune.Callback] = field(default_factory=list)
    searcher: Any = None  # the searcher Tune uses (after a restore: Tune's copy)

    def attach(self, searcher: Any) -> None:
        """Record the searcher Tune asks; its trial tags go to the recorder."""
        if searcher is not self.searcher:
            self.searcher = searcher
            self.recorder.tagger = searcher if isinstance(searcher, TrialTagger) else None


def register(key: str, objects: Live) -> None:
    """Make ``objects`` the live objects of run ``key``."""
    _LIVE[key] = objects


def release(key: str) -> None:
    """Forget run ``key`` (its search ended)."""
    _LIVE.pop(key, None)


def lookup(key: str) -> Live:
    """The live objects of run ``key``."""
    try:
        return _LIVE[key]
    except KeyError:
        raise RuntimeError(f"no live driver for run {key} in this process") from None


class Relay(tune.Callback):
    """The one callback Tune holds: forwards each hook to the live callbacks of
    run ``key`` (in order), so a restored experiment reaches this driver's."""

    def __init__(self, key: str) -> None:
        self.key = key

    def _each(self, hook: str, *args: Any, **kwargs: Any) -> None:
        for cb in lookup(self.key).callbacks:
            getattr(cb, hook)(*args, **kwargs)

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        """Forward."""
        self._each("on_step_begin", iteration, trials, **info)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Forward."""
        self._each("on_trial_start", iteration, trials, trial, **info)

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        """Forward."""
        self._each("on_trial_result", iteration, trials, trial, result, **info)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Forward."""
        self._each("on_trial_complete", iteration, trials, trial, **info)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Forward."""
        self._each("on_trial_error", iteration, trials, trial, **info)
