"""The run journal and the MLflow outbox built on it.

Every event of a search run (a trial starts, reports an epoch, ends; the search
finishes) is appended as one JSON line to ``journal.jsonl`` in the run directory
*before* it is sent to MLflow. The journal is the durable record:

* after a driver crash, ``resume`` rebuilds the driver's state from it;
* MLflow writes that failed (server down, timeout) stay *pending* and are re-sent
  with backoff while the search goes on, at its end, or by ``tune-app sync``.

A re-send never duplicates: the trial's child run is looked up by its
``tune_app.trial_id`` tag before one is created, and metric steps MLflow already
holds are skipped. An ``ack`` line records each write MLflow confirmed.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

JOURNAL = "journal.jsonl"
MANIFEST = "run.json"


def redact_uri(uri: str) -> str:
    """``uri`` with any password replaced by ``***`` (safe to log and to store)."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return uri
    if parts.password is None:
        return uri
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


class Journal:
    """Append-only JSON-lines file; each line is flushed and fsynced."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._seq = -1

    def next_seq(self) -> int:
        """A sequence number for the next event (continues an existing journal)."""
        if self._seq < 0:
            self._seq = max((int(e.get("n", 0)) for e in self.read()), default=0)
        self._seq += 1
        return self._seq

    def append(self, event: dict[str, Any]) -> None:
        """Write ``event`` durably (a crash leaves at most a torn last line)."""
        line = json.dumps(event, default=str, separators=(",", ":"))
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def read(self) -> list[dict[str, Any]]:
        """Every complete event, in order (a torn last line is ignored)."""
        if not self.path.exists():
            return []
        events = []
        for raw in self.path.read_text(encoding="utf-8").splitlines():
            try:
                event = json.loads(raw)
            except json.JSONDecodeError:
                continue  # a line cut short by a crash
            if isinstance(event, dict):
                events.append(event)
        return events


@dataclass
class _Pending:
    event: dict[str, Any]
    tries: int = 0


@dataclass
class Outbox:
    """Sends journaled events to MLflow in order; keeps failed ones for later.

    Args:
        journal: the run's journal (events are appended by :meth:`submit`).
        tracker: a :class:`tune_app.tracking.Tracker`, or None (offline).
        parent: the search run's MLflow run id.
        metric: the search metric (the parent logs ``best_<metric>``).
    """

    journal: Journal
    tracker: Any
    parent: str
    metric: str
    run_ids: dict[str, str] = field(default_factory=dict)
    pending: list[_Pending] = field(default_factory=list)
    retry_at: float = 0.0
    backoff_s: float = 1.0
    verify_all: bool = False
    warned: bool = False
    _history: dict[tuple[str, str], set[int]] = field(default_factory=dict)

    @classmethod
    def replay(cls, journal: Journal, tracker: Any, parent: str, metric: str) -> Outbox:
        """An outbox holding every journaled event MLflow never acknowledged."""
        box = cls(journal, tracker, parent, metric, verify_all=True)
        events = journal.read()
        acked = {int(e["n"]) for e in events if e.get("k") == "ack"}
        for e in events:
            if e.get("k") == "ack" and e.get("run"):
                box.run_ids[str(e["trial"])] = str(e["run"])
        for e in events:
            if e.get("k") in SENDERS and int(e["n"]) not in acked:
                box.pending.append(_Pending(e, tries=1))  # re-sends always verify
        return box

    def submit(self, event: dict[str, Any]) -> dict[str, Any]:
        """Journal ``event`` (a dict with its kind ``k``), then try to send it."""
        event = {"n": self.journal.next_seq(), "t": round(time.time(), 3), **event}
        self.journal.append(event)
        if event["k"] in SENDERS:
            self.pending.append(_Pending(event))
            self.flush()
        return event

    def flush(self, force: bool = False) -> bool:
        """Send pending events in order; True when nothing is left pending.

        Stops at the first failure and waits ``backoff_s`` (doubling up to 30 s)
        before the next attempt, so an MLflow outage costs training one failed
        call per backoff period at most. ``force`` ignores the backoff.
        """
        if self.tracker is None:
            return not self.pending
        if not force and time.monotonic() < self.retry_at:
            return False
        while self.pending:
            item = self.pending[0]
            try:
                SENDERS[item.event["k"]](self, item.event, item.tries > 0 or self.verify_all)
            except Exception as exc:
                item.tries += 1
                self.retry_at = time.monotonic() + self.backoff_s
                self.backoff_s = min(self.backoff_s * 2, 30.0)
                if not self.warned:
                    print(
                        f"tune_app: MLflow write failed ({type(exc).__name__}: "
                        f"{str(exc)[:200]}); training goes on, results are kept in "
                        f"{self.journal.path} and sent when MLflow is back",
                        flush=True,
                    )
                    self.warned = True
                return False
            self.pending.pop(0)
            ack: dict[str, Any] = {"n": item.event["n"], "k": "ack"}
            if item.event["k"] == "trial":
                ack.update(trial=item.event["id"], run=self.run_ids[item.event["id"]])
            self.journal.append(ack)
        if self.warned:
            print("tune_app: MLflow is reachable again; pending writes sent", flush=True)
            self.warned = False
        self.backoff_s = 1.0
        return True

    def wait(self, timeout_s: float) -> bool:
        """Retry pending writes for up to ``timeout_s``; True when all were sent."""
        deadline = time.monotonic() + timeout_s
        while not self.flush(force=True):
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        return True

    # -- idempotent senders -------------------------------------------------

    def _steps(self, run_id: str, key: str) -> set[int]:
        """Steps of ``key`` MLflow already holds for ``run_id`` (cached)."""
        cached = self._history.get((run_id, key))
        if cached is None:
            hist = self.tracker.client.get_metric_history(run_id, key)
            cached = {int(m.step) for m in hist}
            self._history[(run_id, key)] = cached
        return cached

    def _log(self, run_id: str, metrics: dict[str, Any], step: int, verify: bool) -> None:
        clean = {k: float(v) for k, v in metrics.items() if _finite(v)}
        if verify:
            clean = {k: v for k, v in clean.items() if step not in self._steps(run_id, k)}
        if clean:
            self.tracker.log_metrics(run_id, clean, step, strict=True)
        for k in clean:
            if (run_id, k) in self._history:
                self._history[(run_id, k)].add(step)

    def _send_trial(self, event: dict[str, Any], verify: bool) -> None:
        trial = str(event["id"])
        if trial in self.run_ids:
            return
        run_id = self.tracker.find_child(self.parent, trial) if verify else None
        if run_id is None:
            run_id = self.tracker.start_run(
                f"trial-{int(event['index']):03d}",
                {"tune_app.trial_id": trial, **dict(event.get("tags") or {})},
                dict(event.get("config") or {}),
                parent=self.parent,
            )
        self.run_ids[trial] = run_id

    def _send_result(self, event: dict[str, Any], verify: bool) -> None:
        run_id = self.run_ids[str(event["id"])]
        self._log(run_id, dict(event.get("metrics") or {}), int(event["epoch"]), verify)
        spent = int(event["spent"])
        parent = {f"best_{self.metric}": event.get("best"), "epochs_spent": spent}
        self._log(self.parent, parent, spent, verify)

    def _send_end(self, event: dict[str, Any], verify: bool) -> None:
        run_id = self.run_ids[str(event["id"])]
        tags = {"tune_app.status": str(event["status"]), "tune_app.epochs": str(event["epochs"])}
        if event.get("error"):
            tags["tune_app.error"] = str(event["error"])[-4000:]
        status = "FINISHED" if event["status"] == "FINISHED" else "FAILED"
        if event["status"] == "INTERRUPTED":
            status = "KILLED"
        self.tracker.end_run(run_id, status, tags, strict=True)

    def _send_finish(self, event: dict[str, Any], verify: bool) -> None:
        run_dir = self.journal.path.parent
        for name in ("trials.parquet", "history.parquet", "walk.png"):
            if (run_dir / name).exists():
                self.tracker.log_artifact(self.parent, run_dir / name)
        spent = int(event["spent"])
        self._log(self.parent, dict(event.get("metrics") or {}), spent, verify)
        tags = dict(event.get("tags") or {})
        self.tracker.end_run(self.parent, str(event["status"]), tags, strict=True)


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


SENDERS: dict[str, Callable[[Outbox, dict[str, Any], bool], None]] = {
    "trial": Outbox._send_trial,
    "result": Outbox._send_result,
    "end": Outbox._send_end,
    "finish": Outbox._send_finish,
}


def iter_kind(events: list[dict[str, Any]], kind: str) -> Iterator[dict[str, Any]]:
    """The events of one kind, in order."""
    return (e for e in events if e.get("k") == kind)
