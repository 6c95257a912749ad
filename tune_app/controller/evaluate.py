"""Score a controller on generated tasks it was not trained on.

Pretraining episodes draw task seeds from the env's seeded stream
(``random.Random(seed * 1_000_003 + worker)``); this evaluation resets the env
with its own fixed seeds (``EVAL_SEED * 7919 + episode``), so the tasks come
from the same distribution but are drawn independently of training. The score
is the mean final log10 normalised regret of the incumbent (lower is better;
-2 means the best configuration found is 1% of the median-to-optimum spread
away from the optimum). The benchmarks of :mod:`tune_app.benchmarks` are the
real held-out test; this is the quick check that training helped.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np

from tune_app.controller import mdp
from tune_app.controller.env import TuningEnv
from tune_app.controller.expert import expert_action
from tune_app.controller.policy import QPolicy

EVAL_SEED = 123_456

Chooser = Callable[[TuningEnv, np.ndarray], int]


def greedy(policy: QPolicy) -> Chooser:
    """The searcher's choice: the valid action with the highest Q-value."""

    def choose(env: TuningEnv, obs: np.ndarray) -> int:
        valid = np.flatnonzero(mdp.valid_actions(env.walker, env.hist))
        if not len(valid):
            return mdp.JUMP
        return int(valid[np.argmax(policy.q_values(obs)[valid])])

    return choose


def scripted() -> Chooser:
    """The demonstrator of :mod:`tune_app.controller.expert`."""
    rng = random.Random(0)
    return lambda env, obs: expert_action(env.walker, env.hist, env.budget, rng)


def random_search() -> Chooser:
    """Random jumps only: random search without repeats."""
    return lambda env, obs: mdp.JUMP


def mean_log_regret(choose: Chooser, episodes: int = 300, seed: int = EVAL_SEED) -> float:
    """Mean final log10 normalised regret of ``choose`` over ``episodes`` tasks."""
    env = TuningEnv({"seed": seed})
    scores = []
    for ep in range(episodes):
        obs, _ = env.reset(seed=seed * 7919 + ep)
        done = False
        while not done:
            obs, _, term, trunc, _ = env.step(choose(env, obs))
            done = term or trunc
        scores.append(env.score)
    return float(np.mean(scores))


def compare(policy: QPolicy, episodes: int = 300) -> dict[str, float]:
    """Held-out scores of ``policy``, the scripted expert and random search."""
    return {
        "policy": mean_log_regret(greedy(policy), episodes),
        "expert": mean_log_regret(scripted(), episodes),
        "random": mean_log_regret(random_search(), episodes),
        "episodes": float(episodes),
    }
