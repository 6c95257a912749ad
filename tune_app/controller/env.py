"""The tuning MDP as a gymnasium environment over generated synthetic tasks.

One episode = one search on a fresh :class:`~tune_app.controller.surfaces.SyntheticTask`
with a budget of ``B`` evaluations (10..60 by default). The walker starts at a
``random``, ``bad`` (a corner) or ``default`` (central) configuration, which is
evaluated first. The episode ends when the budget is spent (or after ``3 B`` steps).

**Reward.** The decrease of the incumbent's *log normalised regret*::

    R(v) = log10(clip((v - optimum) / (median - optimum), 1e-3, 10))
    reward = R(incumbent before) - R(incumbent after)

where the incumbent is the best configuration *observed* (noisy), scored by its
noiseless value. Normalising by the task's own median-to-optimum spread makes
returns comparable across tasks of any scale; the log makes going from 10% to 1%
of that spread worth as much as going from 100% to 10%, which is what the
benchmark's normalised regret ``(best - opt) / (random_best - opt)`` rewards (a
random search already reaches a few percent of the spread). The episode return
telescopes to ``R(start) - R(final incumbent)``, so the agent maximises exactly
the final regret, with discounting favouring early improvements (anytime). The
seeds' ``c / (f - f_lb)`` needs a lower bound and explodes near it; this does not.
A return to the incumbent (no evaluation) costs 0.01. An invalid action (off
the grid, a padding slot, or onto a configuration already evaluated) costs 0.1
and is replaced by a jump to a random unvisited configuration: a no-op would
leave the state unchanged, and a greedy policy that rates an invalid action
highest would repeat it until the episode is cut off. The searcher masks invalid
actions, so it never takes them.
"""

from __future__ import annotations

import math
import random
from typing import Any

import gymnasium as gym
import numpy as np

from tune_app.controller import mdp
from tune_app.controller.surfaces import SyntheticTask, generate

INVALID_PENALTY = 0.1
RETURN_PENALTY = 0.01
# The same names as the ``dqn`` strategy's ``start`` option (tune_app.strategies.dqn).
STARTS = ("random", "bad", "default")


def log_regret(task: SyntheticTask, value: float) -> float:
    """``R(v)``: log10 of the normalised regret, clipped to [-3, 1]."""
    spread = max(task.median - task.optimum, 1e-9)
    return math.log10(min(10.0, max(1e-3, (value - task.optimum) / spread)))


def start_point(task_boxes: tuple[int, ...], kind: str, rng: random.Random) -> mdp.Point:
    """A start configuration: ``random``, ``bad`` (a random corner) or ``default``
    (the middle box of every parameter: a generated task declares no defaults)."""
    if kind == "random":
        return tuple(rng.randrange(n) for n in task_boxes)
    if kind == "bad":
        return tuple(rng.choice((0, n - 1)) for n in task_boxes)
    if kind == "default":
        return tuple(n // 2 for n in task_boxes)
    raise ValueError(f"start must be one of {STARTS}, got {kind!r}")


class TuningEnv(gym.Env):
    """Gymnasium environment: walk the value boxes of generated tuning tasks.

    ``config`` keys (all optional): ``seed`` (task stream), ``budget_min`` and
    ``budget_max`` (evaluations per episode), ``max_params``.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        config = dict(config or {})
        self.budget_min = int(config.get("budget_min", 10))
        self.budget_max = int(config.get("budget_max", 60))
        self.max_params = int(config.get("max_params", mdp.MAX_PARAMS))
        seed = int(config.get("seed", 0))
        # Each env runner / vector slot gets its own task stream.
        worker = int(getattr(config, "worker_index", 0)) * 1000 + int(
            getattr(config, "vector_index", 0)
        )
        self._rng = random.Random(seed * 1_000_003 + worker)
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (mdp.OBS_DIM,), np.float32)
        self.action_space = gym.spaces.Discrete(mdp.N_ACTIONS)
        self.task: SyntheticTask | None = None

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start a search on a new task from a new start.

        ``options`` may fix ``task`` (a SyntheticTask), ``budget``, ``start``
        (one of :data:`STARTS`) or the start ``point`` itself.
        """
        if seed is not None:
            self._rng = random.Random(seed)
        options = options or {}
        self.task = options.get("task") or generate(
            self._rng.randrange(2**31), max_params=self.max_params
        )
        self.budget = int(
            options.get("budget", self._rng.randint(self.budget_min, self.budget_max))
        )
        self.noise_rng = np.random.default_rng(self._rng.randrange(2**31))
        self.hist = mdp.History(self.task.n_boxes)
        kind = options.get("start", self._rng.choice(STARTS))
        point = options.get("point") or start_point(self.task.n_boxes, kind, self._rng)
        self.walker = mdp.Walker(tuple(point))
        self.steps = 0
        self._evaluate(self.walker.pos)
        self.score = log_regret(self.task, self.task.true_value(self._incumbent()))
        return self._obs(), {}

    def _incumbent(self) -> mdp.Point:
        assert self.hist.best_point is not None
        return self.hist.best_point

    def _evaluate(self, point: mdp.Point) -> None:
        assert self.task is not None
        value = self.task.observe(point, self.noise_rng)
        new_best = self.hist.record(point, value)
        self.walker.observed(new_best, value)

    def _obs(self) -> np.ndarray:
        return mdp.features(self.walker, self.hist, self.budget)

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Apply ``action``; reward = decrease of the incumbent's log regret."""
        assert self.task is not None
        action = int(action)
        self.steps += 1
        mask = mdp.valid_actions(self.walker, self.hist)
        penalty = 0.0
        if not mask[action]:
            penalty = INVALID_PENALTY
            action = mdp.JUMP
        nxt = mdp.apply(self.walker, self.hist, action, self._rng)
        if nxt is None:  # back to the incumbent: nothing evaluated
            reward = -RETURN_PENALTY
        else:
            self._evaluate(nxt)
            score = log_regret(self.task, self.task.true_value(self._incumbent()))
            reward = self.score - score - penalty
            self.score = score
        # The budget is spent, or every configuration was evaluated.
        terminated = len(self.hist.values) >= min(self.budget, self.hist.grid_size)
        truncated = not terminated and self.steps >= 3 * self.budget
        info = {"regret": self.score} if terminated or truncated else {}
        return self._obs(), float(reward), terminated, truncated, info
