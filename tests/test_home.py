"""Where results go: $TUNE_APP_HOME, ~/tune_app in a Ray job, else the cwd."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tune_app.home import HOME_ENV, RAY_JOB_ENV, home, in_ray_temp, local_path
from tune_app.tracking.store import EXPERIMENT_KIND, Tracker, resolve_tracking_uri, ui_url


def test_home_is_the_env_var_then_a_jobs_durable_default_then_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(RAY_JOB_ENV, raising=False)
    monkeypatch.setenv(HOME_ENV, str(tmp_path / "h"))
    assert home() == tmp_path / "h"
    monkeypatch.delenv(HOME_ENV)
    assert home() == tmp_path
    # Inside `ray job submit` the cwd is Ray's temporary working dir: never the default.
    monkeypatch.setenv(RAY_JOB_ENV, "{}")
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    assert home() == tmp_path / "user" / "tune_app"
    assert local_path("runs") == tmp_path / "user" / "tune_app" / "runs"
    assert local_path(tmp_path / "abs") == tmp_path / "abs"
    assert resolve_tracking_uri(None) == f"sqlite:///{tmp_path}/user/tune_app/mlflow.db"
    assert resolve_tracking_uri("sqlite:///x/m.db") == f"sqlite:///{tmp_path}/user/tune_app/x/m.db"


def test_ray_temp_paths_are_recognised() -> None:
    job_dir = "/tmp/ray/session_1/runtime_resources/working_dir_files/_ray_pkg_ab/mlruns"
    assert in_ray_temp(job_dir)
    assert not in_ray_temp("/home/u/tune_app/mlruns")


def test_new_experiments_keep_artifacts_beside_the_db_and_open_in_model_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    tracker = Tracker(uri, "my exp-1")
    exp = MlflowClient(uri).get_experiment(tracker.experiment_id)
    assert exp.artifact_location.endswith(f"{tmp_path}/store/mlruns/my_exp-1")
    assert exp.tags[EXPERIMENT_KIND[0]] == EXPERIMENT_KIND[1]
    # An experiment created elsewhere with its artifacts in a job's temp dir: warned.
    client = MlflowClient(uri)
    pinned = "/tmp/ray/session_1/runtime_resources/working_dir_files/_ray_pkg_1/mlruns"
    client.create_experiment("pinned", artifact_location=pinned)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        Tracker(uri, "pinned")
    assert any("pass another --experiment" in str(w.message) for w in caught)


def test_ui_urls_open_the_model_training_view() -> None:
    assert ui_url("sqlite:////x/mlflow.db", "7") == (
        "http://127.0.0.1:5000/#/experiments/7/runs?workflowType=machine_learning"
    )
    assert ui_url("https://u:p@mlflow.example:8443/", "7", "r1") == (
        "https://mlflow.example:8443/#/experiments/7/runs/r1?workflowType=machine_learning"
    )
