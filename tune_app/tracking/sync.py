"""``tune-app sync RUN_DIR``: send the MLflow writes a run could not deliver.

While the tracking server was down, a search kept every trial event in its
journal (:mod:`tune_app.tracking.outbox`). ``sync`` replays the events MLflow never
acknowledged, checking first what MLflow already holds, so running it twice (or
after a partly successful attempt) logs nothing twice. No Ray is needed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from tune_app.errors import ConfigError
from tune_app.run.resume import Manifest, locate
from tune_app.tracking.outbox import JOURNAL, Journal, Outbox


@dataclass(frozen=True)
class SyncReport:
    """What a sync did."""

    run_dir: Path
    pending_before: int
    pending_after: int

    @property
    def complete(self) -> bool:
        """Whether MLflow now holds everything in the journal."""
        return self.pending_after == 0

    def describe(self) -> str:
        """One line for the CLI."""
        sent = self.pending_before - self.pending_after
        if self.complete:
            return f"{self.run_dir}: in sync ({sent} journaled write(s) sent to MLflow)"
        return (
            f"{self.run_dir}: {sent} write(s) sent, {self.pending_after} still pending "
            f"(MLflow unreachable?); run sync again later"
        )


def sync(
    run_dir: str | Path, tracking_uri: str | None = None, timeout_s: float = 30.0
) -> SyncReport:
    """Replay the unacknowledged journal events of ``run_dir`` into MLflow."""
    from tune_app.tracking.store import Tracker

    path = locate(run_dir)
    manifest = Manifest.load(path)
    if not (path / JOURNAL).exists():
        raise ConfigError(f"{path} has no {JOURNAL}; nothing to sync")
    uri = tracking_uri or manifest.tracking_uri
    if "***" in uri:
        uri = os.environ.get("MLFLOW_TRACKING_URI", "")
        if not uri:
            raise ConfigError(
                "the run's tracking URI holds a password that is not stored; pass "
                "--tracking-uri or set MLFLOW_TRACKING_URI"
            )
    tracker = Tracker(uri, manifest.experiment)
    journal = Journal(path / JOURNAL)
    outbox = Outbox.replay(journal, tracker, manifest.parent_run_id, manifest.metric)
    before = len(outbox.pending)
    outbox.wait(timeout_s)
    return SyncReport(path, before, len(outbox.pending))
