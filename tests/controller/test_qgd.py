"""Q-gradient descent's environments: the anchor logic on a known objective, the
features and rewards, and real generated nets."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest
import torch

from tune_app.controller.qgd import (
    ACTIONS,
    N_FEATURES,
    ROWS,
    VARIANTS,
    QGDEnv,
    action_names,
    generate,
)


class Quadratic:
    """f(x) = |x|^2 / 2 from x = (4, -2): grad f(x) = x; 'validation error' = f / 10."""

    def init(self) -> torch.Tensor:
        return torch.tensor([4.0, -2.0])

    def loss(self, x: torch.Tensor) -> float:
        return float(x @ x) / 2

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()

    def val_error(self, x: torch.Tensor) -> float:
        return self.loss(x) / 10


def env(control: str, **kw: Any) -> QGDEnv:
    return QGDEnv(control, steps=3, memory=2, problems=lambda rng: Quadratic(), **kw)  # type: ignore[arg-type]


def test_lr_half_retries_from_the_anchor_and_accept_moves_it() -> None:
    e = env("lr", alpha_c=0.5)
    obs, info = e.reset(seed=0)
    # one plain step at alpha_c: x = (4, -2) - 0.5 (4, -2) = (2, -1) is the anchor
    assert torch.allclose(e.anchor, torch.tensor([2.0, -1.0]))
    assert torch.allclose(e.candidate, torch.tensor([1.0, -0.5]))  # anchor + 0.5 d
    assert obs.shape == (N_FEATURES,) and np.all(np.abs(obs) <= 1)
    half, accept = ACTIONS["lr"].index("half"), ACTIONS["lr"].index("accept")
    obs, reward, terminated, truncated, info = e.step(half)
    assert not terminated
    assert info["alpha"] == 0.25
    assert torch.allclose(e.anchor, torch.tensor([2.0, -1.0]))  # same anchor
    assert torch.allclose(e.candidate, torch.tensor([1.5, -0.75]))
    # reward: c1 * (start value) / (candidate value): 0.01 * 2.5 / 1.40625
    assert reward == pytest.approx(0.01 * 2.5 / 1.40625)
    assert obs[0] == pytest.approx(-0.1)  # log2(alpha / alpha_c) / 10
    obs, reward, _, truncated, info = e.step(accept)
    assert torch.allclose(e.anchor, torch.tensor([1.5, -0.75])) and info["alpha"] == 0.5
    assert torch.allclose(e.candidate, torch.tensor([0.75, -0.375]))
    assert reward == pytest.approx(0.01 * 2.5 / 1.40625)  # c2 * ref / f(new anchor)
    assert obs[0] == 0.0 and obs[4] == 1.0  # alpha reset; the candidate is a new low
    assert not truncated
    *_, truncated, info = e.step(accept)
    assert truncated  # steps = 3
    # evaluations: 2 at reset (plain step, anchor) + 1 per candidate (4 proposed)
    assert info["evaluations"] == 2 + 4


def test_the_adaptive_lr_variant_raises_halves_and_keeps_the_rate() -> None:
    """Departure: ``up`` doubles the rate and retries from the anchor, ``accept``
    keeps the rate; the seed's variant has no ``up`` and resets on accept."""
    e = env("lr", alpha_c=0.5, variant="adaptive")
    assert e.actions == VARIANTS["lr"]["adaptive"] and e.action_space.n == 3
    e.reset(seed=0)  # anchor (2, -1), direction (-2, 1)
    half, up, accept = (e.actions.index(a) for a in ("half", "up", "accept"))
    obs, *_, info = e.step(up)
    assert info["alpha"] == 1.0 and obs[0] == pytest.approx(0.1)
    assert torch.allclose(e.anchor, torch.tensor([2.0, -1.0]))  # same anchor
    assert torch.allclose(e.candidate, torch.tensor([0.0, 0.0]))  # anchor + 1.0 d
    *_, info = e.step(accept)
    assert torch.allclose(e.anchor, torch.tensor([0.0, 0.0])) and info["alpha"] == 1.0
    *_, info = e.step(half)
    assert info["alpha"] == 0.5
    with pytest.raises(ValueError, match="no variant 'adaptive' for control 'l2'"):
        QGDEnv("l2", variant="adaptive")
    with pytest.raises(ValueError, match="no variant 'bold'"):
        QGDEnv("lr", variant="bold")
    assert action_names("lr") == ACTIONS["lr"] and action_names("l2", "seed") == ACTIONS["l2"]


def test_the_grow_variant_accepts_and_doubles_the_rate_in_one_step() -> None:
    """Departure: ``grow`` moves the anchor to the candidate (as ``accept``) and then
    doubles the rate; ``accept`` keeps the rate; ``half`` retries from the anchor."""
    e = env("lr", alpha_c=0.5, variant="grow")
    assert e.actions == VARIANTS["lr"]["grow"] == action_names("lr", "grow")
    e.reset(seed=0)  # anchor (2, -1), direction (-2, 1), candidate (1, -0.5)
    half, accept, grow = (e.actions.index(a) for a in ("half", "accept", "grow"))
    obs, reward, *_, info = e.step(grow)
    assert torch.allclose(e.anchor, torch.tensor([1.0, -0.5])) and info["alpha"] == 1.0
    assert torch.allclose(e.candidate, torch.tensor([0.0, 0.0]))  # new anchor + 1.0 d
    assert obs[0] == pytest.approx(0.1) and reward == pytest.approx(0.01 * 2.5 / 0.625)
    *_, info = e.step(half)
    assert info["alpha"] == 0.5 and torch.allclose(e.anchor, torch.tensor([1.0, -0.5]))
    *_, info = e.step(accept)
    assert torch.allclose(e.anchor, torch.tensor([0.5, -0.25])) and info["alpha"] == 0.5


def test_the_steer_variant_accepts_every_step_and_sets_lambda() -> None:
    """Departure for l2: ``lower`` / ``raise`` accept the candidate, then halve /
    multiply lambda by 1.25; ``accept`` keeps lambda; the direction is of the
    regularised objective at the new lambda."""
    e = env("l2", alpha_c=0.25, lambda_c=1.0, variant="steer")
    assert e.actions == VARIANTS["l2"]["steer"] == ("lower", "accept", "raise")
    e.reset(seed=0)  # g = f + |x|^2 / 2: x = (4, -2) - 0.25 * 2 (4, -2) = (2, -1)
    assert torch.allclose(e.candidate, torch.tensor([1.0, -0.5]))
    lower, accept, raise_ = (e.actions.index(a) for a in ("lower", "accept", "raise"))
    anchors = []
    for action, lam in ((raise_, 1.25), (accept, 1.25), (lower, 0.625)):
        *_, info = e.step(action)
        anchors.append(e.anchor.clone())
        assert info["lambda"] == pytest.approx(lam)
        # the next direction: -(1 + lambda) x at the new anchor
        assert torch.allclose(e.direction, -(1 + lam) * e.anchor)
    # every step moved the anchor: (1, -0.5), then by 0.25 * -(2.25) x each time
    assert torch.allclose(anchors[0], torch.tensor([1.0, -0.5]))
    assert torch.allclose(anchors[1], anchors[0] * (1 - 0.25 * 2.25))
    assert torch.allclose(anchors[2], anchors[1] * (1 - 0.25 * 2.25))


def test_alpha_range_draws_each_episodes_reset_rate() -> None:
    """Pretraining's departure: the reset rate is drawn per episode within
    alpha_c / r .. alpha_c * r; the state sees the rate relative to it (0 at reset)."""
    e = env("lr", alpha_c=1.0, alpha_range=8.0)
    rates = set()
    for seed in range(6):
        obs, info = e.reset(seed=seed)
        assert 1 / 8 <= info["alpha"] <= 8 and obs[0] == 0.0
        rates.add(info["alpha"])
    assert len(rates) == 6
    assert env("lr", alpha_c=1.0).reset(seed=0)[1]["alpha"] == 1.0
    with pytest.raises(ValueError, match="alpha_range"):
        QGDEnv("lr", alpha_range=0.5)


def test_lambda_range_draws_each_episodes_reset_coefficient() -> None:
    """The same departure for l2: lambda_c / r .. lambda_c * r per episode; the
    state sees the coefficient relative to it, and steer's actions scale it."""
    e = env("l2", lambda_c=0.01, lambda_range=4.0, variant="steer")
    drawn = set()
    for seed in range(6):
        obs, info = e.reset(seed=seed)
        assert 0.01 / 4 <= info["lambda"] <= 0.01 * 4 and obs[0] == 0.0
        drawn.add(info["lambda"])
        _, _, _, _, after = e.step(e.actions.index("raise"))
        assert after["lambda"] == pytest.approx(info["lambda"] * 1.25)
    assert len(drawn) == 6
    assert env("l2", lambda_c=0.01).reset(seed=0)[1]["lambda"] == 0.01
    with pytest.raises(ValueError, match="lambda_range"):
        QGDEnv("l2", lambda_range=0.5)


def test_the_log_reward_is_the_anchors_log_improvement_and_telescopes() -> None:
    e = QGDEnv("lr", steps=3, memory=2, alpha_c=0.5, reward="log", problems=lambda rng: Quadratic())  # type: ignore[arg-type]
    _, info = e.reset(seed=0)
    assert info["anchor_value"] == pytest.approx(2.5)  # f(2, -1)
    half, accept = ACTIONS["lr"].index("half"), ACTIONS["lr"].index("accept")
    _, r1, *_ = e.step(half)  # the anchor does not move
    assert r1 == 0.0
    _, r2, *_ = e.step(accept)  # the anchor moves to (1.5, -0.75): f = 1.40625
    assert r2 == pytest.approx(math.log(2.5 / 1.40625))
    _, r3, _, truncated, info = e.step(accept)  # to (0.75, -0.375): f = 0.3515625
    assert r3 == pytest.approx(math.log(4.0)) and truncated
    # the return is the log of the start's value over the final anchor's
    assert r1 + r2 + r3 == pytest.approx(math.log(2.5 / info["anchor_value"]))
    assert info["anchor_value"] == pytest.approx(0.3515625)
    with pytest.raises(ValueError, match="reward"):
        QGDEnv("lr", reward="inverse")


def test_l2_half_up_and_accept_change_lambda_and_the_regularised_direction() -> None:
    e = env("l2", alpha_c=0.5, lambda_c=1.0)
    e.reset(seed=0)
    half, up, accept = (ACTIONS["l2"].index(a) for a in ("half", "up", "accept"))
    # plain step on g = f + |x|^2 / 2: grad = 2x: x = (4, -2) - 0.5 * 2 (4, -2) = 0
    assert torch.allclose(e.anchor, torch.zeros(2))
    e2 = env("l2", alpha_c=0.25, lambda_c=1.0)
    e2.reset(seed=0)
    assert torch.allclose(e2.anchor, torch.tensor([2.0, -1.0]))
    _, _, _, _, info = e2.step(up)
    assert info["lambda"] == pytest.approx(1.25)
    # d = -(1 + 1.25) anchor: candidate = anchor (1 - 0.25 * 2.25)
    assert torch.allclose(e2.candidate, torch.tensor([2.0, -1.0]) * (1 - 0.25 * 2.25))
    _, _, _, _, info = e2.step(half)
    assert info["lambda"] == pytest.approx(0.625)
    _, _, _, _, info = e2.step(accept)
    assert info["lambda"] == 1.0


@pytest.mark.parametrize(("control", "form"), [("lr", "seed"), ("l2", "seed"), ("lr", "log")])
def test_episodes_on_generated_nets_are_seeded_bounded_and_end(control: str, form: str) -> None:
    def run(seed: int) -> list[float]:
        e = QGDEnv(control, steps=20, alpha_c=0.5, reward=form)
        obs, _ = e.reset(seed=seed)
        rewards, rng = [], np.random.default_rng(seed)
        truncated = False
        while not truncated:
            obs, reward, terminated, truncated, info = e.step(int(rng.integers(e.action_space.n)))
            assert e.observation_space.contains(obs) and not terminated
            low = 0 if form == "seed" else -100
            assert low <= reward <= 100 and np.isfinite(reward)
            rewards.append(reward)
        assert info["evaluations"] >= 20
        return rewards

    assert run(3) == run(3)
    assert len(run(4)) == 20


@pytest.mark.parametrize("seed", [0, 2])  # a logistic model and a ReLU MLP
def test_accepting_every_step_is_plain_gradient_descent_and_it_learns(seed: int) -> None:
    full_batch = lambda rng: dataclasses.replace(generate(rng), batch=0)  # noqa: E731
    e = QGDEnv("lr", steps=60, alpha_c=0.5, problems=full_batch)
    _, info = e.reset(seed=seed)
    start = info["anchor_value"]
    accept = ACTIONS["lr"].index("accept")
    for _ in range(60):
        *_, info = e.step(accept)
    assert info["anchor_value"] < 0.9 * start
    # full batch: the benchmark's training loss is the environment's value
    assert e.problem.full_loss(e.anchor) == pytest.approx(info["anchor_value"])  # type: ignore[attr-defined]


def test_generated_nets_differ_and_overfit_nets_have_few_rows() -> None:
    rng = np.random.default_rng(0)
    a, b = generate(rng), generate(rng, ROWS["default"]["l2"])
    assert a.x_train.shape != b.x_train.shape or a.model != b.model
    assert len(b.y_train) <= 120 and len(b.y_val) == 500


@pytest.mark.parametrize("control", ["lr", "l2"])
def test_gymnasiums_checker_accepts_both_environments(control: str) -> None:
    from gymnasium.utils.env_checker import check_env

    check_env(QGDEnv(control, steps=5), skip_render_check=True)


def test_armijo_backtracks_until_the_step_decreases_enough_then_accepts() -> None:
    from tune_app.controller import qgd_eval

    e = QGDEnv("lr", steps=2, memory=2, alpha_c=3.0, problems=lambda rng: Quadratic())  # type: ignore[arg-type]
    obs, _ = e.reset(seed=0)
    # the anchor after one plain step at 3: (4, -2) - 3 (4, -2) = (-8, 4); candidate (16, -8)
    assert qgd_eval.armijo(e, obs) == ACTIONS["lr"].index("half")
    obs, *_ = e.step(qgd_eval.armijo(e, obs))  # alpha 1.5: candidate (4, -2), a quarter of f
    assert qgd_eval.armijo(e, obs) == ACTIONS["lr"].index("accept")
    result = qgd_eval.episode(e, qgd_eval.plain, seed=0)
    # reset: the plain step and the anchor; then one per candidate (the first + 2 steps)
    assert result["evaluations"] == 2 + 3
