"""Logging over HTTP to a real `mlflow server` backed by a real PostgreSQL, on 127.0.0.1."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import children, free_port
from tune_app import run_search

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("ray_session")]


def pg_bin() -> Path | None:
    """Directory of PostgreSQL's server binaries (Debian layout), if installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def as_db_user(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: use the 'postgres' account there."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throw-away PostgreSQL server on 127.0.0.1; yields its SQLAlchemy URI."""
    bindir = pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries not installed (.ci/run installs 'postgresql')")
    # Not under pytest's tmp dir: the 'postgres' account cannot traverse root's 0700 dirs.
    data = Path(tempfile.mkdtemp(prefix="tune-app-pg-"))
    if os.geteuid() == 0:
        shutil.chown(data, "postgres")
    port = free_port()
    subprocess.run(
        as_db_user(
            [str(bindir / "initdb"), "-D", str(data / "db"), "-U", "postgres", "--auth=trust"]
        ),
        check=True,
        capture_output=True,
        timeout=120,
    )
    opts = f"-c listen_addresses=127.0.0.1 -p {port} -k {data}"
    subprocess.run(
        as_db_user(
            [
                str(bindir / "pg_ctl"),
                "-D",
                str(data / "db"),
                "-o",
                opts,
                "-l",
                str(data / "log"),
                "-w",
                "start",
            ]
        ),
        check=True,
        capture_output=True,
        timeout=120,
    )
    try:
        subprocess.run(
            as_db_user(
                [
                    str(bindir / "createdb"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "-U",
                    "postgres",
                    "mlflow",
                ]
            ),
            check=True,
            timeout=60,
        )
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run(
            as_db_user([str(bindir / "pg_ctl"), "-D", str(data / "db"), "-m", "fast", "stop"]),
            capture_output=True,
            timeout=120,
        )
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="module")
def mlflow_server(postgres: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`mlflow server` on 127.0.0.1 with the PostgreSQL backend store."""
    port = free_port()
    artifacts = tmp_path_factory.mktemp("artifacts")
    log = open(artifacts.parent / "mlflow-server.log", "w")  # noqa: SIM115
    proc = subprocess.Popen(
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
            postgres,
            "--artifacts-destination",
            artifacts.as_uri(),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start: {proc.poll()=}")
            time.sleep(1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def test_search_logs_nested_runs_over_http(
    mlflow_server: str, small_space: Path, tmp_path: Path
) -> None:
    result = run_search(
        "random",
        small_space,
        budget_epochs=4,
        num_workers=0,
        tracking_uri=mlflow_server,
        experiment="remote-tracking",
        storage_path=tmp_path,
        verbose=False,
    )
    client = MlflowClient(mlflow_server)  # REST client
    parent = client.get_run(result.mlflow_run_id)
    assert parent.info.status == "FINISHED"
    kids = children(mlflow_server, result)
    assert len(kids) == len(result.trials) >= 1
    epochs = sum(len(client.get_metric_history(k.info.run_id, "val_accuracy")) for k in kids)
    assert epochs == result.epochs_spent == 4
    assert "trials.parquet" in {a.path for a in client.list_artifacts(result.mlflow_run_id)}
