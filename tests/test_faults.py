"""Trial faults and tracking outages: a killed Ray Train worker, a trial that keeps
failing, and a real `mlflow server` stopped mid-run and restarted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import children, free_port
from tests.user_tasks import Blobs
from tune_app import run_search
from tune_app.api import SearchResult
from tune_app.errors import TaskError
from tune_app.tracking.outbox import JOURNAL, Journal
from tune_app.tracking.store import TRIAL_TAG
from tune_app.tracking.sync import sync

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_session")]


class SlowBlobs(Blobs):
    """Blobs whose validation takes ``delay`` seconds and whose workers write
    their process id to ``pid_file`` (so a test can kill one mid-trial)."""

    name = "slow_blobs"

    def __init__(self, pid_file: str = "", delay: float = 0.0) -> None:
        self.pid_file, self.delay = pid_file, delay

    def build_model(self, config: Mapping[str, Any]) -> Any:
        # In the worker (its data come from the run's data store, loaded elsewhere).
        if self.pid_file:
            with open(self.pid_file, "a") as fh:
                fh.write(f"{os.getpid()}\n")
        return super().build_model(config)

    def eval_metrics(self, sums: Mapping[str, float], count: int) -> dict[str, float]:
        time.sleep(self.delay)
        if self.pid_file:  # one line per validated epoch, by process
            with open(f"{self.pid_file}.evals", "a") as fh:
                fh.write(f"{os.getpid()}\n")
        return super().eval_metrics(sums, count)


class Failing(Blobs):
    """Every trial with ``hidden == 8`` raises in its second epoch."""

    name = "failing"

    def eval_metrics(self, sums: Mapping[str, float], count: int) -> dict[str, float]:
        metrics = super().eval_metrics(sums, count)
        self.calls = getattr(self, "calls", 0) + 1
        if getattr(self, "fail", False) and self.calls >= 2:
            raise RuntimeError("injected failure in epoch 2")
        return metrics

    def build_model(self, config: Mapping[str, Any]) -> Any:
        self.fail, self.calls = int(config.get("hidden", 0)) == 8, 0
        return super().build_model(config)


class Wordy(Blobs):
    """A task whose validation reports its metric as a string."""

    name = "wordy"

    def eval_metrics(self, sums: Mapping[str, float], count: int) -> dict[str, Any]:
        return {**super().eval_metrics(sums, count), "val_accuracy": "high"}


class Terse(Blobs):
    """A task that declares val_loss and does not report it."""

    name = "terse"

    def eval_metrics(self, sums: Mapping[str, float], count: int) -> dict[str, Any]:
        return {"val_accuracy": super().eval_metrics(sums, count)["val_accuracy"]}


def space(tmp_path: Path, max_epochs: int, hidden: list[int]) -> Path:
    path = tmp_path / "blobs.yaml"
    path.write_text(
        "task: digits_mlp\nmetric: val_accuracy\nmode: max\n"
        f"max_epochs: {max_epochs}\nparams:\n"
        f"  hidden: {{type: choice, values: {hidden}}}\n"
        "fixed: {lr: 0.05}\n"
    )
    return path


def results(run_dir: str) -> list[tuple[str, int]]:
    events = Journal(Path(run_dir) / JOURNAL).read()
    return [(e["id"], int(e["epoch"])) for e in events if e.get("k") == "result"]


def wait_for(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class Background:
    """run_search in a thread (the test thread injects the fault)."""

    def __init__(self, **kwargs: Any) -> None:
        self.result: SearchResult | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, kwargs=kwargs, daemon=True)
        self.thread.start()

    def _run(self, **kwargs: Any) -> None:
        try:
            self.result = run_search(**kwargs)
        except BaseException as exc:  # reported by join()
            self.error = exc

    def join(self, timeout: float) -> SearchResult:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "search did not finish"
        if self.error is not None:
            raise self.error
        assert self.result is not None
        return self.result


def run_dir_of(storage: Path) -> Path | None:
    found = sorted(storage.glob("*/*/run.json"))
    return found[0].parent if found else None


def test_killed_train_worker_resumes_from_checkpoint(tracking_uri: str, tmp_path: Path) -> None:
    pid_file = tmp_path / "pids"
    storage = tmp_path / "runs"
    search = Background(
        strategy="random",
        space=space(tmp_path, 4, [16]),
        task=SlowBlobs(str(pid_file), delay=1.0),
        budget_epochs=4,
        max_trials=1,
        num_workers=1,
        max_failures=2,
        tracking_uri=tracking_uri,
        storage_path=storage,
        verbose=False,
    )
    wait_for(
        lambda: (d := run_dir_of(storage)) is not None and len(results(str(d))) >= 1, 240, "epoch 1"
    )
    victim = int(pid_file.read_text().split()[0])
    os.kill(victim, signal.SIGKILL)  # mid-epoch 2 (validation sleeps 1 s)
    run_dir = run_dir_of(storage)
    assert run_dir is not None
    checkpointed = max(ep for _, ep in results(str(run_dir)))  # reported = checkpointed
    result = search.join(300)

    pids = pid_file.read_text().split()
    assert len(pids) == 2 and pids[0] != pids[1]  # the worker group was restarted once
    evals = Path(f"{pid_file}.evals").read_text().split()
    # The new worker continued after the checkpoint: it validated only the epochs
    # after it (a restart from scratch would have re-run all 4).
    assert evals.count(pids[1]) == 4 - checkpointed < 4, (checkpointed, evals)
    done = results(result.storage_path)
    assert sorted(ep for _, ep in done) == [1, 2, 3, 4]  # every epoch once, none lost
    assert result.epochs_spent == 4 and list(result.trials.status) == ["FINISHED"]
    assert int(result.trials.epochs.iloc[0]) == 4
    client = MlflowClient(tracking_uri)
    (kid,) = children(tracking_uri, result)
    steps = [m.step for m in client.get_metric_history(kid.info.run_id, "val_accuracy")]
    assert sorted(steps) == [1, 2, 3, 4]


def test_failing_trial_is_recorded_and_the_search_goes_on(
    tracking_uri: str, tmp_path: Path
) -> None:
    result = run_search(
        "grid",
        space(tmp_path, 3, [8, 16]),
        task=Failing(),
        budget_epochs=6,
        num_workers=0,
        tracking_uri=tracking_uri,
        storage_path=tmp_path / "runs",
        verbose=False,
    )
    by_status = dict(zip(result.trials["config.hidden"], result.trials.status, strict=True))
    assert by_status == {8: "FAILED", 16: "FINISHED"}
    # The summary counts what the budget paid: hidden=8 recorded epoch 1 and failed
    # in epoch 2 (trained, so charged), hidden=16 its 3 epochs (it said 4/6 before).
    assert result.trials.epochs.sum() == 4 and result.epochs_spent == 5
    kids = {int(k.data.params["hidden"]): k for k in children(tracking_uri, result)}
    assert kids[8].info.status == "FAILED"
    assert kids[8].data.tags["tune_app.status"] == "FAILED"
    assert "injected failure in epoch 2" in kids[8].data.tags["tune_app.error"]
    assert kids[16].info.status == "FINISHED"
    assert result.best_metric > 0.8


class _Reporter:
    rank, world_size = 0, 1

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        raise AssertionError("a non-numeric metric must never be reported")

    def checkpoint_dir(self) -> None:
        return None

    def broadcast(self, value: Any) -> Any:
        return value


def test_non_numeric_metric_is_a_clear_error(tmp_path: Path) -> None:
    """In the trial (before Tune or a scheduler compares it), and on the driver: the
    first failed trial stops the search with the task's message, not a traceback."""
    from tune_app.tasks.loop import TrialSpec, train
    from tune_app.tracking.callback import TrackingCallback
    from tune_app.tracking.outbox import Outbox
    from tune_app.tracking.state import RunState

    message = r"'wordy' reported a non-numeric value for metric 'val_accuracy': 'high' \(str\)"
    spec = TrialSpec(task=Wordy(), seed=0, max_epochs=2, num_workers=0)
    with pytest.raises(TaskError, match=message) as caught:
        train({"hidden": 8, "lr": 0.05}, spec, "t1", _Reporter())

    error_file = tmp_path / "error.txt"
    error_file.write_text(f"Traceback ...\ntune_app.errors.TaskError: {caught.value}\n")
    state = RunState("val_accuracy", "max")
    box = Outbox(Journal(tmp_path / JOURNAL), None, "parent", "val_accuracy")
    recorder = TrackingCallback(box, state, 4, 2, verbose=False, task="wordy")
    trial = SimpleNamespace(trial_id="t1", config={"hidden": 8}, error_file=str(error_file))
    recorder.on_trial_start(0, [], trial)
    with pytest.raises(TaskError, match=message):
        recorder.on_trial_result(0, [], trial, {"epoch": 1, "val_accuracy": "high"})
    recorder.on_trial_error(0, [], trial)  # Tune wraps what a callback raises here ...
    assert state.trials["t1"].status == "FAILED"
    with pytest.raises(TaskError, match=message):  # ... so the next step stops the search
        recorder.on_step_begin(1, [trial])


def test_a_declared_metric_left_unreported_is_a_clear_error() -> None:
    """The loop checks every epoch's metrics itself (Tune's own check is off, see
    the test below)."""
    from tune_app.tasks.loop import TrialSpec, train

    message = r"'terse' reported no 'val_loss' \(it declares metrics \['val_accuracy', 'val_loss'\]"
    spec = TrialSpec(task=Terse(), seed=0, max_epochs=2, num_workers=0)
    with pytest.raises(TaskError, match=message):
        train({"hidden": 8, "lr": 0.05}, spec, "t1", _Reporter())


def test_a_trial_that_returns_without_a_result_does_not_fail_the_run() -> None:
    """What a trial refused its first epoch after a resume does: Tune restored it
    from a checkpoint without metrics (its last result is ``{"config": ...}``) and
    it returns without reporting. Tune's strict metric check counts the flattened
    config as reported metrics and fails the whole run; the driver's Tuner runs
    with the check off."""
    from ray.tune.execution.tune_controller import TuneController

    from tune_app.run.driver import unreported_trials_allowed

    metric = SimpleNamespace(metric="val_accuracy")
    controller = SimpleNamespace(_metric="val_accuracy", _scheduler_alg=metric, _search_alg=metric)
    ended = {"trial_id": "t1", "config/lr": 0.1, "config/hidden": 8, "done": True}
    with pytest.raises(ValueError, match="did not include the specified metric"):
        TuneController._validate_result_metrics(controller, ended)  # type: ignore[arg-type]
    with unreported_trials_allowed():
        TuneController._validate_result_metrics(controller, ended)  # type: ignore[arg-type]
    assert "TUNE_DISABLE_STRICT_METRIC_CHECKING" not in os.environ


def start_mlflow(port: int, root: Path) -> subprocess.Popen[bytes]:
    log = open(root / "mlflow-server.log", "ab")  # noqa: SIM115
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{root / 'server.db'}",
            "--artifacts-destination",
            (root / "artifacts").as_uri(),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def stop(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, signal.SIGKILL)  # the server and its uvicorn worker, at once
    proc.wait(timeout=30)


def test_tracking_server_outage_loses_nothing(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_mlflow(port, tmp_path)
    try:
        wait_for(lambda: healthy(url), 120, "mlflow server")
        storage = tmp_path / "runs"
        search = Background(
            strategy="grid",
            space=space(tmp_path, 3, [8, 16]),
            task=SlowBlobs(delay=0.5),
            budget_epochs=6,
            num_workers=0,
            tracking_uri=url,
            experiment="outage",
            storage_path=storage,
            verbose=False,
        )
        wait_for(
            lambda: (d := run_dir_of(storage)) is not None and len(results(str(d))) >= 1,
            240,
            "epoch 1",
        )
        stop(server)  # MLflow goes away mid-run
        run_dir = run_dir_of(storage)
        assert run_dir is not None
        wait_for(lambda: len(results(str(run_dir))) >= 3, 240, "training during the outage")
        server = start_mlflow(port, tmp_path)  # ... and comes back before the end
        wait_for(lambda: healthy(url), 120, "mlflow server restart")
        result = search.join(300)
        report = sync(result.storage_path)  # anything still pending (nothing, normally)
        assert report.complete
        again = sync(result.storage_path)
        assert again.pending_before == 0  # sync is idempotent

        client = MlflowClient(url)
        kids = children(url, result)
        assert len(kids) == len(result.trials) == 2
        assert {k.data.tags[TRIAL_TAG] for k in kids} == set(result.trials.trial_id)
        for kid in kids:
            for key in ("val_accuracy", "val_loss", "train_loss"):
                steps = [m.step for m in client.get_metric_history(kid.info.run_id, key)]
                assert sorted(steps) == [1, 2, 3], (key, steps)  # every epoch exactly once
            assert kid.info.status == "FINISHED"
        curve = client.get_metric_history(result.mlflow_run_id, "best_val_accuracy")
        assert sorted(m.step for m in curve) == list(range(1, 7))
        assert client.get_run(result.mlflow_run_id).info.status == "FINISHED"
    finally:
        if server.poll() is None:
            stop(server)


class _LossyTracker:
    """An MLflow stand-in whose first write to the parent's metric is stored but
    its reply lost (the server went down after committing)."""

    def __init__(self) -> None:
        self.steps: dict[tuple[str, str], list[int]] = {}
        self.lose_next = False
        self.client = SimpleNamespace(get_metric_history=self._history)

    def _history(self, run_id: str, key: str) -> list[Any]:
        return [SimpleNamespace(step=s) for s in self.steps.get((run_id, key), [])]

    def start_run(self, name: str, tags: Any, params: Any, parent: str) -> str:
        return f"run-{name}"

    def find_child(self, parent: str, trial: str) -> str | None:
        return None

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int, strict: bool):
        for key in metrics:
            self.steps.setdefault((run_id, key), []).append(step)
        if run_id == "parent" and self.lose_next:
            self.lose_next = False
            raise ConnectionError("reply lost")


def test_a_write_whose_reply_was_lost_is_not_logged_twice(tmp_path: Path) -> None:
    """The outbox re-reads what MLflow holds after a failed write (it kept a stale
    cache of the parent's steps and logged step 2 twice)."""
    from tune_app.tracking.outbox import Outbox

    tracker = _LossyTracker()
    box = Outbox(Journal(tmp_path / JOURNAL), tracker, "parent", "val_accuracy")
    box.verify_all = True  # as after a resume: every write checks what MLflow holds
    box.submit({"k": "trial", "id": "t1", "index": 0, "config": {}})
    for epoch in (1, 2, 3):
        tracker.lose_next = epoch == 2
        box.submit(
            {
                "k": "result",
                "id": "t1",
                "epoch": epoch,
                "spent": epoch,
                "best": 0.5,
                "metrics": {"val_accuracy": 0.5},
            }
        )
        while not box.flush(force=True):
            pass
    for key in ("best_val_accuracy", "epochs_spent"):
        assert tracker.steps[("parent", key)] == [1, 2, 3], key
    assert tracker.steps[("run-trial-000", "val_accuracy")] == [1, 2, 3]
