"""Shared fixtures: one local Ray cluster per test session, on 127.0.0.1 only.

The session starts a real head node with ``ray start`` (token authentication on,
as Ray 2.60 enables it by default) and connects the test process to it, so the
in-process searches and the ``ray job submit`` test share one Ray instance.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
os.environ["RAY_AUTH_MODE"] = "token"
os.environ.pop("RAY_ADDRESS", None)

REPO = Path(__file__).resolve().parents[1]
os.environ.pop("MLFLOW_TRACKING_URI", None)
DIGITS = REPO / "tune_app" / "search_spaces" / "digits_mlp.yaml"
RAY = str(Path(sys.executable).with_name("ray"))


# Caches a test run may leave; anything else new in the checkout fails the session.
_CACHES = [":!.venv", ":!**/__pycache__/**", ":!.mypy_cache", ":!.pytest_cache"]
_CACHES += [":!.ruff_cache", ":!*.egg-info", ":!.hypothesis"]


def _checkout_files() -> dict[str, float]:
    """Ignored and untracked files in the checkout, with mtimes: caches aside, and
    untracked files in source folders aside (someone editing while the tests run)."""
    sources = [":!tune_app", ":!tests", ":!docs", ":!benchmarks"]
    files: dict[str, float] = {}
    for flags, pathspec in ((["--ignored"], []), ([], sources)):
        cmd = ["git", "ls-files", "--others", "--exclude-standard", *flags, "--", "."]
        out = subprocess.run(
            [*cmd, *_CACHES, *pathspec],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
        for name in out.stdout.splitlines() if out.returncode == 0 else []:
            with contextlib.suppress(OSError):
                files[name] = (REPO / name).stat().st_mtime
    return files


_BEFORE: dict[str, float] = {}
_HOME: list[str] = []  # this session's TUNE_APP_HOME


def pytest_configure(config: pytest.Config) -> None:
    """Nothing a test writes lands in the checkout or in the user's own MLflow store:
    every default location (tune_app.home) is this session's temp dir, which the
    session's Ray head inherits too."""
    _HOME.append(tempfile.mkdtemp(prefix="tune_app_home-"))
    os.environ["TUNE_APP_HOME"] = _HOME[-1]


def pytest_sessionstart(session: pytest.Session) -> None:
    _BEFORE.update(_checkout_files())


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the session if a test wrote into the checkout; drop the session home."""
    for home in _HOME:
        shutil.rmtree(home, ignore_errors=True)
    if not (REPO / ".git").exists():
        return
    after = _checkout_files()
    written = sorted(f for f, t in after.items() if _BEFORE.get(f) != t)
    if written:
        shown = ", ".join(written[:10]) + (
            f" and {len(written) - 10} more" if len(written) > 10 else ""
        )
        sys.stderr.write(f"\nthe tests wrote into the checkout {REPO}: {shown}\n")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ray_env() -> dict[str, str]:
    """Environment for Ray CLI calls: loopback only, token auth sent."""
    from tune_app.run.train_run import TRAIN_ENV_DEFAULTS

    env = {**os.environ, **TRAIN_ENV_DEFAULTS}
    env.update(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="token")
    env.pop("RAY_ADDRESS", None)
    return env


@dataclass(frozen=True)
class LocalCluster:
    """Addresses of the session's Ray head, and its own Ray temp dir."""

    gcs_address: str
    dashboard_url: str
    temp_dir: str = ""


def _processes_of(*markers: str) -> list[int]:
    """Pids of a cluster's processes (their command line names one of ``markers``:
    its temp dir, or ``=<gcs address> `` for the Ray client server, which does not
    name the temp dir; or a file they hold open does, e.g. a log in the temp dir)
    and all their descendants (workers rename themselves ``ray::...``; after their
    parent is killed, only their open logs still name the cluster)."""
    parents: dict[int, int] = {}
    roots: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        pid = int(entry.name)
        parents[pid] = int(stat.rsplit(")", 1)[1].split()[1])
        if pid != os.getpid() and (
            any(m in cmdline for m in markers) or _holds_open(entry, markers)
        ):
            roots.add(pid)
    found, grew = set(roots), True
    while grew:
        kids = {p for p, pp in parents.items() if pp in found and p not in found}
        grew = bool(kids)
        found |= kids
    found.discard(os.getpid())
    return sorted(found)


def stop_cluster(temp_dir: str, gcs_address: str | None = None) -> None:
    """Stop only the Ray processes of the cluster rooted at ``temp_dir`` (and the
    client server of the head at ``gcs_address``).

    Unlike ``ray stop``, this leaves every other Ray instance on the machine alone.
    """
    import signal
    import time

    markers = [temp_dir, *([f"={gcs_address} "] if gcs_address else [])]
    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        pids = _processes_of(*markers)
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if Path(f"/proc/{p}").exists() and not _zombie(p)]
            time.sleep(0.2)
        if not pids:
            return


def _holds_open(proc: Path, markers: tuple[str, ...]) -> bool:
    """Whether process ``proc`` (``/proc/PID``) has a file open whose path names a
    path marker (one starting with ``/``)."""
    paths = [m for m in markers if m.startswith("/")]
    if not paths:
        return False
    try:
        for fd in (proc / "fd").iterdir():
            with contextlib.suppress(OSError):
                if any(m in os.readlink(fd) for m in paths):
                    return True
    except OSError:
        return False
    return False


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[LocalCluster]:
    """Start a Ray head on 127.0.0.1 and connect this process to it.

    The head gets its own short temp dir, so teardown stops exactly this cluster and
    never another Ray running on the same machine (``ray stop`` would kill them all).
    """
    import ray

    # The head starts the way a user starts one: cluster/local.sh with the venv's
    # Ray CLI and the venv *not* activated (its bin is not on PATH), so the job
    # tests submit `python -m tune_app ...` exactly as the README shows.
    gcs_port, dash_port = free_port(), free_port()
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Unix socket paths
    venv_bin = str(Path(RAY).parent)
    env = ray_env()
    env["PATH"] = os.pathsep.join(
        d for d in env.get("PATH", "").split(os.pathsep) if d and d != venv_bin
    )
    env.update(RAY=RAY)
    cmd = [
        "bash",
        str(REPO / "cluster" / "local.sh"),
        "up",
        "--workers",
        "0",
        "--port",
        str(gcs_port),
        "--dashboard-port",
        str(dash_port),
        "--head-cpus",
        "2",
        "--temp-dir",
        temp_dir,
        "--client-port",
        str(free_port()),
    ]
    try:
        subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=180)
        ray.init(address=f"127.0.0.1:{gcs_port}", log_to_driver=False)
        yield LocalCluster(f"127.0.0.1:{gcs_port}", f"http://127.0.0.1:{dash_port}", temp_dir)
    finally:
        ray.shutdown()
        stop_cluster(temp_dir, f"127.0.0.1:{gcs_port}")
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def ray_session(ray_cluster: LocalCluster) -> LocalCluster:
    """Alias: tests that only need *a* Ray."""
    return ray_cluster


@pytest.fixture(scope="session")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The session's SQLite MLflow store (created once: its migrations take seconds)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture()
def small_space(tmp_path: Path) -> Path:
    """A 2-config grid of digits_mlp with a 2-epoch cap (fast integration runs)."""
    data = {
        "name": "digits_small",
        "task": "digits_mlp",
        "metric": "val_accuracy",
        "mode": "max",
        "max_epochs": 2,
        "params": {
            "lr": {"type": "loguniform", "low": 1e-3, "high": 0.1, "boxes": [0.003, 0.03]},
            "hidden": {"type": "int", "low": 16, "high": 64, "boxes": [32]},
        },
        "fixed": {"layers": 1, "batch_size": 64},
    }
    path = tmp_path / "digits_small.yaml"
    path.write_text(json.dumps(data))  # JSON is YAML
    return path


def children(uri: str, result: Any) -> list[Any]:
    """The MLflow child runs nested under a search result's parent run."""
    from mlflow.tracking import MlflowClient

    from tune_app.tracking.store import PARENT_TAG

    return list(
        MlflowClient(uri).search_runs(
            [result.experiment_id], f"tags.`{PARENT_TAG}` = '{result.mlflow_run_id}'"
        )
    )
