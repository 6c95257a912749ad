"""RLlib DQN pretraining: a few iterations run with a finite TD loss, the learning
curve reaches MLflow, and the exported tensors-only checkpoint reproduces the
RLlib module's Q-values exactly."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from tune_app.controller import mdp, policy
from tune_app.controller.env import TuningEnv
from tune_app.controller.pretrain import TrainSettings, dqn_config, export, train, train_local

TINY = {"steps_per_iteration": 200, "learning_starts": 100, "batch_size": 32}


def test_exported_checkpoint_reproduces_the_rllib_q_values(tmp_path: Path) -> None:
    settings = TrainSettings(**TINY)
    env = TuningEnv({"seed": 5})
    learner = dqn_config(settings).build_learner(env=env)
    learner.build()
    export(learner, tmp_path, settings, {})
    tensors = torch.load(tmp_path / "q_network.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in tensors.values())
    assert not any(k.startswith("_target") for k in tensors)
    obs = np.stack([env.reset()[0] for _ in range(6)])
    module = learner.module["default_policy"]
    with torch.no_grad():
        expected = module.compute_q_values({"obs": torch.as_tensor(obs)})["qf_preds"].numpy()
    loaded = policy.QPolicy.load(tmp_path)
    valid = mdp.valid_in(obs)
    assert not valid.all() and np.isneginf(expected[~valid]).all()  # RLlib masks them
    np.testing.assert_allclose(loaded.q_values(obs)[valid], expected[valid], rtol=1e-5, atol=1e-6)
    policy._load_cached.cache_clear()
    again = policy.QPolicy.load(tmp_path)  # a fresh load from disk: identical values
    np.testing.assert_array_equal(again.q_values(obs), loaded.q_values(obs))
    assert again.q_values(obs[0]).shape == (mdp.N_ACTIONS,)


def test_rllib_exploration_takes_only_valid_actions() -> None:
    """The masked module's epsilon-greedy (epsilon 1.0 at the start) draws random
    actions among the valid ones only: the mask is the observation's tail."""
    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

    runner = SingleAgentEnvRunner(config=dqn_config(TrainSettings(**TINY)))
    episodes = runner.sample(num_timesteps=300, random_actions=False)
    taken = 0
    for ep in episodes:
        obs, actions = ep.get_observations()[:-1], ep.get_actions()
        for o, a in zip(obs, actions, strict=False):
            assert mdp.valid_in(o)[a], mdp.action_name(int(a))
            taken += 1
    assert taken >= 250


@pytest.mark.slow
def test_in_process_training_runs_and_logs_to_mlflow(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "ckpt"
    settings = TrainSettings(iterations=2, select_every=1, select_episodes=5, **TINY)
    summary = train_local(settings, out=out, tracking_uri=uri, log=lambda _: None)
    assert summary["iterations"] == 2 and summary["env_steps"] >= 400
    assert math.isfinite(summary["td_loss"]) and summary["td_loss"] >= 0
    latest = json.loads((out / "latest" / "manifest.json").read_text())
    assert latest["obs_dim"] == mdp.OBS_DIM and latest["training"]["iterations"] == 2
    manifest = json.loads((out / "manifest.json").read_text())  # the best-scoring one
    selected = manifest["training"]["selected"]
    assert selected["iteration"] in (1, 2) and selected["selection_log_regret"] < 1
    client = MlflowClient(uri)
    [run] = client.search_runs(
        [client.get_experiment_by_name("controller-pretraining").experiment_id]
    )
    assert len(client.get_metric_history(run.info.run_id, "td_loss")) == 2
    assert policy.QPolicy.load(out).q_values(np.zeros(mdp.OBS_DIM)).shape == (mdp.N_ACTIONS,)


@pytest.mark.slow
@pytest.mark.usefixtures("ray_session")
def test_rllib_algorithm_trains_on_the_ray_cluster(tmp_path: Path) -> None:
    out = tmp_path / "ckpt"
    summary = train(TrainSettings(iterations=2, **TINY), out=out, log=lambda _: None)
    assert summary["iterations"] == 2
    assert math.isfinite(summary["td_loss"]) and summary["td_loss"] >= 0
    assert (out / "q_network.pt").is_file()
    # Continuing from that export (as after a DQfD warm start) loads it into the
    # learner and the env runners before the first iteration.
    again = tmp_path / "again"
    settings = TrainSettings(
        iterations=1,
        init_from=str(out),
        learning_starts=10_000,
        **{k: v for k, v in TINY.items() if k != "learning_starts"},
    )
    train(settings, out=again, log=lambda _: None)  # no update yet: the weights stay
    before = torch.load(out / "q_network.pt", weights_only=True)
    after = torch.load(again / "q_network.pt", weights_only=True)
    assert all(torch.equal(before[k], after[k]) for k in before)
