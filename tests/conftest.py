"""Shared fixtures: one local Ray cluster per test session, on 127.0.0.1 only.

The session starts a real head node with ``ray start`` (token authentication on,
as Ray 2.60 enables it by default) and connects the test process to it, so the
in-process searches and the ``ray job submit`` test share one Ray instance.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
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
DIGITS = REPO / "search_spaces" / "digits_mlp.yaml"
RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ray_env() -> dict[str, str]:
    """Environment for Ray CLI calls: loopback only, token auth sent."""
    from tune_app.tasks.loop import TRAIN_ENV_DEFAULTS

    env = {**os.environ, **TRAIN_ENV_DEFAULTS}
    env.update(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_AUTH_MODE="token")
    env.pop("RAY_ADDRESS", None)
    return env


@dataclass(frozen=True)
class LocalCluster:
    """Addresses of the session's Ray head."""

    gcs_address: str
    dashboard_url: str


def _processes_of(temp_dir: str) -> list[int]:
    """Pids of this cluster's processes (their command line names its temp dir) and
    all their descendants (workers rename themselves ``ray::...``)."""
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
        if temp_dir in cmdline and pid != os.getpid():
            roots.add(pid)
    found, grew = set(roots), True
    while grew:
        kids = {p for p, pp in parents.items() if pp in found and p not in found}
        grew = bool(kids)
        found |= kids
    found.discard(os.getpid())
    return sorted(found)


def stop_cluster(temp_dir: str) -> None:
    """Stop only the Ray processes of the cluster rooted at ``temp_dir``.

    Unlike ``ray stop``, this leaves every other Ray instance on the machine alone.
    """
    import signal
    import time

    for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        pids = _processes_of(temp_dir)
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if Path(f"/proc/{p}").exists() and not _zombie(p)]
            time.sleep(0.2)
        if not pids:
            return


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
    import shutil
    import tempfile

    import ray

    # `ray start` with token auth needs ~/.ray/auth_token and does not create it (a
    # fresh machine, like CI's, has none); this writes it once, as cluster/local.sh does.
    subprocess.run(
        [RAY, "get-auth-token", "--generate"], env=ray_env(), capture_output=True, check=True
    )
    gcs_port, dash_port = free_port(), free_port()
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Unix socket paths
    cmd = [
        RAY,
        "start",
        "--head",
        "--node-ip-address",
        "127.0.0.1",
        "--port",
        str(gcs_port),
        "--num-cpus",
        "2",
        "--include-dashboard",
        "true",
        "--dashboard-host",
        "127.0.0.1",
        "--dashboard-port",
        str(dash_port),
        "--disable-usage-stats",
        "--temp-dir",
        temp_dir,
    ]
    try:
        subprocess.run(cmd, env=ray_env(), check=True, capture_output=True, timeout=180)
        ray.init(address=f"127.0.0.1:{gcs_port}", log_to_driver=False)
        yield LocalCluster(f"127.0.0.1:{gcs_port}", f"http://127.0.0.1:{dash_port}")
    finally:
        ray.shutdown()
        stop_cluster(temp_dir)
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
