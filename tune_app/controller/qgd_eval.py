"""Q-gradient descent against its baselines on held-out generated objective nets.

Every controller plays the same :class:`~tune_app.controller.qgd.QGDEnv` episodes
(same seed: the same net, data and start), for the same number of steps:

* ``plain``: always ``accept``: plain gradient descent at ``alpha_c``;
* ``armijo``: backtracking line search (Hansen's baseline): ``half`` while the
  candidate fails Armijo's condition ``f(x) <= f(x_bar) - c alpha |d|^2``
  (``c = 1e-4``), else ``accept``;
* ``descent``: ``half`` while the candidate's value is above the anchor's, else
  ``accept`` (a monotone heuristic: Armijo's condition with ``c = 0``);
* ``lower`` (``l2``, with the ``steer`` actions): halve lambda after every step;
* ``qgd``: the greedy action of a pretrained policy.

Each episode reports the final anchor's value (training loss for ``lr``,
validation error for ``l2``; for a mini-batch net the loss of one batch), its
training loss on all the training data, and the objective evaluations spent, so controllers
can be compared at equal steps and at equal evaluations. Seeds from
``HELD_OUT`` on are never used by pretraining (it draws nets from its own seed);
``compare(first_seed=...)`` picks a range of them, so the nets a choice was made
on can be kept apart from the nets it is reported on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from tune_app.controller.qgd import ACCEPTING, NET_INPUTS, QGDEnv
from tune_app.controller.qgd_train import QGDSettings, variant_of

HELD_OUT = 1_000_000
ARMIJO_C = 1e-4
Controller = Callable[[QGDEnv, np.ndarray], int]
Traces = dict[str, list[list[dict[str, float]]]]  # controller -> episodes -> steps


def plain(env: QGDEnv, obs: np.ndarray) -> int:
    """Always accept: gradient descent at the reset rate."""
    return env.actions.index("accept")


def armijo(env: QGDEnv, obs: np.ndarray) -> int:
    """Backtracking line search on the training loss (``lr`` only), from the values
    the environment already evaluated (the candidate's, the anchor's)."""
    if env.control != "lr":
        raise ValueError("armijo line search controls the learning rate only")
    decrease = ARMIJO_C * env.alpha * float(env.direction @ env.direction)
    ok = env.candidate_value <= env.anchor_value - decrease
    return env.actions.index("accept" if ok else "half")


def descent(env: QGDEnv, obs: np.ndarray) -> int:
    """Accept unless the candidate's value is above the anchor's (``lr`` only)."""
    if env.control != "lr":
        raise ValueError("the descent heuristic controls the learning rate only")
    ok = env.candidate_value <= env.anchor_value
    return env.actions.index("accept" if ok else "half")


def lower(env: QGDEnv, obs: np.ndarray) -> int:
    """Halve the coefficient at every step (``l2``'s ``steer`` actions, which all
    accept): lambda falls towards 0. A diagnostic: it beats a fixed ``lambda_c``
    only where the net does not overfit within the episode."""
    return env.actions.index("lower")


def greedy(policy: Any) -> Controller:
    """The greedy action of a policy with ``q_values(obs)``."""

    def act(env: QGDEnv, obs: np.ndarray) -> int:
        return int(np.argmax(policy.q_values(obs)))

    return act


def _measures(env: QGDEnv) -> dict[str, float]:
    """The anchor's training loss on all the training data (a problem without
    ``full_loss`` reports the environment's value), validation error and test
    accuracy (NaN where the problem has none); an environment with its own
    ``measures()`` (:class:`~tune_app.controller.qgd_block.BlockEnv`) gives them."""
    own = getattr(env, "measures", None)
    if own is not None:
        return dict(own())
    full_loss = getattr(env.problem, "full_loss", None)
    val_error = getattr(env.problem, "val_error", None)
    test_accuracy = getattr(env.problem, "test_accuracy", None)
    return {
        "loss": float(full_loss(env.anchor) if full_loss is not None else env.anchor_value),
        "val_error": float(val_error(env.anchor)) if val_error is not None else math.nan,
        "test_accuracy": (
            float(test_accuracy(env.anchor)) if test_accuracy is not None else math.nan
        ),
    }


def episode(
    env: QGDEnv,
    controller: Controller,
    seed: int,
    trace: list[dict[str, float]] | None = None,
) -> dict[str, float]:
    """One episode from ``env.reset(seed=seed)``: the final anchor's value, the
    evaluations spent, ``loss``, the final anchor's training loss on all the
    training data (for a mini-batch net ``value`` is one batch's, a noisy measure;
    a problem without ``full_loss`` reports ``value``), and its ``val_error`` and
    ``test_accuracy`` where the problem has them (NaN otherwise), and the steps
    the controller accepted (``accept`` or an accepting departure action).
    ``trace``, if given, gets the anchor's measures and the hyperparameter after
    every step (a rejected step too: equal evaluations)."""
    obs, info = env.reset(seed=seed)
    truncated, accepts = False, 0
    while not truncated:
        action = controller(env, obs)
        accepts += env.actions[action] in ACCEPTING
        obs, _, _, truncated, info = env.step(action)
        if trace is not None:
            hyper = env.alpha if env.control == "lr" else env.lam
            trace.append({**_measures(env), "hyper": float(hyper)})
    return {
        "value": float(info["anchor_value"]),
        **_measures(env),
        "evaluations": float(info["evaluations"]),
        "accepts": float(accepts),
    }


def compare(
    controllers: Mapping[str, Controller],
    episodes: int,
    env_kwargs: dict[str, Any],
    first_seed: int = HELD_OUT,
    held_out: bool = True,
    traces: Traces | None = None,
) -> dict[str, list[dict[str, float]]]:
    """Every controller on the same ``episodes`` nets, seeds from ``first_seed``
    (at least ``HELD_OUT`` unless ``held_out`` is False: for problems pretraining
    never draws, such as :mod:`tune_app.controller.qgd_seed`'s); ``traces``, if
    given, gets every episode's :func:`episode` trace under the controller's name."""
    if held_out and first_seed < HELD_OUT:
        raise ValueError(f"held-out seeds start at {HELD_OUT}, got {first_seed}")
    out: dict[str, list[dict[str, float]]] = {name: [] for name in controllers}
    for i in range(episodes):
        for name, controller in controllers.items():
            trace: list[dict[str, float]] | None = None if traces is None else []
            out[name].append(episode(make_env(env_kwargs), controller, first_seed + i, trace))
            if traces is not None and trace is not None:
                traces.setdefault(name, []).append(trace)
    return out


def policy_env(policy: Any) -> dict[str, Any]:
    """The seed's environment with the settings ``policy`` was trained in, as
    :class:`QGDEnv` arguments (control, steps, memory, ``alpha_c``, ``lambda_c``,
    the nets' ``rows`` and ``inputs``),
    or :class:`~tune_app.controller.qgd_block.BlockEnv`'s for a block policy (with
    ``env="block"``: :func:`make_env`); the baselines play it, the policy itself
    plays :func:`play`'s."""
    s = policy.manifest["settings"]
    if s.get("env", "step") == "block":  # the baselines play the seed's actions
        config = QGDSettings(**s).env_config()
        config.pop("variant")
        return {"env": "block", **config}
    keys = ("steps", "memory", "alpha_c", "lambda_c")
    own = {"control": policy.manifest["control"], **{k: s[k] for k in keys}}
    return {**own, "rows": s.get("rows", "default"), "inputs": s.get("inputs", NET_INPUTS[0])}


def make_env(env_kwargs: Mapping[str, Any]) -> Any:
    """The environment ``env_kwargs`` describe: :class:`QGDEnv`, or with
    ``env="block"`` the training loop's :class:`~tune_app.controller.qgd_block.BlockEnv`."""
    kwargs = dict(env_kwargs)
    if kwargs.pop("env", "step") == "block":
        from tune_app.controller.qgd_block import BlockEnv

        return BlockEnv(**kwargs)
    return QGDEnv(**kwargs)


def play(
    policy: Any,
    episodes: int,
    env_kwargs: dict[str, Any],
    first_seed: int = HELD_OUT,
    held_out: bool = True,
    traces: Traces | None = None,
) -> list[dict[str, float]]:
    """The policy's greedy episodes (traced as ``qgd``) in the environment it was
    trained in (its ``variant`` of the actions; at ``env_kwargs``' reset rate)."""
    own = {**env_kwargs, "variant": variant_of(policy)}
    return compare({"qgd": greedy(policy)}, episodes, own, first_seed, held_out, traces)["qgd"]


def best_fixed(
    episodes: int,
    env_kwargs: dict[str, Any],
    key: str,
    values: list[float],
    measure: str,
    first_seed: int = HELD_OUT,
    held_out: bool = True,
) -> list[dict[str, float]]:
    """An oracle: per episode, the best accept-only run over ``values`` of
    ``env_kwargs[key]`` (``alpha_c`` or ``lambda_c``), by ``measure`` (lower is better)."""
    runs = [
        compare({"plain": plain}, episodes, {**env_kwargs, key: v}, first_seed, held_out)["plain"]
        for v in values
    ]
    return [min((r[i] for r in runs), key=lambda e: e[measure]) for i in range(episodes)]
