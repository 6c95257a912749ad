"""The scripted expert, its demonstrations and the DQfD warm start: the warm-started
network imitates the expert, loads into RLlib's DQN learner, and already beats
random search on held-out generated tasks."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from tune_app.controller import evaluate, mdp
from tune_app.controller.demos import demonstrations, warm_start
from tune_app.controller.env import TuningEnv
from tune_app.controller.expert import expert_action
from tune_app.controller.policy import QPolicy
from tune_app.controller.pretrain import TrainSettings, _load_into, dqn_config
from tune_app.controller.surfaces import generate


def test_expert_explores_then_descends_around_the_incumbent() -> None:
    env = TuningEnv({"seed": 3})
    env.reset(options={"task": generate(11), "budget": 20, "start": "default"})
    rng = random.Random(0)
    seen = []
    for _ in range(40):
        a = expert_action(env.walker, env.hist, env.budget, rng)
        assert mdp.valid_actions(env.walker, env.hist)[a], mdp.action_name(a)
        seen.append(a)
        if env.step(a)[2]:
            break
    # 0.3 of 20 = 6 evaluations are random jumps (the start is the first).
    assert seen[:5] == [mdp.JUMP] * 5
    rest = seen[5:]
    assert mdp.JUMP not in rest and any(a < 2 * mdp.MAX_PARAMS for a in rest)
    assert mdp.RETURN_TO_BEST in rest  # back to the incumbent after a move that did not help


def test_expert_repeats_a_move_that_improved() -> None:
    hist = mdp.History((5, 5))
    hist.record((2, 2), 1.0)
    hist.record((3, 2), 0.5)  # moving p0 up improved
    walker = mdp.Walker((3, 2), moves=[(0, 1)], since_improve=0)
    assert expert_action(walker, hist, horizon=4, rng=random.Random(0)) == 1  # p0+1


def test_demonstrations_carry_n_step_returns_and_expert_labels() -> None:
    d = demonstrations(4, seed=2, noise=0.5, n_step=3, gamma=0.9)
    n = len(d)
    assert n > 20 and d.obs.shape == (n, mdp.OBS_DIM) and d.boot_obs.shape == d.obs.shape
    assert ((d.action >= 0) & (d.action < mdp.N_ACTIONS)).all()
    assert (d.action != d.expert).any()  # noise: some steps departed from the expert
    allowed = np.array([0.0, 0.9, 0.9**2, 0.9**3], dtype=np.float32)
    assert np.isclose(d.boot_discount[:, None], allowed[None]).any(axis=1).all()
    assert (d.boot_discount == 0).sum() == 3 * 4  # last n_step steps of each episode end it
    assert np.isfinite(d.ret).all() and len(d.episode_regret) == 4


@pytest.mark.slow
def test_warm_start_imitates_the_expert_and_beats_random_on_held_out_tasks(
    tmp_path: Path,
) -> None:
    demos = demonstrations(150, seed=0)
    stats = warm_start(demos, tmp_path, updates=1500, log=lambda _: None)
    assert stats["expert_agreement"] > 0.6  # 35 actions: chance is a few percent
    manifest = {"obs_dim": mdp.OBS_DIM, "n_actions": mdp.N_ACTIONS}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    policy = QPolicy.load(tmp_path)
    learned = evaluate.mean_log_regret(evaluate.greedy(policy), episodes=60)
    rnd = evaluate.mean_log_regret(evaluate.random_search(), episodes=60)
    assert learned < rnd - 0.1, (learned, rnd)
    # The same tensors load into RLlib's DQN learner and give the same Q-values.
    learner = dqn_config(TrainSettings()).build_learner(env=TuningEnv({}))
    learner.build()
    _load_into(learner, tmp_path)
    import torch

    obs = demos.obs[:5]
    with torch.no_grad():
        rllib_q = (
            learner.module["default_policy"]
            .compute_q_values({"obs": torch.as_tensor(obs)})["qf_preds"]
            .numpy()
        )
    valid = mdp.valid_in(obs)
    np.testing.assert_allclose(rllib_q[valid], policy.q_values(obs)[valid], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_controller_train_cli_warm_starts_from_demonstrations(tmp_path: Path) -> None:
    from tune_app.cli import main

    out = tmp_path / "ctl"
    argv = ["controller", "train", "--demo-episodes", "8", "--demo-updates", "20"]
    argv += ["--iterations", "1", "--steps-per-iteration", "64", "--eval-episodes", "3"]
    argv += ["--out", str(out), "--tracking-uri", f"sqlite:///{tmp_path / 'm.db'}"]
    assert main(argv) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["demonstrations"]["episodes"] == 8
    assert manifest["settings"]["init_from"] == str(out / "warm_start")
    held_out = manifest["held_out"]
    assert {"policy", "expert", "random", "warm_start"} <= set(held_out)
    assert QPolicy.load(out / "warm_start").manifest["stage"].startswith("DQfD")
