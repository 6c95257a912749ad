"""The tuning MDP: observation shape and bounds, action effects, padding, reward."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from tune_app.controller import mdp
from tune_app.controller.env import INVALID_PENALTY, RETURN_PENALTY, TuningEnv, log_regret
from tune_app.controller.surfaces import SyntheticTask, generate


@dataclass
class Line(SyntheticTask):
    """A known 1-parameter surface over 5 boxes: loss 4, 3, 2, 1, 0 (noiseless)."""

    def true_value(self, idx: tuple[int, ...]) -> float:
        return float(4 - idx[0])

    def observe(self, idx: tuple[int, ...], rng: np.random.Generator) -> float:
        return self.true_value(idx)


def line() -> Line:
    task = Line(n_boxes=(5,), max_epochs=1, noise=0.0, p_early_stop=0.0, seed=0)
    task.optimum, task.median = 0.0, 2.0
    return task


def test_observations_have_fixed_shape_and_stay_in_bounds() -> None:
    env = TuningEnv({"seed": 3})
    rng = np.random.default_rng(0)
    sizes = set()
    for _ in range(12):
        obs, _ = env.reset()
        assert env.task is not None
        sizes.add(env.task.n_params)
        done = False
        while not done:
            assert obs.shape == (mdp.OBS_DIM,) and obs.dtype == np.float32
            assert env.observation_space.contains(obs)
            # The tail is the valid-action mask, the one the searcher applies.
            mask = mdp.valid_actions(env.walker, env.hist)
            assert (mdp.valid_in(obs) == mask).all() and mask.any()
            obs, reward, term, trunc, _ = env.step(int(rng.integers(mdp.N_ACTIONS)))
            assert math.isfinite(reward)
            done = term or trunc
        assert len(env.hist.values) <= env.budget
    assert len(sizes) > 2  # tasks of several sizes share one observation space


def test_padding_marks_missing_parameters_and_their_moves_are_invalid() -> None:
    env = TuningEnv()
    obs, _ = env.reset(options={"task": line(), "budget": 5, "point": (2,)})
    assert obs[0] == 1.0  # parameter 0 present
    for slot in range(1, mdp.MAX_PARAMS):
        block = obs[slot * mdp.PER_PARAM : (slot + 1) * mdp.PER_PARAM]
        assert block[0] == -1.0 and not block[1:].any()
    before = env.score
    _, reward, *_ = env.step(2 * 3 + 1)  # "parameter 3 up": there is no parameter 3
    # Invalid: penalised and replaced by a jump to an unvisited configuration.
    assert env.walker.pos != (2,) and len(env.hist.values) == 2
    assert reward == pytest.approx(before - env.score - INVALID_PENALTY)


def test_actions_move_one_box_and_return_to_best() -> None:
    env = TuningEnv()
    env.reset(options={"task": line(), "budget": 5, "point": (2,)})
    env.step(0)  # parameter 0 down: to box 1 (loss 3, worse)
    assert env.walker.pos == (1,) and env.hist.best_point == (2,)
    _, reward, *_ = env.step(0)  # down again: box 0, loss 4
    assert env.walker.pos == (0,) and reward == 0.0  # the incumbent did not change
    assert not mdp.valid_actions(env.walker, env.hist)[1]  # box 1 is already evaluated
    _, reward, *_ = env.step(mdp.RETURN_TO_BEST)
    assert env.walker.pos == (2,) and reward == -RETURN_PENALTY
    assert len(env.hist.values) == 3  # returning evaluates nothing
    _, reward, *_ = env.step(1)  # up: box 3, loss 1, a new best
    assert env.walker.pos == (3,) and env.hist.best_point == (3,)
    assert reward == pytest.approx(log_regret(env.task, 2.0) - log_regret(env.task, 1.0))


def test_reward_is_the_decrease_of_log_normalised_regret() -> None:
    task = line()
    env = TuningEnv()
    env.reset(options={"task": task, "budget": 5, "point": (0,)})
    total = 0.0
    for expected_loss in (3, 2, 1, 0):
        _, reward, term, _, info = env.step(1)  # up
        before = log_regret(task, expected_loss + 1)
        assert reward == pytest.approx(before - log_regret(task, expected_loss))
        total += reward
    assert term and info["regret"] == pytest.approx(-3.0)  # clipped at 1e-3 of the spread
    assert total == pytest.approx(math.log10(4 / 2) + 3.0)  # R(start) - R(optimum)


def test_generated_tasks_are_seeded_and_normalised() -> None:
    a, b = generate(11), generate(11)
    assert a.n_boxes == b.n_boxes
    point = tuple(n // 2 for n in a.n_boxes)
    assert a.true_value(point) == b.true_value(point)
    assert generate(12).n_boxes != a.n_boxes or generate(12).true_value(
        tuple(0 for _ in generate(12).n_boxes)
    ) != a.true_value(tuple(0 for _ in a.n_boxes))
    for seed in range(20):
        task = generate(seed)
        assert 1 <= task.n_params <= mdp.MAX_PARAMS
        assert task.optimum <= task.median
        curve = task.curve(tuple(0 for _ in task.n_boxes), np.random.default_rng(0))
        assert len(curve) == task.max_epochs and all(map(math.isfinite, curve))
