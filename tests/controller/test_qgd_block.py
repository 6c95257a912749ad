"""The block environment: the inner controller's own MDP on generated nets."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tune_app.controller.qgd_block import OPTIMIZERS, BlockEnv
from tune_app.controller.qgd_train import QGDSettings, dqn_config, export, load, train
from tune_app.errors import ConfigError

TINY = {"steps": 10, "steps_per_iteration": 100, "learning_starts": 50, "batch_size": 16}
BLOCK = {"env": "block", "reward": "log", "variant": "grow", **TINY}


def _weights(state: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([v.reshape(-1) for v in state.values()])


def _adam_steps(env: BlockEnv) -> int:
    return int(next(iter(env.optimizer.state_dict()["state"].values()))["step"])


def test_accept_keeps_the_block_half_undoes_it_and_grow_doubles_the_rate() -> None:
    env = BlockEnv(variant="grow", every=4, optimizers=("adam",))
    env.reset(seed=3)
    names = env.actions
    alpha_0 = env.alpha_0
    assert env.alpha == pytest.approx(alpha_0) and _adam_steps(env) == 4
    candidate = _weights(env.problem.model.state_dict()).clone()
    env.step(names.index("accept"))  # keeps the block: the candidate is the anchor
    assert torch.equal(_weights(env.agent.anchor["model"]), candidate)
    assert env.alpha == pytest.approx(alpha_0) and _adam_steps(env) == 8
    anchor = _weights(env.agent.anchor["model"]).clone()
    env.step(names.index("half"))  # undoes the block: weights and Adam's state
    assert torch.equal(_weights(env.agent.anchor["model"]), anchor)
    assert env.alpha == pytest.approx(alpha_0 / 2) and _adam_steps(env) == 8
    env.step(names.index("grow"))  # keeps the block, then doubles the rate
    assert not torch.equal(_weights(env.agent.anchor["model"]), anchor)
    assert env.alpha == pytest.approx(alpha_0) and _adam_steps(env) == 12
    assert env._info()["evaluations"] == 16  # an undone block's steps count


@pytest.mark.parametrize("objective", ["train", "val"])
def test_the_returns_add_up_to_the_anchors_log_improvement(objective: str) -> None:
    """The log reward telescopes: the return is log(f(start) / f(final anchor)), with
    f the cross-entropy on all the training rows or on the validation rows."""
    env = BlockEnv(steps=12, objective=objective)
    obs, info = env.reset(seed=11)
    start, total, truncated = info["anchor_value"], 0.0, False
    rng = np.random.default_rng(0)
    while not truncated:
        assert obs.shape == (6,) and np.all(np.abs(obs) <= 1)
        obs, reward, _, truncated, info = env.step(int(rng.integers(env.action_space.n)))
        total += reward
    assert info["optimizer"] in OPTIMIZERS
    assert total == pytest.approx(math.log(start / info["anchor_value"]), abs=1e-6)
    goal = env.anchor_loss if objective == "train" else env.anchor_val_loss
    assert info["anchor_value"] == goal and env.measures()["loss"] == env.anchor_loss
    assert 0 <= env.measures()["val_error"] <= 1


def test_block_settings_are_checked_with_one_line_errors() -> None:
    with pytest.raises(ConfigError, match="env must be one of"):
        QGDSettings(env="blocks")
    with pytest.raises(ConfigError, match="log reward only"):
        QGDSettings(env="block")
    with pytest.raises(ConfigError, match="optimizers must be among"):
        QGDSettings(env="block", reward="log", optimizers="adam,rmsprop")
    with pytest.raises(ConfigError, match="objective must be one of"):
        QGDSettings(env="block", reward="log", objective="test")
    with pytest.raises(ConfigError, match="env 'block' only"):
        QGDSettings(objective="val")
    with pytest.raises(ConfigError, match="controls lr only"):
        QGDSettings(control="l2", env="block", reward="log")
    config = QGDSettings(**BLOCK).env_config()
    assert config["every"] == 10 and config["optimizers"] == tuple(OPTIMIZERS)


def test_a_block_policy_exports_and_the_benchmark_plays_it(tmp_path: Path) -> None:
    from tests.conftest import REPO

    settings = QGDSettings(**BLOCK)
    env = settings.env_class()(settings.env_config())
    learner = dqn_config(settings).build_learner(env=env)
    learner.build()
    export(learner, tmp_path, settings, {})
    policy = load(tmp_path)
    assert "BlockEnv" in policy.manifest["environment"]
    assert policy.manifest["actions"] == ["half", "accept", "grow"]
    obs = np.stack([env.reset(seed=s)[0] for s in range(3)])
    with torch.no_grad():
        module = learner.module["default_policy"]
        expected = module.compute_q_values({"obs": torch.as_tensor(obs)})["qf_preds"].numpy()
    np.testing.assert_allclose(policy.q_values(obs), expected, rtol=1e-5, atol=1e-6)
    script = REPO / "benchmarks" / "qgd_controller.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--policy", str(tmp_path), "--episodes", "3"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line.split("|")[1].strip() for line in proc.stdout.splitlines() if line[:2] == "| "]
    assert rows == ["controller", "plain", "descent", "qgd"]


@pytest.mark.usefixtures("ray_session")
def test_rllib_iterations_on_blocks_have_a_finite_loss(tmp_path: Path) -> None:
    summary = train(QGDSettings(iterations=2, **BLOCK), out=tmp_path, log=lambda _: None)
    assert summary["iterations"] == 2 and summary["env_steps"] >= 200
    assert math.isfinite(summary["td_loss"]) and summary["td_loss"] >= 0
    assert load(tmp_path).manifest["settings"]["env"] == "block"
