"""Driver kill loop: a search is SIGKILLed at seeded random moments and resumed
until it finishes; nothing is lost or recorded twice."""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from ray.tune.search import Searcher

from tests.conftest import DIGITS, REPO, LocalCluster
from tune_app import spaces, strategies
from tune_app.run.lock import LOCK
from tune_app.run.resume import Manifest, same_config
from tune_app.strategies.base import GuardedSearcher
from tune_app.tasks.digits_mlp import DigitsMLP
from tune_app.tracking.outbox import JOURNAL, Journal
from tune_app.tracking.store import PARENT_TAG, TRIAL_TAG

DRIVER = """
import sys
from tune_app import run_search
space, uri, storage, address = sys.argv[1:5]
run_search("grid", space, task="tests.test_resume:SlowDigits", budget_epochs=12, seed=0,
           num_workers=0, max_concurrent=2, tracking_uri=uri, storage_path=storage,
           address=address, resume=True)
"""


class SlowDigits(DigitsMLP):
    """digits_mlp with a 0.5 s validation, so a kill can land mid-training."""

    def eval_metrics(self, sums: Mapping[str, float], count: int) -> dict[str, float]:
        time.sleep(0.5)
        return super().eval_metrics(sums, count)


def grid_space(tmp_path: Path) -> Path:
    """4 configs x 3 epochs: an uninterrupted grid run trains exactly these 12 epochs."""
    data = {
        "name": "digits_kill",
        "task": "digits_mlp",
        "metric": "val_accuracy",
        "mode": "max",
        "max_epochs": 3,
        "params": {
            "lr": {"type": "loguniform", "low": 1e-3, "high": 0.1, "boxes": [0.003, 0.03]},
            "hidden": {"type": "int", "low": 16, "high": 64, "boxes": [16, 32]},
        },
        "fixed": {"layers": 1, "batch_size": 64},
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


def start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "token"}
    env.pop("RAY_ADDRESS", None)
    with open(log, "ab") as fh:
        return subprocess.Popen(
            [sys.executable, "-c", DRIVER, *args],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
        )


@pytest.mark.slow
def test_driver_kill_loop(ray_cluster: LocalCluster, tmp_path: Path) -> None:
    rng = random.Random(20240611)
    space = grid_space(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    storage = tmp_path / "runs"
    args = [str(space), uri, str(storage), ray_cluster.gcs_address]
    log = tmp_path / "drivers.log"
    kills, progress = 2, [0]
    for _ in range(kills):
        # Kill once 1-3 more epochs are recorded, plus a jitter of up to 1 s.
        target = progress[-1] + rng.randint(1, 3)
        proc = start(args, log)
        deadline = time.monotonic() + 150
        while len(recorded(storage)[1]) < target and proc.poll() is None:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.0))
        assert proc.poll() is None, "the search finished before the planned kill"
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

    events = Journal(run_dir / JOURNAL).read()
    trials = [e for e in events if e["k"] == "trial"]
    ends = [e for e in events if e["k"] == "end"]
    # Every trial started and finished exactly once; same configs as an uninterrupted grid.
    assert len({t["id"] for t in trials}) == len(trials) == 4
    assert sorted(e["id"] for e in ends) == sorted(t["id"] for t in trials)
    assert {e["status"] for e in ends} == {"FINISHED"}
    grid = list(spaces.load(space).grid())
    for config in grid:
        assert sum(same_config(t["config"], config) for t in trials) == 1
    # Epochs: each trial's 1..3 exactly once -> 12 = the budget, as without kills.
    results = [(e["id"], int(e["epoch"])) for e in events if e["k"] == "result"]
    assert len(results) == len(set(results)) == 12
    assert {t["id"]: sorted(ep for i, ep in results if i == t["id"]) for t in trials} == {
        t["id"]: [1, 2, 3] for t in trials
    }
    manifest = Manifest.load(run_dir)
    assert manifest.status == "FINISHED"
    assert not (run_dir / LOCK).exists()  # taken over after each kill, released at the end

    # MLflow: one parent, one child per trial, each epoch's metric exactly once.
    client = MlflowClient(uri)
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
        assert sorted(steps) == [1, 2, 3], steps
        assert kid.info.status == "FINISHED"
    curve = client.get_metric_history(manifest.parent_run_id, "best_val_accuracy")
    assert sorted(m.step for m in curve) == list(range(1, 13))
    assert client.get_run(manifest.parent_run_id).info.status == "FINISHED"
    print(f"kill loop progress (recorded epochs after each driver): {progress}")


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

    space = spaces.load(DIGITS)

    def make() -> Searcher:
        return strategies.build_searcher(name, space, "val_accuracy", "max", 7)

    original = GuardedSearcher(make())
    for i in range(2):
        config = original.suggest(f"t{i}")
        original.on_trial_complete(f"t{i}", {"val_accuracy": _value(config), "epoch": 3})
    snapshot = str(tmp_path / "snapshot")
    original.save(snapshot)  # Tune's last snapshot ...
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
        restored.save(str(tmp_path / "later"))
        again = ResumableSearcher(make(), None, "replay-run")
        again.restore(str(tmp_path / "later"))
        assert again.inner == {"n0": "n0~2"}
        again.on_trial_complete("n0", {"val_accuracy": _value(proposed), "epoch": 3})
        assert again.inner == {}
    finally:
        live.release("replay-run")
