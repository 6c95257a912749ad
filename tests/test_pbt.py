"""PBT end to end on digits_mlp with real training: exploited trials continue their
parent's weights (in the trial and over a Ray Train worker), the budget stays
exact, and each child run in MLflow names its parent at every exploit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import children
from tune_app import run_search
from tune_app.tracking.store import TRIAL_TAG

pytestmark = [pytest.mark.usefixtures("ray_session"), pytest.mark.slow]


def _space(tmp_path: Path, max_epochs: int) -> Path:
    data = {
        "name": "digits_pbt",
        "task": "digits_mlp",
        "metric": "val_accuracy",
        "mode": "max",
        "max_epochs": max_epochs,
        "params": {"lr": {"type": "loguniform", "low": 1e-4, "high": 0.05, "boxes": 4}},
        "fixed": {"layers": 1, "hidden": 32, "batch_size": 64},
    }
    path = tmp_path / "digits_pbt.yaml"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("num_workers", "population", "max_epochs"),
    [(0, 4, 3), (1, 2, 2)],  # in the trial; over one Ray Train worker (start-ups are slow)
)
def test_exploited_trials_continue_their_parents_weights(
    num_workers: int, population: int, max_epochs: int, tracking_uri: str, tmp_path: Path
) -> None:
    budget = population * max_epochs
    result = run_search(
        "pbt",
        _space(tmp_path, max_epochs),
        budget_epochs=budget,
        seed=3,
        num_workers=num_workers,
        scheduler_options={"resample_probability": 0.0},  # perturb, never redraw
        tracking_uri=tracking_uri,
        storage_path=tmp_path / "runs",
        verbose=False,
    )
    assert result.epochs_spent == budget == result.trials.epochs.sum()
    assert len(result.trials) == population
    client = MlflowClient(tracking_uri)
    runs = {k.data.tags[TRIAL_TAG]: k for k in children(tracking_uri, result)}
    curve = {
        tid: {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val_accuracy")}
        for tid, run in runs.items()
    }
    exploits = [
        (tid, json.loads(v))
        for tid, run in runs.items()
        for k, v in run.data.tags.items()
        if k.startswith("pbt.exploit.epoch_")
    ]
    assert exploits, "no trial exploited another"
    for tid, info in exploits:
        parent, epoch = info["parent"], int(info["epoch"])
        assert parent in runs and parent != tid
        assert runs[tid].data.tags["pbt.parent"] in runs
        # The child's first epoch after the exploit continues the parent's weights:
        # about the parent's accuracy at that epoch (one more epoch, a perturbed lr).
        assert abs(curve[tid][epoch + 1] - curve[parent][epoch]) < 0.1, (tid, info, curve)
        assert set(info["config"]) == {"lr"}
    assert sorted(s for c in curve.values() for s in c) == sorted(
        e for c in curve.values() for e in range(1, len(c) + 1)
    )  # every trial's epochs 1..n once: the exploit continued, it did not restart
