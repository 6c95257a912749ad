"""Q-gradient descent's ``lr`` MDP as the training loop plays it: blocks of ``K``
mini-batch steps of a real torch optimizer (a departure, for pretraining).

:class:`~tune_app.controller.qgd.QGDEnv` is the seed's MDP: one full-batch plain
gradient step per decision. In a trial the inner controller
(:class:`~tune_app.controller.inner.InnerController`) decides after every ``K``
optimizer steps of whatever optimizer the task uses (Adam for ``digits_mlp``),
on mini-batch losses. A policy pretrained on the seed's MDP did not carry over
(docs/dqn-controller.md: doubling Adam's rate after a good block overshoots).
:class:`BlockEnv` trains on what the service will run:

* each episode generates an objective net (:func:`~tune_app.controller.qgd.generate`,
  the same nets, always mini-batch here), draws an optimizer from
  :data:`OPTIMIZERS` (Adam, SGD, SGD with momentum 0.9) and its reset rate
  log-uniformly from its range (the service spaces' ranges for Adam and SGD);
* the state, the actions and the anchor (keep or restore the block, the weights
  *and* the optimizer's state) are the inner controller's own code: the
  environment drives an :class:`InnerController` whose decision it takes from the
  agent, so pretraining and the service cannot drift apart;
* reward (the log form, ``reward="log"`` of :class:`QGDEnv`): after a decision,
  ``log(f(anchor before) / f(anchor after))`` with ``f`` the cross-entropy on all
  the net's training rows (``objective="train"``, the seed's ``lr`` MDP) or on
  its validation rows (``objective="val"``, a departure: a search ranks trials
  by a validation metric, and a policy rewarded on the training loss overfits
  noisy data), 0 when the block is undone, so an episode's return is
  ``log(f(start) / f(final anchor))``. The inner controller's own values are
  mini-batch means of the training loss; the reward measures the goal itself.

``info["evaluations"]`` counts optimizer steps (an undone block's too).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from tune_app.controller.inner import InnerController, InnerSpec
from tune_app.controller.qgd import (
    N_FEATURES,
    REWARD_CAP,
    NetProblem,
    action_names,
    finite,
    generate,
)
from tune_app.tasks.loop import _optimizer

#: Each optimizer's reset rates (log-uniform): Adam's as ``digits_mlp``'s space,
#: SGD's as ``cifar10_mlp``'s.
OPTIMIZERS: dict[str, tuple[float, float]] = {
    "adam": (1e-4, 0.3),
    "sgd": (1e-3, 1.0),
    "momentum": (1e-4, 0.3),
}
#: Each one as the training loop's optimizer config (``tune_app.tasks.loop._optimizer``).
CONFIGS: dict[str, dict[str, Any]] = {
    "adam": {"optimizer": "adam"},
    "sgd": {"optimizer": "sgd"},
    "momentum": {"optimizer": "sgd", "momentum": 0.9},
}
BATCHES = (32, 64, 128)
#: What the reward measures at the anchor: the cross-entropy on all the training
#: rows (the seed's ``lr`` MDP) or on the validation rows (what a search ranks by).
OBJECTIVES = ("train", "val")


class _Agent(InnerController):
    """An inner controller whose decisions wait for the environment's action."""

    pending: dict[str, np.ndarray] | None = None

    def _decide(self) -> None:
        self.pending = self._measure()


class BlockEnv(gym.Env):
    """One episode: ``steps`` decisions, each after ``every`` optimizer steps."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        control: str = "lr",
        steps: int = 100,
        memory: int = 5,
        every: int = 10,
        variant: str = "seed",
        optimizers: tuple[str, ...] = tuple(OPTIMIZERS),
        objective: str = "train",
    ) -> None:
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        if control != "lr":
            raise ValueError(f"the block environment controls lr only, got {control!r}")
        if every < 2:
            raise ValueError(f"every must be at least 2, got {every}")
        unknown = sorted(set(optimizers) - set(OPTIMIZERS))
        if unknown or not optimizers:
            raise ValueError(f"optimizers must be among {', '.join(OPTIMIZERS)}, got {optimizers}")
        self.actions = action_names(control, variant)
        self.control, self.steps, self.memory, self.every = control, steps, memory, every
        self.variant, self.optimizers, self.objective = variant, tuple(optimizers), objective
        self.inner_spec = InnerSpec((control,), every, variants={control: variant}, history=memory)
        self.action_space = gym.spaces.Discrete(len(self.actions))
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (N_FEATURES,), np.float32)
        self.rng = np.random.default_rng()

    # -- the net being trained -----------------------------------------------------------
    def _at_anchor(self) -> None:
        """The anchor's cross-entropy on the training and the validation rows and its
        validation error (the model holds the anchor's weights right after a decision)."""
        p = self.problem
        with torch.no_grad():
            self.anchor_loss = finite(
                float(nn.functional.cross_entropy(p.model(p.x_train), p.y_train))
            )
            out = p.model(p.x_val)
            self.anchor_val_loss = finite(float(nn.functional.cross_entropy(out, p.y_val)))
            self.anchor_error = float((out.argmax(1) != p.y_val).float().mean())

    def _goal(self) -> float:
        return self.anchor_loss if self.objective == "train" else self.anchor_val_loss

    def _block(self) -> None:
        """Optimizer steps until the controller has a decision pending."""
        p, agent = self.problem, self.agent
        agent.pending = None
        while agent.pending is None:
            idx = torch.randint(len(p.y_train), (self.batch,), generator=self.gen)
            self.optimizer.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(p.model(p.x_train[idx]), p.y_train[idx])
            loss.backward()
            self.optimizer.step()
            self.evaluations += 1
            agent.after_step(loss)

    def _observe(self) -> np.ndarray:
        assert self.agent.pending is not None
        return self.agent.pending[self.control]

    # -- gymnasium ------------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """A new net, optimizer and reset rate; the first block."""
        super().reset(seed=seed)
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.problem: NetProblem = generate(self.rng)
        self.batch = int(self.rng.choice(BATCHES))
        self.optimizer_name = str(self.rng.choice(self.optimizers))
        low, high = OPTIMIZERS[self.optimizer_name]
        self.alpha_0 = float(math.exp(self.rng.uniform(math.log(low), math.log(high))))
        self.gen = torch.Generator().manual_seed(self.problem.seed)
        model = self.problem.model
        config = {**CONFIGS[self.optimizer_name], "lr": self.alpha_0}
        self.optimizer = _optimizer(model.parameters(), config)
        self.agent = _Agent(self.inner_spec, model, self.optimizer)
        self.t, self.evaluations = 0, 0
        self._at_anchor()
        self._block()
        return self._observe(), self._info()

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Keep or undo the block as the action says, set the rate, run the next block."""
        before = self._goal()
        self.agent._commit({self.control: self.actions[int(action)]})
        self._at_anchor()  # the weights are the anchor's now
        reward = math.log(max(before, 1e-12) / max(self._goal(), 1e-12))
        self.t += 1
        truncated = self.t >= self.steps
        self._block()
        return (
            self._observe(),
            max(-REWARD_CAP, min(reward, REWARD_CAP)),
            False,
            truncated,
            self._info(),
        )

    # -- what the benchmarks read (as QGDEnv's) ---------------------------------------------
    @property
    def alpha(self) -> float:
        """The optimizer's current rate."""
        return float(self.optimizer.param_groups[0]["lr"])

    def measures(self) -> dict[str, float]:
        """The anchor's full training loss and validation error (as of the last
        decision; qgd_eval reads these), no test rows."""
        return {"loss": self.anchor_loss, "val_error": self.anchor_error, "test_accuracy": math.nan}

    @property
    def anchor_value(self) -> float:
        """The inner controller's estimate of the anchor's loss (mini-batch means)."""
        return float(self.agent.anchor_value)

    @property
    def candidate_value(self) -> float:
        """The block's mean mini-batch loss after its first step."""
        return float(self.agent.candidate_value)

    def _info(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "optimizer": self.optimizer_name,
            "value": self.candidate_value,
            "anchor_value": self._goal(),
            "evaluations": self.evaluations,
        }


class RLlibBlockEnv(BlockEnv):
    """:class:`BlockEnv` built from RLlib's ``env_config`` dict."""

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(**dict(config or {}))
