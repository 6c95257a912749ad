"""Every preset end to end on digits_mlp over Ray Train workers, tracked in MLflow."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import children
from tests.user_tasks import Exploding
from tune_app import run_search, strategies
from tune_app.api import SearchResult
from tune_app.tracking.store import TRIAL_TAG

pytestmark = [pytest.mark.usefixtures("ray_session"), pytest.mark.slow]
BUDGET = 4


def check_tracking(uri: str, result: SearchResult) -> None:
    client = MlflowClient(uri)
    kids = children(uri, result)
    assert len(kids) == len(result.trials)
    assert {k.data.tags[TRIAL_TAG] for k in kids} == set(result.trials.trial_id)
    epochs = 0
    for kid in kids:
        hist = client.get_metric_history(kid.info.run_id, "val_accuracy")
        assert [m.step for m in hist] == list(range(1, len(hist) + 1))
        epochs += len(hist)
        assert kid.info.status == "FINISHED"
    assert epochs == result.epochs_spent
    curve = client.get_metric_history(result.mlflow_run_id, "best_val_accuracy")
    values = [m.value for m in sorted(curve, key=lambda m: m.step)]
    assert values == sorted(values)  # best-so-far never gets worse
    assert values[-1] == pytest.approx(result.best_metric)
    parent = client.get_run(result.mlflow_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["tune_app.strategy"] == result.strategy
    assert "trials.parquet" in {a.path for a in client.list_artifacts(result.mlflow_run_id)}


# pbt runs end to end over a Ray Train worker in tests/test_pbt.py, with more checks
# (weights inherited, parents in MLflow); once is enough for its worker-group restarts.
# A searcher decides on the driver only: what a trial trains on does not change what
# it proposes, so searcher presets (and pb2, pbt's twin there) train inside the Tune
# trial, which saves a Ray Train start-up (~8-14 s, ~18 s a preset here). One
# scheduler that pauses trials (hyperband; bohb pauses the same way) runs over a
# Ray Train worker; one that stops them (asha) does in
# test_searcher_and_scheduler_compose (optuna+asha); tests/test_faults.py and
# tests/test_multinode.py run random search over Ray Train workers too.
OVER_TRAIN = ("hyperband",)


@pytest.mark.parametrize("strategy", [n for n in strategies.names() if n != "pbt"])
def test_preset_end_to_end(
    strategy: str, small_space: Path, tracking_uri: str, tmp_path: Path
) -> None:
    result = run_search(
        strategy,
        small_space,
        budget_epochs=BUDGET,
        seed=0,
        num_workers=1 if strategy in OVER_TRAIN else 0,
        tracking_uri=tracking_uri,
        storage_path=tmp_path / "runs",
        verbose=False,
    )
    assert result.epochs_spent == BUDGET  # the budget is used up, never exceeded
    assert result.trials.epochs.sum() == BUDGET
    measured = result.history["val_accuracy"].dropna()
    assert result.best_metric == pytest.approx(measured.max())
    assert 0.2 < result.best_metric <= 1.0  # real training, well above chance (0.1)
    assert result.best_config and set(result.best_config) == {"lr", "hidden"}
    assert (Path(result.storage_path) / "trials.parquet").exists()
    check_tracking(tracking_uri, result)


def test_searcher_and_scheduler_compose(small_space: Path, tracking_uri: str, tmp_path: Path):
    from ray.util.state import list_actors

    def started(cls: str) -> int:
        return len(list_actors(filters=[("class_name", "=", cls)], limit=1000))

    before = {cls: started(cls) for cls in ("DatasetManager", "RayTrainWorker")}
    result = run_search(
        "optuna",
        small_space,
        scheduler="asha",
        budget_epochs=BUDGET,
        seed=1,
        tracking_uri=tracking_uri,
        storage_path=tmp_path,
        verbose=False,
    )
    assert result.strategy == "optuna+asha"
    assert result.epochs_spent == BUDGET
    check_tracking(tracking_uri, result)
    # Its trials ran over Ray Train workers without Train's idle DatasetManager
    # (tune_app.run.train_run.without_dataset_manager): none was started.
    assert started("RayTrainWorker") > before["RayTrainWorker"]
    assert started("DatasetManager") == before["DatasetManager"]


def test_user_task_in_trial_mode(small_space: Path, tracking_uri: str, tmp_path: Path) -> None:
    result = run_search(
        "random",
        small_space,
        task="tests.user_tasks:Blobs",
        budget_epochs=BUDGET,
        num_workers=0,
        max_trials=2,
        tracking_uri=tracking_uri,
        storage_path=tmp_path,
        verbose=False,
    )
    assert len(result.trials) == 2
    assert result.best_metric > 0.8  # separable blobs


def test_diverging_trials_do_not_crash_the_search(
    small_space: Path, tracking_uri: str, tmp_path: Path
) -> None:
    result = run_search(
        "random",
        small_space,
        task=Exploding(),
        budget_epochs=BUDGET,
        num_workers=0,
        max_trials=2,
        tracking_uri=tracking_uri,
        storage_path=tmp_path,
        verbose=False,
    )
    assert len(result.trials) == 2
    assert result.trials.diverged.all()
    assert math.isnan(result.best_metric)
    statuses = {k.data.tags["tune_app.status"] for k in children(tracking_uri, result)}
    assert statuses == {"DIVERGED"}
