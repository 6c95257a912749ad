"""The Tune callback that records every trial and prints progress.

Every trial event (start, epoch result, end) becomes a journal event first and an
MLflow write second, through the run's outbox (:mod:`tune_app.tracking.outbox`),
so the driver's state survives a crash and MLflow writes survive an outage. Only
the driver talks to MLflow, with explicit run ids: concurrent trials never race
on "active run" state. The parent run carries the best-so-far metric with
``step = epochs spent``, so MLflow's compare view puts strategies on one budget axis.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
from ray import tune

from tune_app.controller import inner_record
from tune_app.errors import TaskError
from tune_app.strategies.base import TrialTagger
from tune_app.tasks.base import NON_NUMERIC, check_numeric
from tune_app.tracking.outbox import Outbox
from tune_app.tracking.state import RunState, TrialRecord


def _task_error(text: str) -> str | None:
    """The message of a non-numeric-metric TaskError in a trial's error text."""
    for line in reversed(text.splitlines()):
        if NON_NUMERIC in line:
            return line.split("TaskError: ", 1)[-1].strip()
    return None


class TrackingCallback(tune.Callback):
    """Records every trial and epoch (journal first, then MLflow through the
    outbox) and prints progress. Results Tune delivers twice after a resume (a
    trial re-running an epoch from an older checkpoint) are recorded once."""

    def __init__(
        self,
        outbox: Outbox,
        state: RunState,
        budget_epochs: int,
        max_epochs: int,
        keys: tuple[str, ...] = (),
        verbose: bool = True,
        task: str = "",
        tagger: TrialTagger | None = None,
        on_first_step: Callable[[list[Any]], None] | None = None,
    ) -> None:
        self.outbox = outbox
        self.task = task
        self.keys = frozenset((*keys, state.metric, "train_loss", "diverged"))
        self.state = state
        self.metric, self.mode = state.metric, state.mode
        self.budget, self.max_epochs = budget_epochs, max_epochs
        self.verbose = verbose
        self.tagger = tagger  # the searcher, when it tags each trial's run (see run.live)
        self.on_first_step = on_first_step  # resume: reconcile Tune's trials with the journal
        self._stepped = False
        self.fatal: str | None = None

    # Compatibility with the previous in-memory recorder.
    @property
    def trials(self) -> dict[str, TrialRecord]:
        """Trial records by (canonical) trial id."""
        return self.state.trials

    @property
    def best(self) -> float:
        """Best metric so far."""
        return self.state.best

    @property
    def epochs_spent(self) -> int:
        """Epochs the budget paid for so far (recorded, and failed ones)."""
        return self.state.charged

    def better(self, a: float, b: float) -> bool:
        """Whether ``a`` beats ``b``."""
        return self.state.better(a, b)

    def elapsed(self) -> float:
        """Wall time of the search, across crashed and resumed drivers."""
        return self.state.elapsed_before + time.time() - self.state.start

    def _say(self, text: str) -> None:
        if self.verbose:
            print(f"[{self.elapsed():6.1f}s] {text}", flush=True)

    def _record(self, event: dict[str, Any]) -> None:
        self.state.apply(event)
        self.outbox.submit(event)

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        """First step: run ``on_first_step`` (resume reconciles Tune's trials with
        the journal); then retry pending MLflow writes (after their backoff)."""
        if self.fatal:
            raise TaskError(self.fatal)
        if not self._stepped:
            self._stepped = True
            if self.on_first_step is not None:
                self.on_first_step(trials)
        self.outbox.flush()

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Open the trial's child run (once, even if the trial restarts or resumes)."""
        tid = self.state.canonical(trial.trial_id)
        rec = self.state.trials.get(tid)
        if rec is None:
            config = dict(trial.config)
            index = len(self.state.trials) + 1
            tags = self.tagger.trial_tags(trial.trial_id) if self.tagger is not None else {}
            self._record({"k": "trial", "id": tid, "index": index, "config": config, "tags": tags})
            rec = self.state.trials[tid]
            shown = ", ".join(f"{k}={_fmt(v)}" for k, v in rec.config.items())
            self._say(f"trial {rec.index} started: {shown}")
        if not rec.ended:
            rec.status = "RUNNING"

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        """Record one epoch: child metrics, and the parent's best-so-far curve."""
        tid = self.state.canonical(trial.trial_id)
        rec = self.state.trials.get(tid)
        if rec is None or "epoch" not in result or rec.ended:
            return
        check_numeric(self.task, result, (self.metric,))
        epoch = int(result["epoch"])
        if epoch <= rec.epochs:
            return  # already recorded (re-run from an older checkpoint after a resume)
        metrics = {
            k: float(v)
            for k, v in result.items()
            if k in self.keys and isinstance(v, int | float) and not isinstance(v, bool)
        }
        event: dict[str, Any] = {
            "k": "result",
            "id": tid,
            "epoch": epoch,
            "metrics": metrics,
            "node_id": str(result.get("node_id", "")),
            "wall": round(self.elapsed(), 3),
        }
        series = inner_record.clean(result.get(inner_record.REPORT_KEY))
        if series:  # --inner-controller: its steps in this epoch, step = optimizer step
            event["series"] = series
        parent = result.get("inherited_from")
        if isinstance(parent, str) and parent:  # PBT: continued another trial's checkpoint
            event.update(self._exploit(rec, parent, int(result.get("inherited_epoch", 0)), trial))
        self._record(event)

    def _exploit(self, rec: TrialRecord, parent: str, at: int, trial: Any) -> dict[str, Any]:
        """The new config and the child-run tags of a trial that took over ``parent``'s
        checkpoint at epoch ``at``, with hyperparameters perturbed from the parent's."""
        config = dict(trial.config)
        known = self.state.trials.get(self.state.canonical(parent))
        name = f"trial-{known.index:03d}" if known is not None else parent
        shown = ", ".join(f"{k}={_fmt(v)}" for k, v in config.items())
        self._say(f"trial {rec.index} continues {name}'s epoch {at} with {shown}")
        detail = {"parent": parent, "parent_run": name, "epoch": at, "config": config}
        return {
            "config": config,
            "tags": {
                "pbt.parent": parent,
                "pbt.parent_run": name,
                f"pbt.exploit.epoch_{at:03d}": json.dumps(detail, default=str),
            },
        }

    def _finish(self, trial_id: str, status: str, error: str = "") -> None:
        rec = self.state.trials.get(self.state.canonical(trial_id))
        if rec is None or rec.ended:
            return
        if rec.diverged and status == "FINISHED":
            status = "DIVERGED"
        event: dict[str, Any] = {
            "k": "end",
            "id": rec.trial_id,
            "status": status,
            "epochs": rec.epochs,
        }
        if status == "FAILED":  # the epoch it failed in was charged (BudgetCallback)
            event["charged"] = min(rec.epochs + 1, self.max_epochs)
        if error:
            event["error"] = error[-4000:]
        if rec.series:
            event["artifacts"] = self._plot_inner(rec)
        self._record(event)
        self._say(
            f"trial {rec.index} {status.lower()}: {rec.epochs} epoch(s), {self.metric} "
            f"{_fmt(rec.last)} | budget {self.state.charged}/{self.budget} epochs | "
            f"best {_fmt(self.state.best)}"
        )

    def _plot_inner(self, rec: TrialRecord) -> list[str]:
        """The trial's inner-controller plot in the run directory (its path there),
        for the child run's artifacts; a plot that fails costs a warning only."""
        name = f"inner/trial-{rec.index:03d}.png"
        title = f"trial-{rec.index:03d}: inner controller, values over optimizer steps"
        try:
            inner_record.plot(rec.series, self.outbox.journal.path.parent / name, title)
        except Exception as exc:  # matplotlib or the disk; the metrics are in MLflow
            self._say(f"trial {rec.index}: no inner-controller plot ({exc})")
            return []
        return [name]

    def alias(self, new_id: str, old_id: str) -> None:
        """From now on, results of Tune trial ``new_id`` continue trial ``old_id``."""
        self._record({"k": "alias", "id": new_id, "to": old_id})
        rec = self.state.trials[old_id]
        self._say(f"trial {rec.index} continues after the crash as {new_id}")

    def complete(self, trial_id: str) -> None:
        """Close a trial the crashed driver saw train its last epoch, not end."""
        self._finish(trial_id, "FINISHED")

    def interrupt(self, trial_id: str) -> None:
        """Close a trial the crashed driver started and the resumed one cannot continue."""
        self._finish(
            trial_id, "INTERRUPTED", "the driver died and no budget was left to continue it"
        )

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Close the child run as FINISHED (or DIVERGED)."""
        self._finish(trial.trial_id, "FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """Close the child run as FAILED, keeping the error text."""
        err = ""
        path = getattr(trial, "error_file", None)
        if path and os.path.exists(path):
            err = Path(path).read_text(errors="replace")
        self._finish(trial.trial_id, "FAILED", err or "trial failed")
        # A broken task fails every trial the same way: stop the search at the next
        # step with the task's own message (raised here, Tune would wrap it).
        self.fatal = self.fatal or _task_error(err)

    def trials_frame(self) -> pd.DataFrame:
        """One row per trial (see :meth:`RunState.trials_frame`)."""
        return self.state.trials_frame()

    def history_frame(self) -> pd.DataFrame:
        """One row per recorded epoch."""
        return self.state.history_frame()


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    return str(v)
