"""Q-gradient descent's RLlib pretraining: the exported policy, and real iterations."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from tune_app.controller.qgd_train import QGDSettings, RLlibQGDEnv, dqn_config, export, load, train
from tune_app.errors import ConfigError

TINY = {"steps": 10, "steps_per_iteration": 100, "learning_starts": 50, "batch_size": 16}


@pytest.mark.parametrize("control", ["lr", "l2"])
def test_the_exported_policy_reproduces_rllibs_q_values(control: str, tmp_path: Path) -> None:
    settings = QGDSettings(control=control, **TINY)
    env = RLlibQGDEnv(settings.env_config())
    learner = dqn_config(settings).build_learner(env=env)
    learner.build()
    export(learner, tmp_path, settings, {})
    tensors = torch.load(tmp_path / "q_network.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in tensors.values())
    obs = np.stack([env.reset(seed=s)[0] for s in range(5)])
    with torch.no_grad():
        module = learner.module["default_policy"]
        expected = module.compute_q_values({"obs": torch.as_tensor(obs)})["qf_preds"].numpy()
    policy = load(tmp_path)
    assert expected.shape == (5, env.action_space.n)
    np.testing.assert_allclose(policy.q_values(obs), expected, rtol=1e-5, atol=1e-6)
    assert policy.manifest["actions"] == list(env.actions)


def test_a_search_controller_checkpoint_is_not_a_qgd_policy() -> None:
    from tune_app.controller.policy import SHIPPED

    with pytest.raises(ConfigError, match="not a Q-gradient-descent policy"):
        load(SHIPPED)


@pytest.mark.usefixtures("ray_session")
@pytest.mark.parametrize("replay", ["prioritized", "recent_best"])
def test_rllib_iterations_on_the_cluster_log_to_mlflow_and_export(
    replay: str, tmp_path: Path, tracking_uri: str
) -> None:
    out = tmp_path / "qgd"
    summary = train(
        QGDSettings(iterations=2, replay=replay, **TINY),
        out=out,
        tracking_uri=tracking_uri,
        log=lambda _: None,
    )
    assert summary["iterations"] == 2 and summary["env_steps"] >= 200
    assert math.isfinite(summary["td_loss"]) and summary["td_loss"] >= 0
    assert load(out).q_values(np.zeros(6, dtype=np.float32)).shape == (2,)
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name("qgd-pretraining")
    assert exp is not None
    (run,) = client.search_runs([exp.experiment_id], f"params.replay = '{replay}'")
    assert run.info.status == "FINISHED"
    assert len(client.get_metric_history(run.info.run_id, "td_loss")) >= 1
    assert {a.path for a in client.list_artifacts(run.info.run_id, "qgd")} == {
        "qgd/q_network.pt",
        "qgd/manifest.json",
    }


def test_the_benchmark_compares_a_policy_with_its_baselines(tmp_path: Path) -> None:
    """benchmarks/qgd_controller.py on an untrained export: one row per controller."""
    import subprocess
    import sys

    from tests.conftest import REPO

    settings = QGDSettings(**TINY)
    learner = dqn_config(settings).build_learner(env=RLlibQGDEnv(settings.env_config()))
    learner.build()
    export(learner, tmp_path, settings, {})
    script = REPO / "benchmarks" / "qgd_controller.py"
    args = ["--policy", str(tmp_path), "--episodes", "3", "--grid", "0.3,1"]
    proc = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line.split("|")[1].strip() for line in proc.stdout.splitlines() if line[:2] == "| "]
    assert rows == ["controller", "plain", "armijo", "descent", "best fixed", "qgd"]
    # held-out seeds only
    proc = subprocess.run(
        [sys.executable, str(script), *args, "--first-seed", "7"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0 and "held-out seeds start at" in proc.stderr


def test_settings_choose_the_reward_and_pass_it_to_the_environment() -> None:
    assert QGDSettings(reward="log").env_config()["reward"] == "log"
    assert RLlibQGDEnv(QGDSettings(reward="log").env_config()).reward == "log"
    with pytest.raises(ConfigError, match="reward"):
        QGDSettings(reward="inverse")
    assert dqn_config(QGDSettings(n_step=5)).n_step == 5


def test_settings_choose_the_actions_variant_and_the_reset_rate_range() -> None:
    config = QGDSettings(variant="grow", alpha_range=4.0).env_config()
    env = RLlibQGDEnv(config)
    assert env.actions == ("half", "accept", "grow") and env.alpha_range == 4.0
    assert RLlibQGDEnv(QGDSettings(control="l2", variant="steer").env_config()).action_space.n == 3
    with pytest.raises(ConfigError, match="no variant 'grow' for control 'l2'"):
        QGDSettings(control="l2", variant="grow")
    with pytest.raises(ConfigError, match="alpha_range"):
        QGDSettings(alpha_range=0.5)
    assert QGDSettings("l2", lambda_range=8.0).env_config()["lambda_range"] == 8.0
    with pytest.raises(ConfigError, match="lambda_range"):
        QGDSettings(lambda_range=0.5)


def test_settings_choose_the_generated_nets_rows() -> None:
    """``rows="any"`` draws l2 nets of 40-1,000 rows (the default: 40-120)."""
    sizes = {}
    for rows in ("default", "any"):
        env = RLlibQGDEnv(QGDSettings("l2", rows=rows, steps=1).env_config())
        sizes[rows] = []
        for seed in range(12):
            env.reset(seed=seed)
            sizes[rows].append(len(env.problem.y_train))
    assert all(40 <= n <= 120 for n in sizes["default"])
    assert all(40 <= n <= 1000 for n in sizes["any"]) and max(sizes["any"]) > 120
    with pytest.raises(ConfigError, match="rows must be one of"):
        QGDSettings(rows="many")
    with pytest.raises(ConfigError, match="rows applies to env 'step' only"):
        QGDSettings(env="block", reward="log", rows="any")


def test_settings_choose_the_generated_nets_inputs() -> None:
    """``inputs="unit"`` scales every feature into [0, 1] (the default standardises);
    ``"any"`` draws either per episode."""
    lows, highs, means = {}, {}, {}
    for inputs in ("standardised", "unit", "any"):
        env = RLlibQGDEnv(QGDSettings(inputs=inputs, steps=1).env_config())
        found = []
        for seed in range(12):
            env.reset(seed=seed)
            x = torch.cat([env.problem.x_train, env.problem.x_val])
            found.append((float(x.min()), float(x.max()), float(x.mean())))
        lows[inputs], highs[inputs], means[inputs] = zip(*found, strict=True)
    assert min(lows["unit"]) >= 0.0 and max(highs["unit"]) <= 1.0
    assert all(abs(m) < 1e-3 for m in means["standardised"])
    assert min(lows["standardised"]) < -1.0  # not in [0, 1]
    kinds = {low >= 0.0 for low in lows["any"]}
    assert kinds == {True, False}  # both scalings occur
    with pytest.raises(ConfigError, match="inputs must be one of"):
        QGDSettings(inputs="pixels")
    with pytest.raises(ConfigError, match="inputs applies to env 'step' only"):
        QGDSettings(env="block", reward="log", inputs="unit")


def test_the_seeds_replay_samples_only_the_recent_and_the_best_episodes() -> None:
    """Six finished episodes of returns 5, 1, 4, 2, 0, 3 (oldest first): with 2
    recent and 2 best, only the last two (0, 3) and the best others (5, 4) are
    drawn, through the sampling call RLlib's DQN makes."""
    from ray.rllib.env.single_agent_episode import SingleAgentEpisode

    from tune_app.controller.qgd_replay import RecentBestEpisodeReplayBuffer

    buffer = RecentBestEpisodeReplayBuffer(1000, recent=2, best=2)
    for ret in (5.0, 1.0, 4.0, 2.0, 0.0, 3.0):
        steps = 4
        buffer.add(
            SingleAgentEpisode(
                observations=[np.full(6, ret, dtype=np.float32)] * (steps + 1),
                actions=[0] * steps,
                rewards=[ret / steps] * steps,
                terminated=True,
                len_lookback_buffer=0,
            )
        )
    assert buffer.kept_episodes() == [0, 2, 4, 5]
    sampled = buffer.sample(num_items=64, n_step=1, gamma=0.9, sample_episodes=True)
    seen = {float(obs[0]) for episode in sampled for obs in episode.get_observations()}
    assert seen == {5.0, 4.0, 0.0, 3.0}
    assert len(buffer._indices) == 6 * 4  # every episode is still stored
    with pytest.raises(ValueError, match="recent must be"):
        RecentBestEpisodeReplayBuffer(recent=0)
    with pytest.raises(ConfigError, match="replay must be one of"):
        QGDSettings(replay="fifo")


@pytest.mark.parametrize(
    "folder", sorted((Path(__file__).parents[2] / "benchmarks" / "policies").glob("qgd_*"))
)
def test_the_measured_policies_the_docs_rerun_load_with_their_actions(folder: Path) -> None:
    """benchmarks/policies keeps the policies docs/dqn-controller.md measures."""
    from tune_app.controller.qgd import action_names
    from tune_app.controller.qgd_train import variant_of

    policy = load(folder)
    control = policy.manifest["control"]
    assert policy.manifest["actions"] == list(action_names(control, variant_of(policy)))
    assert policy.q_values(np.zeros(policy.manifest["obs_dim"], np.float32)).shape == (
        policy.manifest["n_actions"],
    )
