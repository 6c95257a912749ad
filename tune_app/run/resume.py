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
last snapshot and did not finish (*orphans*) are run first, each as a new Tune
trial with the orphan's configuration that continues its record, its MLflow child
run, its epochs in the ledger and its latest checkpoint (the training loop finds
it in the orphan's trial directory), so nothing is trained twice. Trials that
started *and finished* after the snapshot (*replays*) are never trained again:
when the searcher proposes one of their configurations, it is told the recorded
result instead, and asked again; a configuration an orphan is still training is
told the orphan's result when it ends. An orphan's result reaches the searcher
only through such a proposal (the searcher never proposed it in its restored
state), as a deterministic searcher would have made.
"""

from __future__ import annotations

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
from tune_app.strategies.base import GuardedSearcher, metric_value
from tune_app.tracking.callback import TrackingCallback

MANIFEST = "run.json"
MANIFEST_VERSION = 2
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


# Tune's snapshot files of one driver session, named by the session's start time.
SNAPSHOT = re.compile(r"^(experiment_state|search_gen_state|searcher-state)-(.+)\.(json|pkl)$")


def drop_torn_snapshots(tune_dir: Path) -> list[str]:
    """Set aside (``*.torn``) every session of Tune's snapshot with a torn file.

    Tune writes its snapshot in a staging folder and copies it into ``tune_dir``;
    a driver killed during the copy leaves a file cut short (an empty searcher
    state was seen). Tune then fails to restore and silently starts the
    experiment again. Each restore reads the newest session's files, so setting a
    torn session's files aside makes Tune restore the newest intact one; what
    happened after it is in the journal, which resume replays. Returns the
    sessions set aside.
    """
    sessions: dict[str, list[Path]] = {}
    for path in tune_dir.glob("*-*.*"):
        m = SNAPSHOT.match(path.name)
        if m and path.is_file():
            sessions.setdefault(m.group(2), []).append(path)
    torn = sorted(s for s, files in sessions.items() if not all(map(_intact, files)))
    for session in torn:
        for path in sessions[session]:
            path.rename(path.with_name(path.name + ".torn"))
    return torn


def _intact(path: Path) -> bool:
    """Not cut short: not empty; a pickle ends with its STOP opcode; JSON parses."""
    data = path.read_bytes()
    if not data:
        return False
    if data[:1] == b"\x80":  # pickle protocol >= 2
        return data.endswith(b".")
    if path.suffix == ".json":
        try:
            json.loads(data)
        except ValueError:
            return False
    return True


def same_config(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Config equality that survives a JSON round trip (tuples, int/float)."""
    return bool(json.loads(json.dumps(a, default=str)) == json.loads(json.dumps(b, default=str)))


class ResumableSearcher(GuardedSearcher):
    """:class:`GuardedSearcher` that continues orphans first and never lets the
    wrapped searcher's proposals retrain what the dead driver trained (see the
    module docstring).

    Tune pickles it into the experiment state; it finds the live driver's
    recorder by ``key`` (:mod:`tune_app.run.live`), so a restored copy works too.
    """

    def __init__(self, searcher: Searcher, ledger: Any, key: str) -> None:
        super().__init__(searcher, ledger)
        self.key = key
        # Tune trial id -> the id the wrapped searcher knows it by (after replays)
        self.inner: dict[str, str] = {}
        # Tune trial id -> (orphan id, config): a trial continuing an orphan
        self.continued: dict[str, tuple[str, dict[str, Any]]] = {}
        # continuing trial -> the wrapped searcher's id of the same configuration,
        # proposed again while the orphan still trains: told its result at the end
        self.linked: dict[str, str] = {}

    def __setstate__(self, state: dict[str, Any]) -> None:
        for name in ("inner", "continued", "linked"):  # pickled by an older version
            state.setdefault(name, {})
        self.__dict__.update(state)

    @property
    def recorder(self) -> TrackingCallback:
        """The live driver's tracking callback."""
        return live.lookup(self.key).recorder

    def suggest(self, trial_id: str) -> Any:
        """An orphan to continue (with its own config), else the wrapped searcher's
        next configuration that nobody trained yet."""
        live.lookup(self.key).attach(self.searcher)  # the searcher Tune really uses
        if self.recorder.state.orphans:
            return self._continue_orphan(trial_id)
        return self._skip_known(trial_id, super().suggest(trial_id))

    def _continue_orphan(self, trial_id: str) -> Any:
        """Run the first orphan again as ``trial_id``: its record, its MLflow child
        run, its epochs in the ledger and its checkpoint carry on."""
        import ray

        old_id, config = self.recorder.state.orphans[0]
        if self.ledger is not None:
            ray.get(self.ledger.alias.remote(trial_id, old_id))
        if (
            self.ledger is not None
            and ray.get(self.ledger.acquire.remote(trial_id, 1)) != "granted"
        ):
            # It recorded no epoch and the budget is spent: nothing to continue.
            _, pending = ray.get(self.ledger.state.remote())
            return None if pending else Searcher.FINISHED
        self.recorder.state.orphans.pop(0)
        self.recorder.alias(trial_id, old_id)
        self.continued[trial_id] = (old_id, dict(config))
        return dict(config)

    def _skip_known(self, trial_id: str, config: Any) -> Any:
        """Ask again while the wrapped searcher proposes a configuration the dead
        driver trained: one that finished is told its recorded result at once (a
        *replay*), one an orphan is still training is told when it ends. Return
        the first new configuration."""
        replays = self.recorder.state.replays
        n = 0
        while isinstance(config, dict):
            match = next((r for r in replays if same_config(config, r[1])), None)
            running = next(
                (
                    t
                    for t, (_, c) in self.continued.items()
                    if t not in self.linked and same_config(config, c)
                ),
                None,
            )
            if match is None and running is None:
                break
            asked = self.inner.pop(trial_id, trial_id)
            if match is not None:
                replays.remove(match)
                _, _, value, epochs = match
                self.searcher.on_trial_complete(asked, _done(self.searcher.metric, value, epochs))
            else:
                self.linked[str(running)] = asked
            n += 1
            self.inner[trial_id] = f"{trial_id}~{n}"
            config = self.searcher.suggest(self.inner[trial_id])
        if n and not isinstance(config, dict) and self.ledger is not None:
            import ray

            ray.get(self.ledger.settle.remote(trial_id, 0))  # nothing to train after all
        return config

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        """Forward under the id the wrapped searcher knows (none: a continued orphan
        it has not proposed again)."""
        if trial_id in self.continued:
            if trial_id in self.linked:
                super().on_trial_result(self.linked[trial_id], result)
            return
        super().on_trial_result(self.inner.get(trial_id, trial_id), result)

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        """Forward under the id the wrapped searcher knows. A continued orphan's
        result goes to the proposal linked to it, else waits as a replay."""
        if trial_id in self.continued:
            old_id, config = self.continued.pop(trial_id)
            asked = self.linked.pop(trial_id, None)
            if asked is not None:
                super().on_trial_complete(asked, result, error)
                return
            value = None if error else metric_value(result, self.searcher.metric)
            if value is not None:
                epochs = int((result or {}).get("epoch", 0))
                self.recorder.state.replays.append((old_id, config, value, epochs))
            return
        super().on_trial_complete(self.inner.pop(trial_id, trial_id), result, error)

    def get_state(self) -> dict[str, Any]:
        """The id maps. Tune saves a wrapper's ``get_state`` with its experiment
        snapshot and the innermost searcher's own ``save`` file beside it."""
        return {
            "inner": dict(self.inner),
            "continued": {t: (o, dict(c)) for t, (o, c) in self.continued.items()},
            "linked": dict(self.linked),
        }

    def set_state(self, state: dict[str, Any]) -> None:
        """Read what :meth:`get_state` returned."""
        self.inner = dict(state.get("inner", {}))
        self.continued = {t: (o, dict(c)) for t, (o, c) in state.get("continued", {}).items()}
        self.linked = dict(state.get("linked", {}))


def _done(metric: str, value: float, epochs: int) -> dict[str, Any]:
    """A recorded result as Tune would have handed it to the searcher."""
    return {"training_iteration": epochs, "epoch": epochs, metric: value}


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
        if not rec.ended and rec.epochs >= max_epochs:  # trained to the end: it finished
            recorder.complete(tid)
            ray.get(ledger.settle.remote(tid, rec.epochs))
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
            f"snapshot; they continue first, from their last checkpoints",
            flush=True,
        )
