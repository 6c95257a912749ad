"""The epoch budget, and lockstep between trials and the scheduler.

An :class:`EpochLedger` actor grants epochs ``(trial_id, epoch)`` until the
budget (total training epochs across all trials) is held. The searcher reserves
a trial's first epoch before proposing it, so every trial that starts gets to
train; rank 0 of the trial asks for each later epoch before training it, so
concurrent trials never overspend, and a retried epoch is not charged twice.

Ray Train reports asynchronously: without care a fast trial runs several epochs
ahead of the scheduler's decision to stop or pause it. With a scheduler, the run
is in *lockstep*: :class:`DecisionTap` records each decision in the ledger, and
epoch ``k+1`` is granted only after the scheduler has seen epoch ``k`` and said
CONTINUE (STOP refuses it; PAUSE makes the trial wait until Tune pauses it).
:class:`BudgetCallback` settles finished trials: any grant beyond the last
reported epoch goes back to the pool, so the budget counts recorded epochs.

After a driver crash the ledger is rebuilt from the run journal (:meth:`EpochLedger.seed`):
recorded epochs stay spent, and a trial the crashed driver had started and the
searcher re-suggests under a new id is mapped back to its first id (:meth:`alias`),
so re-running its recorded epochs costs nothing.
"""

from __future__ import annotations

import time
from typing import Any

import ray
from ray import tune
from ray.tune.schedulers import TrialScheduler

from tune_app.errors import ConfigError
from tune_app.run.ledger import GRANTED, REFUSED, WAIT, EpochLedger
from tune_app.tasks.base import check_numeric

__all__ = ["GRANTED", "REFUSED", "WAIT", "EpochLedger"]


LEDGER_NAMESPACE = "tune_app"


class LedgerRef:
    """A handle to the ledger actor that pickles as its *name*.

    Tune pickles the searcher, scheduler and callbacks (which hold the ledger)
    into its experiment directory; a raw actor handle there cannot be unpickled
    once the driver that owned it is gone, which would make resume impossible.
    """

    def __init__(self, name: str, handle: Any = None) -> None:
        self.name = name
        self._actor = handle

    def handle(self) -> Any:
        """The live actor handle (looked up by name on first use)."""
        if self._actor is None:
            self._actor = ray.get_actor(self.name, namespace=LEDGER_NAMESPACE)
        return self._actor

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_") or attr == "name":
            raise AttributeError(attr)
        return getattr(self.handle(), attr)

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (LedgerRef, (self.name,))

    def kill(self) -> None:
        """Stop the actor."""
        ray.kill(self.handle())


def start_ledger(key: str, budget: int, lockstep: bool = False, wait_s: float = 30.0) -> LedgerRef:
    """Start run ``key``'s ledger as a zero-CPU named Ray actor; return a reference.

    The name is the run's, so the searcher and scheduler that Tune restores after a
    driver crash reach the new driver's ledger. A dead driver's ledger is reaped by
    Ray within seconds; while its name is still taken, this waits up to ``wait_s``.
    """
    name = f"epoch-ledger-{key}"
    deadline = time.monotonic() + wait_s
    while True:
        try:
            actor = (
                ray.remote(num_cpus=0)(EpochLedger)
                .options(name=name, namespace=LEDGER_NAMESPACE)
                .remote(budget, lockstep)
            )
            return LedgerRef(name, actor)
        except ValueError:  # the name is taken
            if time.monotonic() > deadline:
                raise ConfigError(
                    f"run {key} already has a live epoch ledger: another driver is running "
                    f"this search; wait for it to end or stop it first"
                ) from None
            time.sleep(0.5)


def wait_for_epoch(ledger: Any, trial_id: str, epoch: int, timeout_s: float = 3600.0) -> bool:
    """Block until ``epoch`` is granted (True) or refused (False)."""
    deadline = time.monotonic() + timeout_s
    delay = 0.01
    while True:
        answer = ray.get(ledger.acquire.remote(trial_id, epoch))
        if answer != WAIT:
            return bool(answer == GRANTED)
        if time.monotonic() > deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.25)


class BudgetCallback(tune.Callback):
    """Driver side: re-arms trials when they (re)start and settles them at the end."""

    def __init__(self, ledger: Any, reported: dict[str, int] | None = None) -> None:
        self.ledger = ledger
        self.reported: dict[str, int] = dict(reported or {})

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Let a (re)started trial continue from its checkpoint (fire and forget: a
        trial asking before this lands is told to wait and asks again)."""
        self.ledger.restart.remote(trial.trial_id, self.reported.get(trial.trial_id, 0))

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        """Remember the trial's latest reported epoch."""
        if "epoch" in result:
            self.reported[trial.trial_id] = max(
                self.reported.get(trial.trial_id, 0), int(result["epoch"])
            )

    def _settle(self, trial: Any, extra: int = 0) -> None:
        # Fire and forget: Ray runs this driver's calls to the ledger in order, so
        # the searcher's next grant request already sees the released epochs.
        self.ledger.settle.remote(trial.trial_id, self.reported.get(trial.trial_id, 0) + extra)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Release grants past the last report."""
        self._settle(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Release grants past the epoch that failed: a failed epoch was trained and
        costs budget (so a task that always fails cannot spin the search forever)."""
        self._settle(trial, extra=1)


class DecisionTap(TrialScheduler):
    """Wraps a Tune scheduler and records each of its decisions in the ledger."""

    def __init__(self, scheduler: TrialScheduler, ledger: Any, task: str = "") -> None:
        self.scheduler = scheduler
        self.ledger = ledger
        self.task = task
        self._supports_buffered_results = scheduler.supports_buffered_results

    @property
    def metric(self) -> Any:
        """The wrapped scheduler's metric."""
        return self.scheduler.metric

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        """Forward."""
        return self.scheduler.set_search_properties(metric, mode, **spec)

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        """Forward."""
        self.scheduler.on_trial_add(tune_controller, trial)

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        """Forward."""
        self.scheduler.on_trial_error(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        """Forward, and tell the ledger what was decided for this epoch."""
        check_numeric(self.task, result, (self.scheduler.metric,))  # before it compares
        decision: str = self.scheduler.on_trial_result(tune_controller, trial, result)
        if "epoch" in result:
            self.ledger.decide.remote(trial.trial_id, int(result["epoch"]), decision)
        return decision

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> None:
        """Forward."""
        self.scheduler.on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        """Forward."""
        self.scheduler.on_trial_remove(tune_controller, trial)

    def choose_trial_to_run(self, tune_controller: Any) -> Any:
        """Forward."""
        return self.scheduler.choose_trial_to_run(tune_controller)

    def debug_string(self) -> str:
        """Forward."""
        return self.scheduler.debug_string()

    def save(self, checkpoint_path: str) -> None:
        """Forward."""
        self.scheduler.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        """Forward."""
        self.scheduler.restore(checkpoint_path)
