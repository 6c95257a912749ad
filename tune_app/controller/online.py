"""Online fine-tuning of the ``dqn`` searcher's Q-network from its own search.

The pretrained network learnt on generated tasks whose optimum and median are
known: its reward is the decrease of the incumbent's log normalised regret
(:func:`tune_app.controller.env.log_regret`). A real search knows neither, so the
reward here uses the search's own estimates, recomputed at every update from the
values observed so far: the median of the observed values for the median, and
for the optimum the best observed value less :data:`OPTIMUM_MARGIN` of the
median-to-best spread. A return to the incumbent costs
:data:`~tune_app.controller.env.RETURN_PENALTY`, as in pretraining.

:class:`OnlineQ` keeps a trainable copy of the network and the search's
transitions (state, action, incumbent before and after, next state and its valid
actions). After each finished trial it takes ``updates`` plain SGD steps (no
optimizer state to checkpoint) on the double-DQN Huber loss over a mini-batch of
them, with the pretrained network frozen as the target and the discount the
network was trained with. Everything it holds is plain numbers and lists, so the
searcher's JSON checkpoint carries it.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from tune_app.controller import mdp
from tune_app.controller.env import RETURN_PENALTY
from tune_app.controller.policy import Layers, QPolicy, forward

OPTIMUM_MARGIN = 0.1  # the optimum estimate: best - margin * (median - best)
BATCH = 32
LEARNING_RATE = 1e-3  # SGD; at 1e-4 50 trials x 8 steps changed almost no greedy action
REGRET_CLIP = (1e-3, 10.0)  # as env.log_regret


def surrogate_regret(value: float, observed: list[float]) -> float:
    """``log10`` of ``value``'s normalised regret, the optimum and median estimated
    from the ``observed`` values (losses; lower is better)."""
    finite = [v for v in observed if math.isfinite(v)]
    if not finite or not math.isfinite(value):
        return math.log10(REGRET_CLIP[1])
    best, median = min(finite), float(np.median(finite))
    spread = max(median - best, 1e-12)
    optimum = best - OPTIMUM_MARGIN * spread
    ratio = (value - optimum) / ((median - optimum) or 1e-12)
    return math.log10(min(REGRET_CLIP[1], max(REGRET_CLIP[0], ratio)))


@dataclass
class Transition:
    """One decision of a walker: the incumbent's loss ``before`` it and ``after`` its
    trial (None until the trial finishes, and for a return to the incumbent)."""

    obs: list[float]
    action: int
    before: float
    returned: bool = False
    after: float | None = None
    next_obs: list[float] | None = None
    done: bool = False


@dataclass
class OnlineQ:
    """A trainable copy of ``policy``'s network, fine-tuned on the search's transitions."""

    policy: QPolicy
    updates: int
    seed: int = 0
    transitions: list[Transition] = field(default_factory=list)
    steps_taken: int = 0

    def __post_init__(self) -> None:
        self.gamma = float(self.policy.manifest.get("settings", {}).get("gamma", 0.99))
        self.params = [
            t.clone().requires_grad_(True)
            for layer in (self.policy.encoder, self.policy.af, self.policy.vf)
            for pair in layer
            for t in pair
        ]
        self.rng = random.Random(self.seed)

    # -- the network ----------------------------------------------------------------
    def _layers(self) -> tuple[Layers, Layers, Layers]:
        """The trainable copy, laid out as the policy's (encoder, af, vf) layers."""
        it = iter(self.params)
        shape = (self.policy.encoder, self.policy.af, self.policy.vf)
        encoder, af, vf = ([(next(it), next(it)) for _ in layer] for layer in shape)
        return encoder, af, vf

    def q_values(self, obs: np.ndarray) -> np.ndarray:
        """The fine-tuned Q-values of one state."""
        with torch.no_grad():
            x = torch.as_tensor(np.asarray(obs, dtype=np.float32))[None]
            return np.asarray(forward(*self._layers(), x)[0].numpy())

    # -- learning ---------------------------------------------------------------------
    def update(self, observed: list[float]) -> float | None:
        """``updates`` SGD steps on the finished transitions, rewards from the
        ``observed`` losses; the mean loss (None if there is nothing to learn from)."""
        ready = [
            i
            for i, t in enumerate(self.transitions)
            if (t.returned or t.after is not None) and (t.next_obs is not None or t.done)
        ]
        if not ready or self.updates <= 0:
            return None
        losses = []
        target = (self.policy.encoder, self.policy.af, self.policy.vf)  # frozen
        for _ in range(self.updates):
            batch = [self.transitions[self.rng.choice(ready)] for _ in range(BATCH)]
            obs = torch.tensor([t.obs for t in batch], dtype=torch.float32)
            actions = torch.tensor([t.action for t in batch])
            rewards = torch.tensor([self._reward(t, observed) for t in batch], dtype=torch.float32)
            dones = torch.tensor([t.done for t in batch], dtype=torch.float32)
            nxt = torch.tensor(
                [t.next_obs if t.next_obs is not None else t.obs for t in batch],
                dtype=torch.float32,
            )
            with torch.no_grad():
                online_next = forward(*self._layers(), nxt)
                valid = torch.as_tensor(np.stack([_valid_of(t) for t in batch]))
                online_next[~valid] = -math.inf
                best = online_next.argmax(dim=1)
                target_next = forward(*target, nxt).gather(1, best[:, None])[:, 0]
                goal = rewards + self.gamma * (1.0 - dones) * target_next
            q = forward(*self._layers(), obs).gather(1, actions[:, None])[:, 0]
            loss = torch.nn.functional.huber_loss(q, goal)
            grads = torch.autograd.grad(loss, self.params)
            with torch.no_grad():
                for p, g in zip(self.params, grads, strict=True):
                    p -= LEARNING_RATE * g
            losses.append(float(loss.detach()))
            self.steps_taken += 1
        return float(np.mean(losses))

    @staticmethod
    def _reward(t: Transition, observed: list[float]) -> float:
        if t.returned or t.after is None:
            return -RETURN_PENALTY
        return surrogate_regret(t.before, observed) - surrogate_regret(t.after, observed)

    # -- checkpoints ------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """Parameters, transitions and the sampler's state as plain values."""
        return {
            "params": [p.detach().tolist() for p in self.params],
            "transitions": [t.__dict__ for t in self.transitions],
            "steps_taken": self.steps_taken,
            "rng": _rng_to_json(self.rng),
        }

    def load_json(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`to_json` wrote."""
        self.params = [
            torch.tensor(p, dtype=torch.float32).requires_grad_(True) for p in state["params"]
        ]
        self.transitions = [Transition(**t) for t in state["transitions"]]
        self.steps_taken = int(state["steps_taken"])
        self.rng.setstate(_rng_from_json(state["rng"]))


def _valid_of(t: Transition) -> np.ndarray:
    """The next state's valid actions, read back from its features (the mask is part
    of the state vector), or every action for a final transition."""
    if t.next_obs is None:
        return np.ones(mdp.N_ACTIONS, dtype=bool)
    valid = mdp.valid_in(np.asarray(t.next_obs, dtype=np.float32))
    return valid if valid.any() else np.ones(mdp.N_ACTIONS, dtype=bool)


def _rng_to_json(rng: random.Random) -> list[Any]:
    version, state, gauss = rng.getstate()
    return [version, list(state), gauss]


def _rng_from_json(state: list[Any]) -> tuple[Any, ...]:
    return (state[0], tuple(state[1]), state[2])
