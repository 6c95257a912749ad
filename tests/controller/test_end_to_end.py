"""``dqn`` end to end on digits_mlp: Tune trials, MLflow children with the
controller's action, Q-values and state, and the walk plot on the parent run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import DIGITS, children
from tune_app import run_search
from tune_app.controller import mdp

pytestmark = [pytest.mark.usefixtures("ray_session"), pytest.mark.slow]


@pytest.mark.parametrize("scheduler", ["asha"])  # plain dqn: tests/test_integration.py
def test_dqn_search_records_actions_and_walk(
    scheduler: str | None, tracking_uri: str, tmp_path: Path
) -> None:
    result = run_search(
        "dqn",
        DIGITS,
        scheduler=scheduler,
        budget_epochs=9,  # >= 3 full trials even when ASHA stops none (max_epochs 3)
        seed=0,
        num_workers=0,
        tracking_uri=tracking_uri,
        storage_path=tmp_path / "runs",
        verbose=False,
    )
    assert result.epochs_spent == 9
    assert 0.2 < result.best_metric <= 1.0
    kids = children(tracking_uri, result)
    assert len(kids) == len(result.trials) >= 3
    actions = [k.data.tags.get("dqn.action") for k in kids]
    assert all(actions) and "start" in actions
    stepped = [k for k in kids if "dqn.q_values" in k.data.tags]
    assert stepped, actions  # at least one trial chosen by the Q-network
    for kid in stepped:
        q = json.loads(kid.data.tags["dqn.q_values"])
        assert kid.data.tags["dqn.action"] in q
        assert len(json.loads(kid.data.tags["dqn.state"])) == mdp.OBS_DIM
    client = MlflowClient(tracking_uri)
    assert "walk.png" in {a.path for a in client.list_artifacts(result.mlflow_run_id)}
