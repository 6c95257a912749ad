"""Resuming a search run after its driver died.

A run directory holds everything needed to continue:

* ``run.json`` — the run's arguments and its MLflow parent run (the *manifest*);
* ``journal.jsonl`` — every trial, epoch result and trial end, in order
  (:mod:`tune_app.tracking.outbox`), plus the trial id -> MLflow child run mapping;
* ``tune/`` — Ray Tune's experiment state: trials, their checkpoints and the
  searcher's state (grid position, Optuna/HyperOpt history).

``resume`` restores Tune's experiment (finished trials stay finished, unfinished
ones continue from their last checkpoint, the searcher continues where it was)
and rebuilds the driver's state and the epoch ledger from the journal, which is
never older than Tune's snapshot. Trials the dead driver started after Tune's
last snapshot (*orphans*) are matched to the searcher's next suggestions: a
deterministic searcher re-suggests the same configuration, which then continues
the orphan's record and MLflow child run instead of creating a second one.
Trials that started *and finished* after the snapshot (*replays*) are never
trained again: when the searcher proposes one of their configurations, it is told
the recorded result instead, and asked again.
"""

from __future__ import annotations

import base64
import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ray.tune.search import Searcher

from tune_app.errors import ConfigError
from tune_app.run import live
from tune_app.run.request import SearchRequest, same_search_fields
from tune_app.strategies.base import GuardedSearcher
from tune_app.tracking.callback import TrackingCallback

MANIFEST = "run.json"
MANIFEST_VERSION = 2
_ENVELOPE = "tune_app.inner_trial_ids"
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class Manifest:
    """A search run's request and identity, stored as ``run.json`` in its directory.

    ``request`` holds the stored fields of its :class:`SearchRequest` (the space
    as an absolute path, the task as a reference, the tracking URI redacted).
    """

    request: dict[str, Any]
    space_digest: str
    metric: str = ""
    run_name: str = ""
    parent_run_id: str = ""
    experiment_id: str = ""
    status: str = "RUNNING"
    version: int = MANIFEST_VERSION

    @property
    def experiment(self) -> str:
        """The run's MLflow experiment name."""
        return str(self.request["experiment"])

    @property
    def tracking_uri(self) -> str:
        """The run's tracking URI (a password in it is stored as ``***``)."""
        return str(self.request["tracking_uri"])

    def to_request(self, **changes: Any) -> SearchRequest:
        """The stored request, with ``changes`` (resume supplies the live options)."""
        return SearchRequest.from_stored(self.request, **changes)

    def save(self, run_dir: Path) -> None:
        """Write atomically (a crash leaves the old or the new file, never half)."""
        tmp = run_dir / f"{MANIFEST}.tmp"
        tmp.write_text(json.dumps(asdict(self), indent=1, default=str))
        tmp.replace(run_dir / MANIFEST)

    @classmethod
    def load(cls, run_dir: Path) -> Manifest:
        """Read ``run.json``; a clear error when it is missing or unreadable."""
        path = run_dir / MANIFEST
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(
                f"{run_dir} is not a tune_app run directory (no {MANIFEST})"
            ) from None
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} is unreadable ({exc}); cannot resume this run") from None
        if not isinstance(data, dict) or data.get("version") != MANIFEST_VERSION:
            raise ConfigError(
                f"{path} was written by another tune_app version (manifest version "
                f"{data.get('version') if isinstance(data, dict) else '?'}, this one reads "
                f"{MANIFEST_VERSION}); start a new run"
            )
        try:
            return cls(**data)
        except TypeError as exc:
            raise ConfigError(f"{path} is unreadable ({exc}); cannot resume this run") from None

    def same_search(self, other: Manifest) -> list[str]:
        """Names of the options that differ between two searches (empty: same)."""
        mine, theirs = self.request, other.request
        differ = [k for k in same_search_fields() if k != "space" and mine.get(k) != theirs.get(k)]
        if self.space_digest != other.space_digest:
            differ.insert(0, "space")
        return differ


def locate(target: str | Path, tracking_uri: str | None = None) -> Path:
    """A run directory from a path (relative: the cwd, else the home) or an MLflow
    parent run id."""
    from tune_app.home import local_path

    path = Path(target)
    if not path.is_dir() and not path.is_absolute():
        path = local_path(path)
    if path.is_dir():
        if not (path / MANIFEST).exists():
            raise ConfigError(f"{path} is not a tune_app run directory (no {MANIFEST})")
        return path.resolve()
    text = str(target)
    if not _RUN_ID.match(text):
        raise ConfigError(
            f"{text!r} is neither a run directory nor an MLflow run id (32 hex digits)"
        )
    from tune_app.tracking.store import Reader

    run = Reader(tracking_uri).get_run(text)
    if run is None:
        raise ConfigError(f"MLflow has no run {text}; pass the run directory instead")
    run_dir = run.data.tags.get("tune_app.run_dir")
    if not run_dir:
        raise ConfigError(f"MLflow run {text} is not a tune_app search run")
    return locate(run_dir)


def latest_unfinished(root: Path, run_name: str, wanted: Manifest) -> Path | None:
    """The newest run directory of the same search under ``root`` that did not finish."""
    if not root.is_dir():
        return None
    for run_dir in sorted(root.glob(f"{run_name}-*"), reverse=True):
        try:
            old = Manifest.load(run_dir)
        except ConfigError:
            continue
        if old.status != "FINISHED" and not old.same_search(wanted):
            return run_dir
    return None


def same_config(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Config equality that survives a JSON round trip (tuples, int/float)."""
    return bool(json.loads(json.dumps(a, default=str)) == json.loads(json.dumps(b, default=str)))


class ResumableSearcher(GuardedSearcher):
    """:class:`GuardedSearcher` that maps re-suggested orphan trials back to
    their first trial id (see the module docstring).

    Tune pickles it into the experiment state; it finds the live driver's
    recorder by ``key`` (:mod:`tune_app.run.live`), so a restored copy works too.
    """

    def __init__(self, searcher: Searcher, ledger: Any, key: str) -> None:
        super().__init__(searcher, ledger)
        self.key = key
        # Tune trial id -> the id the wrapped searcher knows it by (after replays)
        self.inner: dict[str, str] = {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        state.setdefault("inner", {})  # pickled by a version without replays
        self.__dict__.update(state)

    @property
    def recorder(self) -> TrackingCallback:
        """The live driver's tracking callback."""
        return live.lookup(self.key).recorder

    def suggest(self, trial_id: str) -> Any:
        """The wrapped searcher's next config; re-suggested orphans keep their record."""
        live.lookup(self.key).attach(self.searcher)  # the searcher Tune really uses
        config = self._skip_replays(trial_id, super().suggest(trial_id))
        orphans = self.recorder.state.orphans
        if not orphans or not isinstance(config, dict):
            return config
        old_id, old_config = orphans[0]
        import ray

        if same_config(config, old_config):
            orphans.pop(0)
            ray.get(self.ledger.alias.remote(trial_id, old_id))
            self.recorder.alias(trial_id, old_id)
        else:  # the searcher went another way: the orphans cannot be continued
            drop_orphans(self.recorder, self.ledger)
        return config

    def _skip_replays(self, trial_id: str, config: Any) -> Any:
        """Tell the searcher the recorded result of every configuration it proposes
        that the dead driver already trained to the end; return the first new one."""
        replays = self.recorder.state.replays
        n = 0
        while isinstance(config, dict) and replays:
            match = next((r for r in replays if same_config(config, r[1])), None)
            if match is None:
                break
            replays.remove(match)
            _, _, value, epochs = match
            done = {"training_iteration": epochs, "epoch": epochs, self.searcher.metric: value}
            self.searcher.on_trial_complete(self.inner.pop(trial_id, trial_id), done)
            n += 1
            self.inner[trial_id] = f"{trial_id}~{n}"
            config = self.searcher.suggest(self.inner[trial_id])
        if n and not isinstance(config, dict) and self.ledger is not None:
            import ray

            ray.get(self.ledger.settle.remote(trial_id, 0))  # nothing to train after all
        return config

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        """Forward under the id the wrapped searcher knows."""
        super().on_trial_result(self.inner.get(trial_id, trial_id), result)

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        """Forward under the id the wrapped searcher knows."""
        super().on_trial_complete(self.inner.pop(trial_id, trial_id), result, error)

    def save(self, checkpoint_path: str) -> None:
        """The wrapped searcher's state, enveloped with the id map when there is one
        (Tune keeps only this one file per snapshot)."""
        super().save(checkpoint_path)
        if self.inner:
            path = Path(checkpoint_path)
            state = base64.b64encode(path.read_bytes()).decode()
            path.write_text(json.dumps({_ENVELOPE: dict(self.inner), "state": state}))

    def restore(self, checkpoint_path: str) -> None:
        """Read what :meth:`save` wrote (with or without the envelope)."""
        path = Path(checkpoint_path)
        try:
            envelope = json.loads(path.read_bytes())
        except (ValueError, UnicodeDecodeError):
            envelope = None
        if not (isinstance(envelope, dict) and _ENVELOPE in envelope):
            super().restore(checkpoint_path)
            return
        self.inner = dict(envelope[_ENVELOPE])
        inner = path.with_name(path.name + ".inner")
        inner.write_bytes(base64.b64decode(envelope["state"]))
        try:
            super().restore(str(inner))
        finally:
            inner.unlink(missing_ok=True)


def drop_orphans(recorder: TrackingCallback, ledger: Any) -> None:
    """Close every orphan still waiting: its recorded epochs stay, the rest is freed."""
    import ray

    orphans = recorder.state.orphans
    while orphans:
        tid = orphans.pop(0)[0]
        recorder.interrupt(tid)
        ray.get(ledger.settle.remote(tid, recorder.state.trials[tid].epochs))


def reconcile(recorder: TrackingCallback, ledger: Any, trials: list[Any], max_epochs: int) -> None:
    """First step after a resume: find orphans, and hold for every unfinished
    trial the epoch the dead driver had granted it."""
    import ray

    state = recorder.state
    restored = {state.canonical(t.trial_id): t for t in trials}
    for tid, rec in sorted(state.trials.items(), key=lambda kv: kv[1].index):
        if tid in restored:
            continue
        if not rec.ended:
            state.orphans.append((tid, dict(rec.config)))
        elif rec.status == "FINISHED" and math.isfinite(rec.last):
            state.replays.append((tid, dict(rec.config), rec.last, rec.epochs))
    holds = []
    for tid, trial in restored.items():
        if trial.status in ("TERMINATED", "ERROR"):
            continue
        known = state.trials.get(tid)
        if known is not None and known.ended:
            continue
        done = known.epochs if known is not None else 0
        if done < max_epochs:
            holds.append(ledger.reserve.remote(tid, done + 1))
    ray.get(holds)
    if state.replays:
        print(
            f"tune_app: resume: {len(state.replays)} trial(s) finished after Tune's last "
            f"snapshot; the searcher is told their results instead of training them again",
            flush=True,
        )
    if state.orphans:
        print(
            f"tune_app: resume: {len(state.orphans)} trial(s) started after Tune's last "
            f"snapshot; they continue when the searcher proposes them again",
            flush=True,
        )
