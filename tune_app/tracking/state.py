"""The driver's view of a search run, rebuilt from the run journal.

:class:`RunState` folds journal events (:mod:`tune_app.tracking.outbox`) into
per-trial records, the budget spent and the best-so-far curve. ``apply`` is its
only mutator, so the state a resumed driver replays equals the one the dead
driver had when it wrote its last event.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import pandas as pd


@dataclass
class TrialRecord:
    """What the driver knows about one trial."""

    trial_id: str
    index: int
    config: dict[str, Any]
    run_id: str = ""
    status: str = "RUNNING"
    epochs: int = 0
    last: float = math.nan
    best: float = math.nan
    diverged: bool = False
    node_ids: set[str] = field(default_factory=set)
    started: float = field(default_factory=time.time)
    error: str = ""
    charged: int = 0  # epochs the budget paid: recorded, plus a failed trial's last
    series: list[dict[str, float]] = field(default_factory=list)  # inner controller steps

    @property
    def ended(self) -> bool:
        """Whether the trial finished, failed or was given up."""
        return self.status in ("FINISHED", "FAILED", "INTERRUPTED")


class RunState:
    """The driver's view of a search run, rebuilt from journal events."""

    def __init__(self, metric: str, mode: str) -> None:
        self.metric, self.mode = metric, mode
        self.trials: dict[str, TrialRecord] = {}
        self.aliases: dict[str, str] = {}
        self.history: list[dict[str, Any]] = []
        self.epochs_spent = 0  # epochs recorded (the x axis of the run's history)
        self.epochs_failed = 0  # epochs charged to trials that failed in them
        self.best = math.nan
        self.start = time.time()
        self.elapsed_before = 0.0  # wall time of earlier (crashed) drivers
        self.orphans: list[tuple[str, dict[str, Any]]] = []
        # Trials that started *and finished* after Tune's last snapshot: (trial id,
        # config, last metric value, epochs). The restored searcher never saw them.
        self.replays: list[tuple[str, dict[str, Any], float, int]] = []

    @classmethod
    def replay(cls, metric: str, mode: str, events: list[dict[str, Any]]) -> RunState:
        """Rebuild the state from a journal."""
        state = cls(metric, mode)
        for event in events:
            state.apply(event)
        state.elapsed_before = max((float(h["wall_time_s"]) for h in state.history), default=0.0)
        return state

    def canonical(self, trial_id: str) -> str:
        """The id a trial was first recorded under (a re-suggested orphan maps back)."""
        return self.aliases.get(trial_id, trial_id)

    def better(self, a: float, b: float) -> bool:
        """Whether ``a`` beats ``b`` (NaN never beats anything; anything beats NaN)."""
        if math.isnan(a):
            return False
        if math.isnan(b):
            return True
        return a > b if self.mode == "max" else a < b

    def apply(self, event: dict[str, Any]) -> None:
        """Fold one journal event into the state (fills ``spent``/``best`` of results)."""
        kind = event.get("k")
        if kind == "trial":
            tid = str(event["id"])
            self.trials[tid] = TrialRecord(tid, int(event["index"]), dict(event["config"]))
        elif kind == "alias":
            self.aliases[str(event["id"])] = str(event["to"])
        elif kind == "ack" and event.get("run") and str(event["trial"]) in self.trials:
            self.trials[str(event["trial"])].run_id = str(event["run"])
        elif kind == "result":
            self._result(event)
        elif kind == "end" and str(event["id"]) in self.trials:
            rec = self.trials[str(event["id"])]
            status = str(event["status"])
            rec.status = status if status in ("FAILED", "INTERRUPTED") else "FINISHED"
            rec.error = str(event.get("error", ""))
            rec.charged = max(rec.epochs, int(event.get("charged", rec.epochs)))
            self.epochs_failed += rec.charged - rec.epochs

    @property
    def charged(self) -> int:
        """Epochs the budget paid for: those recorded, plus the epoch each failed
        trial failed in (trained, so charged; see :class:`BudgetCallback`)."""
        return self.epochs_spent + self.epochs_failed

    def _result(self, event: dict[str, Any]) -> None:
        rec = self.trials[str(event["id"])]
        metrics = dict(event.get("metrics") or {})
        if event.get("config"):  # PBT changed the trial's hyperparameters at an exploit
            rec.config = dict(event["config"])
        self.epochs_spent += 1
        rec.epochs = int(event["epoch"])
        rec.series.extend(event.get("series") or ())
        value = metrics.get(self.metric)
        value = float(value) if isinstance(value, int | float) else math.nan
        rec.last = value
        rec.diverged = rec.diverged or bool(metrics.get("diverged", 0))
        if event.get("node_id"):
            rec.node_ids.add(str(event["node_id"]))
        if self.better(value, rec.best):
            rec.best = value
        if self.better(value, self.best):
            self.best = value
        event["spent"], event["best"] = self.epochs_spent, self.best
        self.history.append(
            {
                "epochs_spent": self.epochs_spent,
                "wall_time_s": float(event.get("wall", 0.0)),
                "trial_id": rec.trial_id,
                "epoch": rec.epochs,
                self.metric: value,
                "best_so_far": self.best,
            }
        )

    def trials_frame(self) -> pd.DataFrame:
        """One row per trial: config, status, epochs, last and best metric, run id."""
        rows = []
        for rec in sorted(self.trials.values(), key=lambda r: r.index):
            row: dict[str, Any] = {
                "trial": rec.index,
                "trial_id": rec.trial_id,
                "status": rec.status,
                "epochs": rec.epochs,
                f"last_{self.metric}": rec.last,
                f"best_{self.metric}": rec.best,
                "diverged": rec.diverged,
                "nodes": ",".join(sorted(rec.node_ids)),
                "mlflow_run_id": rec.run_id,
            }
            row.update({f"config.{k}": v for k, v in rec.config.items()})
            rows.append(row)
        return pd.DataFrame(rows)

    def history_frame(self) -> pd.DataFrame:
        """One row per reported epoch, in arrival order, with the best-so-far value."""
        return pd.DataFrame(self.history)
