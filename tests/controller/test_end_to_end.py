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


def test_a_20_parameter_space_runs_end_to_end(tracking_uri: str, tmp_path: Path) -> None:
    """More parameters than the network's slots: Tune trials, MLflow children whose
    Q-value tags name parameters beyond the first 8 when the window showed them."""
    import yaml

    from tests.user_tasks import Sphere

    box = {"type": "uniform", "low": 0.0, "high": 1.0, "boxes": 6}
    space = tmp_path / "sphere20.yaml"
    params = {f"x{i:02d}": dict(box) for i in range(20)}
    space.write_text(
        yaml.safe_dump(
            {"task": "sphere", "metric": "value", "mode": "min", "max_epochs": 1, "params": params}
        )
    )
    result = run_search(
        "dqn",
        space,
        task=Sphere(),
        budget_epochs=8,
        seed=0,
        num_workers=0,
        tracking_uri=tracking_uri,
        storage_path=tmp_path / "runs",
        verbose=False,
    )
    assert result.epochs_spent == 8 and len(result.trials) == 8
    kids = children(tracking_uri, result)
    assert len(kids) == 8
    shown: set[str] = set()
    for kid in kids:
        q = json.loads(kid.data.tags.get("dqn.q_values", "{}"))
        shown |= {n[:-2] for n in q if n[-2:] in ("+1", "-1", "++", "--")}
    assert len(shown) > mdp.MAX_PARAMS, shown  # the window changed between steps
