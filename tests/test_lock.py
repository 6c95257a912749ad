"""One driver per run directory: the lock, its refusal and stale-lock takeover."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tune_app.errors import ConfigError
from tune_app.run.lock import LOCK, acquire


def write_owner(run_dir: Path, **owner: object) -> None:
    (run_dir / LOCK).write_text(json.dumps(owner))


def test_a_live_driver_keeps_its_run_and_a_second_is_refused_in_one_line(tmp_path: Path):
    lock = acquire(tmp_path)
    with pytest.raises(ConfigError, match=rf"in use by another driver \(pid {os.getpid()}\)") as e:
        acquire(tmp_path)
    assert "\n" not in str(e.value)
    lock.release()
    assert not (tmp_path / LOCK).exists()
    acquire(tmp_path).release()  # free again


def test_a_lock_left_by_a_killed_driver_is_taken_over(tmp_path: Path):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_owner(tmp_path, pid=proc.pid, host=socket.gethostname(), start=None)
        with pytest.raises(ConfigError, match=f"pid {proc.pid}"):
            acquire(tmp_path)
    finally:
        proc.kill()
        proc.wait()
    lock = acquire(tmp_path)  # its owner is dead: stale
    assert json.loads((tmp_path / LOCK).read_text())["pid"] == os.getpid()
    lock.release()


def test_a_recycled_pid_does_not_keep_a_stale_lock(tmp_path: Path):
    # our own pid, but a process start time that is not ours: the pid was reused
    write_owner(tmp_path, pid=os.getpid(), host=socket.gethostname(), start="1")
    acquire(tmp_path).release()


def test_a_lock_from_another_host_names_the_file_to_delete(tmp_path: Path):
    write_owner(tmp_path, pid=123, host="elsewhere", start=None)
    with pytest.raises(ConfigError, match=f"pid 123 on host elsewhere.*delete {tmp_path / LOCK}"):
        acquire(tmp_path)


def test_release_never_removes_another_drivers_lock(tmp_path: Path):
    lock = acquire(tmp_path)
    write_owner(tmp_path, pid=1, host="elsewhere", start=None)  # taken over meanwhile
    lock.release()
    assert (tmp_path / LOCK).exists()


def test_resume_of_a_run_whose_driver_is_alive_is_refused_before_anything_starts(
    tmp_path: Path,
):
    """Two drivers on one run trained 36 epochs for a budget of 30; now the second
    is refused (deterministically: the owner here is a live process we started)."""
    from tests.conftest import DIGITS
    from tune_app import run_search
    from tune_app.run.driver import _manifest
    from tune_app.run.request import SearchRequest

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    request = SearchRequest(
        space=str(DIGITS), budget_epochs=6, num_workers=0, tracking_uri=uri, experiment="e"
    )
    run_dir = tmp_path / "runs" / "e" / "live-run"
    run_dir.mkdir(parents=True)
    _manifest(request.plan()).save(run_dir)  # an unfinished run ...
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:  # ... whose driver is alive
        write_owner(run_dir, pid=owner.pid, host=socket.gethostname(), start=None)
        with pytest.raises(ConfigError, match=f"is in use by another driver \\(pid {owner.pid}\\)"):
            run_search(
                "random",
                DIGITS,
                budget_epochs=6,
                num_workers=0,
                tracking_uri=uri,
                experiment="e",
                storage_path=tmp_path / "runs",
                resume=run_dir,
                verbose=False,
            )
    finally:
        owner.kill()
        owner.wait()
    assert sorted(p.name for p in run_dir.iterdir()) == [LOCK, "run.json"]  # nothing started
    assert not (tmp_path / "mlflow.db").exists()
