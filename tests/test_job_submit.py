"""`ray job submit` for real: the CLI as a job on the session's Ray head."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import RAY, REPO, LocalCluster, ray_env
from tune_app.tracking.store import PARENT_TAG

pytestmark = pytest.mark.slow


def job_cli(cluster: LocalCluster, *args: str, timeout: float = 120) -> str:
    proc = subprocess.run(
        [RAY, "job", args[0], "--address", cluster.dashboard_url, *args[1:]],
        env=ray_env(),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    text = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)  # drop colours
    assert proc.returncode == 0, text
    return text


def submit_search(
    cluster: LocalCluster, space: Path, tmp_path: Path, *extra: str, working_dir: bool = True
) -> list[str]:
    """Submit `python -m tune_app run` as a Ray job, wait for it, check its MLflow runs.

    Returns the node ids the trials reported.
    """
    db = tmp_path / "job-mlflow.db"
    runtime_env = {"env_vars": {"RAY_AIR_NEW_OUTPUT": "0"}}
    job_id = f"tune-app-test-{uuid.uuid4().hex[:8]}"
    entrypoint = [
        "python",  # as a user types it: the head's PATH (cluster/local.sh) finds the venv's
        "-m",
        "tune_app",
        "run",
        "--strategy",
        "random",
        "--space",
        str(space),
        "--budget-epochs",
        "4",
        "--tracking-uri",
        f"sqlite:///{db}",
        "--storage-path",
        str(tmp_path / "runs"),
        "--experiment",
        "job-submit",
        *extra,
    ]
    job_cli(
        cluster,
        "submit",
        "--no-wait",
        "--submission-id",
        job_id,
        *(["--working-dir", "."] if working_dir else []),
        "--runtime-env-json",
        json.dumps(runtime_env),
        "--",
        *entrypoint,
    )
    deadline = time.monotonic() + 400
    status = ""
    while time.monotonic() < deadline:
        status = job_cli(cluster, "status", job_id).lower()
        if any(s in status for s in ("succeeded", "failed", "stopped")):
            break
        time.sleep(3)
    logs = job_cli(cluster, "logs", job_id)
    assert "succeeded" in status, status + logs[-3000:]
    assert "best val_accuracy" in logs

    client = MlflowClient(f"sqlite:///{db}")
    exp = client.get_experiment_by_name("job-submit")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if PARENT_TAG not in r.data.tags]
    kids = [r for r in runs if PARENT_TAG in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert kids and all(k.data.tags[PARENT_TAG] == parents[0].info.run_id for k in kids)
    assert sum(len(client.get_metric_history(k.info.run_id, "val_accuracy")) for k in kids) == 4
    trials = pd.read_parquet(next((tmp_path / "runs").rglob("trials.parquet")))
    return [n for cell in trials.nodes for n in str(cell).split(",") if n]


def _readme_job_command() -> tuple[str, str]:
    """The README's `cluster/local.sh up` line and its `ray job submit` command."""
    text = (REPO / "README.md").read_text()
    section = text.split("## On a Ray cluster", 1)[1].split("```", 2)[1]
    lines = section.replace("\\\n", " ").splitlines()
    up = next(line for line in lines if line.startswith("cluster/local.sh up"))
    submit = next(line for line in lines if " job submit " in line)
    return up, submit


def test_the_readmes_job_submit_command_keeps_results_in_the_durable_home(
    ray_cluster: LocalCluster,
) -> None:
    """The newcomer's path: a head started by cluster/local.sh (the session's head is
    started that way, venv not activated), the README's command verbatim except for
    the dashboard address, results in $TUNE_APP_HOME and none in Ray's temp dir.
    (:func:`submit_search`'s checks of every recorded epoch run on the two-node
    cluster in tests/test_multinode.py.)"""
    up, submit = _readme_job_command()
    assert up.split("#")[0].split() == ["cluster/local.sh", "up"]
    command = submit.split("  #")[0].replace("http://127.0.0.1:8265", ray_cluster.dashboard_url)
    command = command.replace(".venv/bin/ray", RAY)
    assert "--working-dir ." in command and "-- python -m tune_app run" in command
    env = ray_env()
    env.pop("RAY_AUTH_MODE")  # the README's command sets it itself
    proc = subprocess.run(
        ["bash", "-c", command],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    logs = re.sub(r"\x1b\[[0-9;]*m", "", proc.stdout + proc.stderr)
    assert proc.returncode == 0 and "succeeded" in logs, logs[-3000:]

    home = Path(os.environ["TUNE_APP_HOME"])  # the head inherited the session's
    run_dir = Path(re.findall(r"run dir: (\S+)", logs)[-1])
    assert run_dir.is_relative_to(home / "tune_runs"), run_dir
    assert (run_dir / "run.json").is_file() and (run_dir / "journal.jsonl").is_file()
    parent_id = re.findall(r"MLflow parent run ([0-9a-f]{32})", logs)[-1]
    assert "workflowType=machine_learning" in logs
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED"
    assert Path(parent.data.tags["tune_app.run_dir"]) == run_dir
    assert Path(parent.info.artifact_uri.removeprefix("file://")).is_relative_to(home)
    assert client.search_runs([parent.info.experiment_id], f"tags.`{PARENT_TAG}` = '{parent_id}'")
    leftovers = [
        p
        for p in Path(ray_cluster.temp_dir).rglob("*")
        if "runtime_resources" in p.parts and p.name in ("mlflow.db", "mlruns", "tune_runs")
    ]
    assert not leftovers, leftovers
