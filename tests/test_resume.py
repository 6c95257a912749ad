"""Driver kill loop: a search is SIGKILLed at seeded random moments and resumed
until it finishes; nothing is lost or recorded twice."""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from mlflow.tracking import MlflowClient
from ray.tune.search import Searcher

from tests.conftest import DIGITS, REPO, LocalCluster, _processes_of, stop_cluster
from tune_app import spaces, strategies
from tune_app.run.lock import LOCK
from tune_app.run.resume import Manifest, same_config
from tune_app.strategies.base import GuardedSearcher
from tune_app.tasks.base import LookupObjective
from tune_app.tasks.digits_mlp import DigitsMLP
from tune_app.tracking.outbox import JOURNAL, Journal
from tune_app.tracking.store import PARENT_TAG, TRIAL_TAG

DRIVER = """
import sys
import tempfile
from tune_app import run_search
strategy, task, space, uri, storage, address = sys.argv[1:7]
run_search(strategy, space, task=task, budget_epochs=12, seed=0, num_workers=0,
           max_concurrent=2, tracking_uri=uri, storage_path=storage,
           address=address or None, resume=True)
"""
KILLS = 3  # after 1-3 more recorded epochs; the second during the resume's start-up


class SlowDigits(DigitsMLP):
    """digits_mlp with a 0.5 s validation, so a kill can land mid-training."""

    def eval_metrics(self, sums: Mapping[str, float], count: int) -> dict[str, float]:
        time.sleep(0.5)
        return super().eval_metrics(sums, count)


class SlowCurve(LookupObjective):
    """A saturating learning curve per configuration, 0.4 s per epoch; every epoch
    evaluated is appended to the file ``config["evals"]``, so a test sees what was
    computed, not only what was recorded."""

    name = "slow_curve"
    metric = "val_accuracy"
    metrics = ("val_accuracy",)
    mode = "max"
    max_epochs = 3
    optimum = 1.0

    def lookup(self, config: Mapping[str, Any], epoch: int) -> dict[str, float]:
        time.sleep(0.4)
        hparams = {k: config[k] for k in ("lr", "hidden")}
        with open(config["evals"], "a") as fh:
            fh.write(json.dumps({"config": hparams, "epoch": epoch}) + "\n")
        quality = 1.0 - (math.log10(float(config["lr"])) + 2.0) ** 2 / 4 - 8 / config["hidden"]
        return {"val_accuracy": quality * (1.0 - math.exp(-epoch))}


def grid_space(tmp_path: Path, **fixed: Any) -> Path:
    """4 configs x 3 epochs: an uninterrupted grid run trains exactly these 12 epochs."""
    return _space(tmp_path, [0.003, 0.03], [16, 32], fixed)


def wide_space(tmp_path: Path, **fixed: Any) -> Path:
    """12 configs x 3 epochs: a 12-epoch budget leaves every searcher a choice."""
    return _space(tmp_path, [0.001, 0.003, 0.01, 0.03], [16, 32, 64], fixed)


def _space(tmp_path: Path, lrs: list[float], hidden: list[int], fixed: dict[str, Any]) -> Path:
    data = {
        "name": "digits_kill",
        "task": "digits_mlp",
        "metric": "val_accuracy",
        "mode": "max",
        "max_epochs": 3,
        "params": {
            "lr": {"type": "loguniform", "low": 1e-3, "high": 0.1, "boxes": lrs},
            "hidden": {"type": "int", "low": 16, "high": 64, "boxes": hidden},
        },
        "fixed": {"layers": 1, "batch_size": 64, **fixed},
    }
    path = tmp_path / "digits_kill.yaml"
    path.write_text(json.dumps(data))
    return path


def recorded(storage: Path) -> tuple[Path | None, set[tuple[str, int]]]:
    """The run dir and every (trial, epoch) its journal has recorded."""
    dirs = sorted(storage.glob("*/*/run.json"))
    if not dirs:
        return None, set()
    run_dir = dirs[0].parent
    events = Journal(run_dir / JOURNAL).read()
    return run_dir, {(e["id"], int(e["epoch"])) for e in events if e.get("k") == "result"}


def start(args: list[str], log: Path, **extra_env: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "token", **extra_env}
    env.pop("RAY_ADDRESS", None)
    with open(log, "ab") as fh:
        return subprocess.Popen(
            [sys.executable, "-c", DRIVER, *args],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
        )


def _holds_lock(storage: Path, pid: int) -> bool:
    run_dir = recorded(storage)[0]
    try:
        return run_dir is not None and json.loads((run_dir / LOCK).read_text())["pid"] == pid
    except (OSError, ValueError, KeyError):
        return False


def kill_loop(
    strategy: str, task: str, space: Path, gcs: str, tmp_path: Path
) -> tuple[Path, list[dict[str, Any]], list[int]]:
    """Run the search, SIGKILL its driver ``KILLS`` times at seeded random moments
    (the second while the resume starts up: right after it took the run's lock),
    resume until it finishes; the run dir, its journal and the progress after each
    driver."""
    rng = random.Random(20240611)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    storage = tmp_path / "runs"
    args = [strategy, task, str(space), uri, str(storage), gcs]
    log = tmp_path / "drivers.log"
    progress = [0]
    for kill in range(KILLS):
        proc = start(args, log)
        deadline = time.monotonic() + 150
        if kill == 1:  # during the resume's own start-up
            while not _holds_lock(storage, proc.pid) and proc.poll() is None:
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 1.0))
        else:  # once 1-3 more epochs are recorded, plus a jitter of up to 1 s
            target = progress[-1] + rng.randint(1, 3)
            while len(recorded(storage)[1]) < target and proc.poll() is None:
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.05)
            time.sleep(rng.uniform(0.0, 1.0))
        assert proc.poll() is None, (
            f"driver {kill} ended (exit {proc.poll()}) before its planned kill; its log:\n"
            + log.read_text()[-4000:]
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        done = recorded(storage)[1]
        assert len(done) >= progress[-1]  # progress never goes backwards
        progress.append(len(done))
    proc = start(args, log)
    assert proc.wait(timeout=240) == 0, log.read_text()[-4000:]
    run_dir, done = recorded(storage)
    assert run_dir is not None
    progress.append(len(done))
    assert progress == sorted(progress), progress
    return run_dir, Journal(run_dir / JOURNAL).read(), progress


def check_run(run_dir: Path, events: list[dict[str, Any]], budget: int) -> list[dict[str, Any]]:
    """What holds after any number of kills: every trial started and ended once, no
    configuration given to two trials, each (trial, epoch) recorded once and the
    budget spent exactly; in MLflow one parent, one child per trial, each metric
    step once. Returns the trials."""
    trials = [e for e in events if e["k"] == "trial"]
    ends = [e for e in events if e["k"] == "end"]
    assert len({t["id"] for t in trials}) == len(trials)
    assert sorted(e["id"] for e in ends) == sorted(t["id"] for t in trials)
    assert "INTERRUPTED" not in {e["status"] for e in ends}, ends  # every orphan continued
    for t in trials:  # no configuration trained by two trials
        assert sum(same_config(t["config"], u["config"]) for u in trials) == 1, t
    results = [(e["id"], int(e["epoch"])) for e in events if e["k"] == "result"]
    assert len(results) == len(set(results)) == budget
    for t in trials:  # each trial's epochs 1..n, once
        mine = sorted(ep for i, ep in results if i == t["id"])
        assert mine == list(range(1, len(mine) + 1)), (t["id"], mine)
    manifest = Manifest.load(run_dir)
    assert manifest.status == "FINISHED"
    assert not (run_dir / LOCK).exists()  # taken over after each kill, released at the end

    client = MlflowClient(manifest.tracking_uri)
    exp = client.get_experiment_by_name(manifest.experiment)
    assert exp is not None
    parents = client.search_runs([exp.experiment_id], "tags.`tune_app.kind` = 'search'")
    assert [p.info.run_id for p in parents] == [manifest.parent_run_id]
    kids = client.search_runs(
        [exp.experiment_id], f"tags.`{PARENT_TAG}` = '{manifest.parent_run_id}'"
    )
    assert sorted(k.data.tags[TRIAL_TAG] for k in kids) == sorted(t["id"] for t in trials)
    for kid in kids:
        steps = [m.step for m in client.get_metric_history(kid.info.run_id, "val_accuracy")]
        assert len(steps) == len(set(steps)), steps
        assert kid.info.status == "FINISHED"
    curve = client.get_metric_history(manifest.parent_run_id, "best_val_accuracy")
    assert sorted(m.step for m in curve) == list(range(1, budget + 1))
    assert client.get_run(manifest.parent_run_id).info.status == "FINISHED"
    return trials


@pytest.mark.slow
def test_driver_kill_loop(ray_cluster: LocalCluster, tmp_path: Path) -> None:
    """grid with real training: the same 4 configurations, epochs 1..3 each, as
    without the kills."""
    space = grid_space(tmp_path)
    task = "tests.test_resume:SlowDigits"
    run_dir, events, progress = kill_loop("grid", task, space, ray_cluster.gcs_address, tmp_path)
    trials = check_run(run_dir, events, 12)
    assert len(trials) == 4
    for config in spaces.load(space).grid():
        assert sum(same_config(t["config"], config) for t in trials) == 1
    results = [(e["id"], int(e["epoch"])) for e in events if e["k"] == "result"]
    assert {t["id"]: sorted(ep for i, ep in results if i == t["id"]) for t in trials} == {
        t["id"]: [1, 2, 3] for t in trials
    }
    print(f"kill loop progress (recorded epochs after each driver): {progress}")


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["optuna", "asha", "dqn"])
def test_driver_kill_loop_retrains_nothing(
    strategy: str, ray_cluster: LocalCluster, tmp_path: Path
) -> None:
    """Searchers and a scheduler under 3 kills: besides :func:`check_run`, no
    epoch is computed again except the one a trial had in flight when its driver
    died: a trial that continues after a crash starts from its last checkpoint,
    never from scratch (before, orphans the searcher re-proposed trained again
    from epoch 1, and finished trials Tune's snapshot missed were retrained)."""
    evals = tmp_path / "evals.jsonl"
    space = wide_space(tmp_path, evals=str(evals))
    task = "tests.test_resume:SlowCurve"
    run_dir, events, progress = kill_loop(strategy, task, space, ray_cluster.gcs_address, tmp_path)
    check_run(run_dir, events, 12)
    computed = [json.loads(line) for line in evals.read_text().splitlines()]
    per_config: dict[str, list[int]] = {}
    for c in computed:
        per_config.setdefault(json.dumps(c["config"], sort_keys=True), []).append(c["epoch"])
    for key, epochs in per_config.items():  # never back to an earlier epoch
        assert epochs == sorted(epochs), (key, epochs)
    distinct = sum(len(set(e)) for e in per_config.values())
    assert distinct == 12  # what was recorded: the budget
    assert len(computed) - distinct <= KILLS * 2  # at most the epochs in flight at a kill
    print(f"{strategy}: progress {progress}, {len(computed) - distinct} epoch(s) recomputed")


@pytest.mark.slow
def test_resume_at_once_after_an_embedded_ray_driver_was_killed(
    ray_cluster: LocalCluster, tmp_path: Path
) -> None:
    """A driver on its own embedded Ray is SIGKILLed; its Ray's dashboard and agents
    keep their loopback ports for a while. A resume started at once (its own
    embedded Ray) must still start and finish the run."""
    evals = tmp_path / "evals.jsonl"
    space = grid_space(tmp_path, evals=str(evals))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    storage = tmp_path / "runs"
    args = ["grid", "tests.test_resume:SlowCurve", str(space), uri, str(storage), ""]
    log = tmp_path / "drivers.log"
    ray_tmp = tempfile.mkdtemp(prefix="rk", dir="/tmp")  # short: Ray's socket paths
    try:
        proc = start(args, log, RAY_TMPDIR=ray_tmp)
        deadline = time.monotonic() + 150
        while len(recorded(storage)[1]) < 2 and proc.poll() is None:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        assert proc.poll() is None, (
            f"the driver ended (exit {proc.poll()}) before its planned kill; its log:\n"
            + log.read_text()[-4000:]
        )
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        listening = _listening_ports(ray_tmp)  # the dead driver's Ray still holds some
        resumed = start(args, log, RAY_TMPDIR=ray_tmp)
        assert resumed.wait(timeout=240) == 0, log.read_text()[-4000:]
    finally:
        stop_cluster(ray_tmp)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    run_dir = recorded(storage)[0]
    assert run_dir is not None
    events = Journal(run_dir / JOURNAL).read()
    check_run(run_dir, events, 12)
    assert listening, "the killed driver's Ray held no port: the window was not tested"


def _listening_ports(marker: str) -> set[int]:
    """The TCP ports that processes whose command line holds ``marker`` listen on."""
    inodes = set()
    for pid in _processes_of(marker):
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _two_trials_then_a_snapshot(
    name: str, tmp_path: Path
) -> tuple[Callable[[], Searcher], GuardedSearcher, str]:
    """A fresh-searcher factory, a searcher told two finished trials, and the path
    of the snapshot it saved then (Tune's last one before the crash)."""
    space = spaces.load(DIGITS)

    def make() -> Searcher:
        return strategies.build_searcher(name, space, "val_accuracy", "max", 7)

    original = GuardedSearcher(make())
    for i in range(2):
        config = original.suggest(f"t{i}")
        original.on_trial_complete(f"t{i}", {"val_accuracy": _value(config), "epoch": 3})
    snapshot = str(tmp_path / "snapshot")
    original.save(snapshot)
    return make, original, snapshot


def tune_snapshot(searcher: Searcher, fresh: Searcher, path: Path) -> None:
    """Save ``searcher`` as Tune saves it with an experiment snapshot (wrappers'
    ``get_state``, the innermost searcher's ``save``) and restore ``fresh`` from it
    as ``Tuner.restore`` does."""
    from ray.tune.search import ConcurrencyLimiter, SearchGenerator

    path.mkdir()
    SearchGenerator(ConcurrencyLimiter(searcher, 2)).save_to_dir(str(path), "snapshot")
    SearchGenerator(ConcurrencyLimiter(fresh, 2)).restore_from_dir(str(path))


def _value(config: dict[str, object]) -> float:
    lr, dropout = float(config["lr"]), float(config["dropout"])  # type: ignore[arg-type]
    return 1.0 - (math.log10(lr) + 2.0) ** 2 / 10 - dropout / 4


@pytest.mark.parametrize("name", strategies.names("searcher"))
def test_searcher_restore_with_pending_trials_suggests_no_duplicate(
    name: str, tmp_path: Path
) -> None:
    """Every registered searcher, saved (as Tune saves it) with two trials still
    running, then restored: the pending trials report afterwards and the restored
    searcher continues exactly as an uninterrupted one, re-suggesting nothing."""
    space = spaces.load(DIGITS)

    def make() -> GuardedSearcher:
        return GuardedSearcher(strategies.build_searcher(name, space, "val_accuracy", "max", 7))

    original = make()
    seen = []
    for i in range(3):
        config = original.suggest(f"t{i}")
        seen.append(config)
        original.on_trial_complete(f"t{i}", {"val_accuracy": _value(config), "epoch": 3})
    pending = [original.suggest("p1"), original.suggest("p2")]  # running at save time
    assert all(isinstance(c, dict) for c in [*seen, *pending])
    original.save(str(tmp_path / "searcher"))
    restored = make()
    restored.restore(str(tmp_path / "searcher"))

    runs = []
    for searcher in (original, restored):
        searcher.on_trial_result("p1", {"val_accuracy": 0.5, "epoch": 1, "training_iteration": 1})
        searcher.on_trial_complete("p1", {"val_accuracy": _value(pending[0]), "epoch": 3})
        after = [searcher.suggest(f"n{i}") for i in range(3)]
        searcher.on_trial_complete("p2", {"val_accuracy": _value(pending[1]), "epoch": 3})
        after += [searcher.suggest(f"m{i}") for i in range(2)]
        runs.append([c for c in after if isinstance(c, dict)])
    uninterrupted, resumed = runs
    assert resumed == uninterrupted
    assert resumed, "the searcher stopped suggesting after restore"
    before = [*seen, *pending]
    # Suggested again after the restore: a pending config, or any earlier one.
    repeats = [c for c in resumed if any(same_config(c, b) for b in before)]
    if name == "dqn":  # the controller's walkers may revisit boxes by design ...
        assert not any(same_config(c, p) for c in resumed[:1] for p in pending)
    else:  # ... every other searcher never proposes a config twice
        assert repeats == []
        assert len({json.dumps(c, sort_keys=True) for c in resumed}) == len(resumed)


@pytest.mark.parametrize("name", strategies.names("searcher"))
def test_trials_that_finished_after_the_snapshot_are_not_trained_again(
    name: str, tmp_path: Path
) -> None:
    """The dead driver ran two trials to the end after Tune's last snapshot; the
    journal knows them, the restored searcher does not. On resume the searcher is
    told their results and never hands their configurations to Tune again; it then
    proposes what an uninterrupted searcher would."""
    from types import SimpleNamespace

    from tune_app.run import live
    from tune_app.run.resume import ResumableSearcher
    from tune_app.tracking.state import RunState

    make, original, snapshot = _two_trials_then_a_snapshot(name, tmp_path)  # Tune's ...
    late = []
    for i in range(2, 4):  # ... then two trials started and finished: only the journal knows
        config = original.suggest(f"t{i}")
        late.append((f"t{i}", config, _value(config), 3))
        original.on_trial_complete(f"t{i}", {"val_accuracy": _value(config), "epoch": 3})
    state = RunState("val_accuracy", "max")
    state.replays = list(late)
    live.register("replay-run", live.Live(SimpleNamespace(state=state, tagger=None)))  # type: ignore[arg-type]
    try:
        restored = ResumableSearcher(make(), None, "replay-run")
        restored.restore(snapshot)
        proposed = restored.suggest("n0")
        assert isinstance(proposed, dict)
        assert state.replays == []  # both results told to the searcher ...
        assert not any(same_config(proposed, c) for _, c, _, _ in late)  # ... neither re-run
        if name != "grid":  # grid has no more configs in this 8-point space than it walks
            assert proposed == original.suggest("t4")
        # a later snapshot keeps the id map, so the completion reaches the right trial
        again = ResumableSearcher(make(), None, "replay-run")
        tune_snapshot(restored, again, tmp_path / "later")
        assert again.inner == {"n0": "n0~2"}
        again.on_trial_complete("n0", {"val_accuracy": _value(proposed), "epoch": 3})
        assert again.inner == {}
    finally:
        live.release("replay-run")


@pytest.mark.parametrize("name", strategies.names("searcher"))
def test_orphans_continue_first_and_their_configs_are_not_trained_again(
    name: str, tmp_path: Path
) -> None:
    """After Tune's last snapshot the dead driver started t2 (still training: an
    orphan) and ran t3 to the end. On resume t2's configuration runs first, as a
    trial continuing t2; the searcher's own proposal of it is linked to that trial
    and told its result when it ends; t3's is told at once; the searcher then
    proposes what an uninterrupted one would, and nothing is handed to Tune twice."""
    from types import SimpleNamespace

    from tune_app.run import live
    from tune_app.run.resume import ResumableSearcher
    from tune_app.tracking.state import RunState

    make, original, snapshot = _two_trials_then_a_snapshot(name, tmp_path)
    orphan = original.suggest("t2")  # started after the snapshot, never finished
    late = original.suggest("t3")  # started and finished after the snapshot
    original.on_trial_complete("t3", {"val_accuracy": _value(late), "epoch": 3})
    state = RunState("val_accuracy", "max")
    state.orphans = [("t2", dict(orphan))]
    state.replays = [("t3", dict(late), _value(late), 3)]
    aliases: list[tuple[str, str]] = []
    recorder = SimpleNamespace(state=state, alias=lambda new, old: aliases.append((new, old)))
    live.register("orphan-run", live.Live(recorder))  # type: ignore[arg-type]
    try:
        restored = ResumableSearcher(make(), None, "orphan-run")
        restored.restore(snapshot)
        first = restored.suggest("n0")
        assert first == orphan and aliases == [("n0", "t2")] and state.orphans == []
        second = restored.suggest("n1")
        assert isinstance(second, dict)
        assert not any(same_config(second, c) for c in (orphan, late))  # nothing twice
        assert state.replays == []
        if name != "dqn":  # the controller's walkers may revisit boxes by design
            assert restored.linked == {"n0": "n1"}  # its own proposal of the orphan
            assert second == original.suggest("t4")  # as without the crash
        # A snapshot now keeps the maps; the orphan's end reaches the linked proposal.
        again = ResumableSearcher(make(), None, "orphan-run")
        tune_snapshot(restored, again, tmp_path / "later")
        assert again.continued == {"n0": ("t2", orphan)}
        assert again.linked == restored.linked
        again.on_trial_complete("n0", {"val_accuracy": _value(orphan), "epoch": 3})
        assert again.continued == {} and again.linked == {}
        if name == "dqn" and not restored.linked:  # not proposed again: kept as a replay
            assert [r[0] for r in state.replays] == ["t2"]
    finally:
        live.release("orphan-run")


def test_a_torn_snapshot_session_is_set_aside_so_the_newest_intact_one_restores(
    tmp_path: Path,
) -> None:
    """A driver killed while Tune copied its snapshot left an empty searcher state;
    Tune then restarted the experiment from nothing (seen in the asha kill loop)."""
    import pickle

    from tune_app.run.resume import drop_torn_snapshots

    def session(name: str, searcher: bytes, state: str = "{}") -> None:
        (tmp_path / f"experiment_state-{name}.json").write_text(state)
        (tmp_path / f"search_gen_state-{name}.json").write_text("{}")
        (tmp_path / f"searcher-state-{name}.pkl").write_bytes(searcher)

    whole = pickle.dumps({"trials": [1, 2, 3]})
    session("2026-11-30_16-24-14", whole)
    session("2026-11-30_16-24-30", b"")  # cut short: empty
    session("2026-11-30_16-24-45", whole[:-3])  # cut short: no STOP opcode
    session("2026-11-30_16-24-50", whole, state='{"trials": [')  # torn JSON
    (tmp_path / "tuner.pkl").write_bytes(b"")  # not a session file: left alone
    assert drop_torn_snapshots(tmp_path) == [
        "2026-11-30_16-24-30",
        "2026-11-30_16-24-45",
        "2026-11-30_16-24-50",
    ]
    left = sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".torn"))
    assert left == [
        "experiment_state-2026-11-30_16-24-14.json",
        "search_gen_state-2026-11-30_16-24-14.json",
        "searcher-state-2026-11-30_16-24-14.pkl",
        "tuner.pkl",
    ]
    assert len(list(tmp_path.glob("*.torn"))) == 9
    assert drop_torn_snapshots(tmp_path) == []  # idempotent
