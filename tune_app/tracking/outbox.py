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
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

JOURNAL = "journal.jsonl"


class Journal:
    """Append-only JSON-lines file; each event line is flushed and fsynced.

    Thread-safe: the driver appends events while the outbox's sender thread
    appends acknowledgements.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._seq = -1
        self._lock = threading.Lock()

    def next_seq(self) -> int:
        """A sequence number for the next event (continues an existing journal)."""
        with self._lock:
            return self._next_seq()

    def _next_seq(self) -> int:
        if self._seq < 0:
            self._seq = max((int(e.get("n", 0)) for e in self.read()), default=0)
        self._seq += 1
        return self._seq

    def record(self, event: dict[str, Any]) -> dict[str, Any]:
        """Number ``event``, time-stamp it and append it durably; return it."""
        with self._lock:
            event = {"n": self._next_seq(), "t": round(time.time(), 3), **event}
            self._write(event, durable=True)
        return event

    def append(self, event: dict[str, Any], durable: bool = True) -> None:
        """Write ``event`` (``durable``: fsynced; a crash leaves at most a torn last
        line). Acknowledgements need no fsync: a lost one only costs a verified re-send."""
        with self._lock:
            self._write(event, durable)

    def _write(self, event: dict[str, Any], durable: bool) -> None:
        line = json.dumps(event, default=str, separators=(",", ":"))
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            if durable:
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

    After :meth:`start`, a background thread does the sending, so MLflow's
    latency (or an outage) never holds up Tune's event loop: :meth:`submit` only
    journals the event and queues it. Without the thread (``sync``), sends
    happen in :meth:`flush` / :meth:`wait`.

    Args:
        journal: the run's journal (events are appended by :meth:`submit`).
        tracker: a :class:`tune_app.tracking.store.Tracker`, or None (offline).
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
    max_backoff_s: float = 5.0
    verify_all: bool = False
    warned: bool = False
    _history: dict[tuple[str, str], set[int]] = field(default_factory=dict)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _thread: threading.Thread | None = None
    _stop: bool = False
    _sending: bool = False

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

    # -- the driver's side --------------------------------------------------

    def start(self) -> None:
        """Send from a background thread from now on."""
        if self._thread is None and self.tracker is not None:
            self._stop = False
            self._thread = threading.Thread(
                target=self._run, name="tune_app-mlflow-outbox", daemon=True
            )
            self._thread.start()

    def submit(self, event: dict[str, Any]) -> dict[str, Any]:
        """Journal ``event`` (a dict with its kind ``k``), then queue it for MLflow."""
        event = self.journal.record(event)
        if event["k"] in SENDERS:
            with self._cond:
                self.pending.append(_Pending(event))
                self._cond.notify_all()
            if self._thread is None:
                self.flush()
        return event

    def flush(self, force: bool = False) -> bool:
        """Send pending events (or, with the sender thread, wake it); True when
        nothing is left pending. ``force`` ignores the backoff."""
        if self._thread is not None:
            with self._cond:
                if force:
                    self.retry_at = 0.0
                self._cond.notify_all()
                return not self.pending
        return self._drain(force)

    def wait(self, timeout_s: float) -> bool:
        """Retry pending writes for up to ``timeout_s``; True when all were sent."""
        deadline = time.monotonic() + timeout_s
        if self._thread is None:
            while not self._drain(force=True):
                if time.monotonic() >= deadline:
                    return False
                time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
            return True
        with self._cond:
            self.retry_at = min(self.retry_at, time.monotonic())
            self.backoff_s = min(self.backoff_s, 1.0)
            self._cond.notify_all()
            while self.pending or self._sending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.5))
                self.retry_at = min(self.retry_at, time.monotonic() + 1.0)
            return True

    def close(self, timeout_s: float = 0.0) -> bool:
        """Wait up to ``timeout_s`` for pending writes, then stop the sender thread."""
        done = self.wait(timeout_s) if timeout_s > 0 else not self.pending
        thread = self._thread
        if thread is not None:
            with self._cond:
                self._stop = True
                self._cond.notify_all()
            thread.join(timeout=15.0)
            self._thread = None
        return done

    # -- sending --------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stop and (not self.pending or time.monotonic() < self.retry_at):
                    delay = self.retry_at - time.monotonic() if self.pending else None
                    self._cond.wait(delay)
                if self._stop:
                    return
            self._drain(force=False)

    def _drain(self, force: bool) -> bool:
        """Send pending events in order; True when nothing is left pending.

        Stops at the first failure and waits ``backoff_s`` (doubling up to
        ``max_backoff_s``) before the next attempt. ``force`` ignores the backoff.
        """
        if self.tracker is None:
            return not self.pending
        if not force and time.monotonic() < self.retry_at:
            return False
        while True:
            with self._cond:
                if not self.pending:
                    break
                item = self.pending[0]
                self._sending = True
            try:
                SENDERS[item.event["k"]](self, item.event, item.tries > 0 or self.verify_all)
            except Exception as exc:
                with self._cond:
                    item.tries += 1
                    self.retry_at = time.monotonic() + self.backoff_s
                    self.backoff_s = min(self.backoff_s * 2, self.max_backoff_s)
                    self._sending = False
                    self._cond.notify_all()
                if not self.warned:
                    print(
                        f"tune_app: MLflow write failed ({type(exc).__name__}: "
                        f"{str(exc)[:200]}); training goes on, results are kept in "
                        f"{self.journal.path} and sent when MLflow is back",
                        flush=True,
                    )
                    self.warned = True
                return False
            ack: dict[str, Any] = {"n": item.event["n"], "k": "ack"}
            if item.event["k"] == "trial":
                ack.update(trial=item.event["id"], run=self.run_ids[item.event["id"]])
            self.journal.append(ack, durable=False)
            with self._cond:
                self.pending.pop(0)
                self._sending = False
                self._cond.notify_all()
        if self.warned:
            print("tune_app: MLflow is reachable again; pending writes sent", flush=True)
            self.warned = False
        self.backoff_s = 1.0
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
            try:
                self.tracker.log_metrics(run_id, clean, step, strict=True)
            except Exception:
                # The server may have stored the write and lost only its reply: what
                # it holds is unknown now, so the retry must read it again.
                for k in clean:
                    self._history.pop((run_id, k), None)
                raise
        for k in clean:
            if (run_id, k) in self._history:
                self._history[(run_id, k)].add(step)

    def _log_series(self, run_id: str, rows: list[dict[str, Any]], verify: bool) -> None:
        """Log each row's values at its own ``step`` (the inner controller's
        optimizer steps), skipping on a re-send the steps MLflow already holds."""
        points = [
            (int(row["step"]), k, float(v))
            for row in rows
            for k, v in row.items()
            if k != "step" and _finite(v)
        ]
        if verify:
            points = [p for p in points if p[0] not in self._steps(run_id, p[1])]
        if not points:
            return
        try:
            self.tracker.log_series(run_id, points)
        except Exception:
            for _, k, _ in points:
                self._history.pop((run_id, k), None)
            raise
        for step, k, _ in points:
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
        self._log_series(run_id, list(event.get("series") or ()), verify)
        if event.get("tags"):  # e.g. PBT's parent trial at an exploit (idempotent)
            self.tracker.set_tags(run_id, dict(event["tags"]))
        spent = int(event["spent"])
        parent = {f"best_{self.metric}": event.get("best"), "epochs_spent": spent}
        self._log(self.parent, parent, spent, verify)

    def _send_end(self, event: dict[str, Any], verify: bool) -> None:
        run_id = self.run_ids[str(event["id"])]
        tags = {"tune_app.status": str(event["status"]), "tune_app.epochs": str(event["epochs"])}
        if event.get("error"):
            tags["tune_app.error"] = str(event["error"])[-4000:]
        for name in event.get("artifacts") or ():  # e.g. the inner controller's plot
            path = self.journal.path.parent / name
            if path.exists():
                self.tracker.log_artifact(run_id, path, str(Path(name).parent))
        status = "FINISHED" if event["status"] == "FINISHED" else "FAILED"
        if event["status"] == "INTERRUPTED":
            status = "KILLED"
        self.tracker.end_run(run_id, status, tags, strict=True)

    def _send_finish(self, event: dict[str, Any], verify: bool) -> None:
        run_dir = self.journal.path.parent
        for name in event.get("artifacts") or ():  # files in the run directory
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
