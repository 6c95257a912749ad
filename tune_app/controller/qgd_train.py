"""Pretrain Q-gradient descent's controllers with RLlib DQN (new API stack) on the
Ray cluster, log each iteration to MLflow and export a tensors-only policy.

One policy per control (``lr``: the learning rate, ``l2``: the L2 coefficient),
trained on :class:`~tune_app.controller.qgd.QGDEnv` episodes over objective nets
generated on the fly. The network is RLlib's default DQN module (ReLU MLP,
dueling heads, double Q, a target network, prioritized episode replay, a linear
epsilon schedule), exported as ``q_network.pt`` (a flat ``name -> tensor`` dict)
with ``manifest.json``; :func:`load` reads it back with
``torch.load(weights_only=True)`` through :func:`tune_app.controller.policy.from_tensors`.

Replay (``QGDSettings.replay``): RLlib's prioritized episode replay by default
(the search controller's too), a departure from the seed, which replays
mini-batches from the A most recent and the B best episodes; ``"recent_best"``
is the seed's scheme (:mod:`tune_app.controller.qgd_replay`), measured against
it in docs/dqn-controller.md. ``QGDSettings.reward`` picks
the environment's reward (``"seed"`` or ``"log"``), ``n_step`` RLlib's n-step
targets (RLlib then samples ``n_step`` env steps per update: fewer updates, a
faster run). ``QGDSettings.env="block"`` trains the ``lr`` policy on
:class:`~tune_app.controller.qgd_block.BlockEnv` instead: the training loop's
blocks of ``every`` Adam or SGD steps, rewarded on ``objective``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from tune_app.controller.policy import MANIFEST_FILE, WEIGHTS_FILE
from tune_app.controller.qgd import (
    CONTROLS,
    N_FEATURES,
    NET_INPUTS,
    REWARDS,
    ROWS,
    QGDEnv,
    action_names,
    check_ranges,
)
from tune_app.controller.qgd_policy import FORMAT, load, variant_of  # noqa: F401  (re-exported)
from tune_app.errors import ConfigError

REPLAYS = ("prioritized", "recent_best")  # QGDSettings.replay
#: QGDSettings.env: "step", the seed's MDP (QGDEnv: one full-batch gradient step per
#: decision); "block", the training loop's (qgd_block.BlockEnv: K optimizer steps).
ENVS = ("step", "block")


class RLlibQGDEnv(QGDEnv):
    """:class:`QGDEnv` built from RLlib's ``env_config`` dict."""

    def __init__(self, config: Mapping[str, Any] | None = None) -> None:
        super().__init__(**dict(config or {}))


@dataclass(frozen=True)
class QGDSettings:
    """What a pretraining run uses (all of it goes into the manifest)."""

    control: str = "lr"
    steps: int = 100  # controlled steps per episode (the seed's T)
    memory: int = 5  # the seed's M
    alpha_c: float = 1.0
    lambda_c: float = 1e-3
    iterations: int = 20
    steps_per_iteration: int = 1000
    seed: int = 0
    hidden: tuple[int, ...] = (32, 16)
    lr: float = 5e-4
    gamma: float = 0.9
    batch_size: int = 64
    learning_starts: int = 500
    epsilon_steps: int = 10_000
    final_epsilon: float = 0.05
    replay_capacity: int = 50_000
    num_env_runners: int = 0
    reward: str = "seed"  # "seed": c / (v - v_lb); "log": log(v_anchor_before / v_anchor_after)
    n_step: int = 1  # n-step TD targets
    # "prioritized": RLlib's prioritized episode replay; "recent_best": the seed's,
    # mini-batches from the replay_recent newest and replay_best best episodes
    replay: str = "prioritized"
    replay_recent: int = 10
    replay_best: int = 10
    variant: str = "seed"  # the actions: lr "adaptive"/"grow", l2 "steer" (QGDEnv's departures)
    alpha_range: float = 1.0  # lr: each episode's reset rate within alpha_c / r .. alpha_c * r
    lambda_range: float = 1.0  # l2: the same for the coefficient's reset value lambda_c
    rows: str = "default"  # the generated nets' training rows (qgd.ROWS)
    inputs: str = NET_INPUTS[0]  # the generated nets' feature scaling (qgd.NET_INPUTS)
    env: str = "step"  # ENVS; "block" plays the fields below and steps/memory/variant
    every: int = 10  # block: optimizer steps per decision (the inner controller's K)
    optimizers: str = "adam,sgd,momentum"  # block: drawn per episode (qgd_block.OPTIMIZERS)
    objective: str = "train"  # block: the reward's loss, "train" or "val" (qgd_block.OBJECTIVES)

    def __post_init__(self) -> None:
        if self.control not in CONTROLS:
            raise ConfigError(f"control must be one of {CONTROLS}, got {self.control!r}")
        if self.reward not in REWARDS:
            raise ConfigError(f"reward must be one of {REWARDS}, got {self.reward!r}")
        if self.replay not in REPLAYS:
            raise ConfigError(f"replay must be one of {REPLAYS}, got {self.replay!r}")
        if self.env not in ENVS:
            raise ConfigError(f"env must be one of {ENVS}, got {self.env!r}")
        if self.env == "block" and self.reward != "log":
            raise ConfigError("env 'block' pays the log reward only: set reward=log")
        if self.env != "block" and self.objective != "train":
            raise ConfigError("objective applies to env 'block' only: set env=block")
        if self.rows not in ROWS:
            raise ConfigError(f"rows must be one of {tuple(ROWS)}, got {self.rows!r}")
        if self.env == "block" and self.rows != "default":
            raise ConfigError("rows applies to env 'step' only: drop rows or set env=step")
        if self.inputs not in NET_INPUTS:
            raise ConfigError(f"inputs must be one of {NET_INPUTS}, got {self.inputs!r}")
        if self.env == "block" and self.inputs != NET_INPUTS[0]:
            raise ConfigError("inputs applies to env 'step' only: drop inputs or set env=step")
        try:
            action_names(self.control, self.variant)
            check_ranges(self.alpha_range, self.lambda_range)
            if self.env == "block":
                self.env_class()(self.env_config())
        except ValueError as exc:
            raise ConfigError(str(exc)) from None

    def env_class(self) -> type[Any]:
        """The RLlib environment class of :attr:`env`."""
        if self.env == "block":
            from tune_app.controller.qgd_block import RLlibBlockEnv

            return RLlibBlockEnv
        return RLlibQGDEnv

    def env_config(self) -> dict[str, Any]:
        """The environment's arguments."""
        if self.env == "block":
            return {
                "control": self.control,
                "steps": self.steps,
                "memory": self.memory,
                "every": self.every,
                "variant": self.variant,
                "optimizers": tuple(self.optimizers.split(",")),
                "objective": self.objective,
            }
        return {
            "control": self.control,
            "steps": self.steps,
            "memory": self.memory,
            "alpha_c": self.alpha_c,
            "lambda_c": self.lambda_c,
            "reward": self.reward,
            "variant": self.variant,
            "alpha_range": self.alpha_range,
            "lambda_range": self.lambda_range,
            "rows": self.rows,
            "inputs": self.inputs,
        }


def _replay(s: QGDSettings) -> dict[str, Any]:
    """RLlib's replay buffer config for ``s.replay``."""
    if s.replay == "recent_best":
        return {  # a dotted path: RLlib looks for "EpisodeReplayBuffer" in the name
            "type": "tune_app.controller.qgd_replay.RecentBestEpisodeReplayBuffer",
            "capacity": s.replay_capacity,
            "recent": s.replay_recent,
            "best": s.replay_best,
        }
    return {
        "type": "PrioritizedEpisodeReplayBuffer",
        "capacity": s.replay_capacity,
        "alpha": 0.6,
        "beta": 0.4,
    }


def dqn_config(s: QGDSettings) -> Any:
    """The RLlib ``DQNConfig`` for ``s`` (new API stack)."""
    from ray.rllib.algorithms.dqn import DQNConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    return (
        DQNConfig()
        .api_stack(enable_rl_module_and_learner=True, enable_env_runner_and_connector_v2=True)
        .environment(s.env_class(), env_config=s.env_config())
        .env_runners(num_env_runners=s.num_env_runners, num_envs_per_env_runner=1)
        .learners(num_learners=0)
        .training(
            double_q=True,
            dueling=True,
            lr=s.lr,
            gamma=s.gamma,
            n_step=s.n_step,
            train_batch_size_per_learner=s.batch_size,
            num_steps_sampled_before_learning_starts=s.learning_starts,
            epsilon=[(0, 1.0), (s.epsilon_steps, s.final_epsilon)],
            replay_buffer_config=_replay(s),
        )
        .rl_module(
            model_config=DefaultModelConfig(
                fcnet_hiddens=list(s.hidden), fcnet_activation="relu", head_fcnet_hiddens=[]
            )
        )
        .reporting(min_sample_timesteps_per_iteration=s.steps_per_iteration)
        .debugging(seed=s.seed)
    )


def export(source: Any, out: Path, s: QGDSettings, stats: Mapping[str, Any]) -> Path:
    """Write ``q_network.pt`` (tensors only) and ``manifest.json`` to ``out``."""
    from tune_app.controller.pretrain import q_network_tensors

    out.mkdir(parents=True, exist_ok=True)
    torch.save(q_network_tensors(source), out / WEIGHTS_FILE)
    manifest = {
        "format": FORMAT,
        "control": s.control,
        "actions": list(action_names(s.control, s.variant)),
        "obs_dim": N_FEATURES,
        "n_actions": len(action_names(s.control, s.variant)),
        "hidden": list(s.hidden),
        "settings": asdict(s),
        "environment": (
            "tune_app.controller.qgd_block.BlockEnv"
            if s.env == "block"
            else "tune_app.controller.qgd.QGDEnv"
        )
        + " over generate(rng) objective nets",
        "rllib": "ray.rllib.algorithms.dqn (new API stack), double DQN, dueling, "
        f"{s.replay} episode replay, target network, linear epsilon schedule",
        **stats,
    }
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return out


def train(
    s: QGDSettings,
    out: Path | None = None,
    tracking_uri: str | None = None,
    experiment: str = "qgd-pretraining",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run ``s.iterations`` DQN iterations on the current Ray cluster; log each to
    MLflow (with a tracking URI) and ``log``; export to ``out`` after each one.
    Returns the last iteration's summary."""
    from tune_app.controller.pretrain import _count, _metric

    tracker: Any = None
    run_id = ""
    if tracking_uri is not None:
        from tune_app.tracking.store import Tracker

        tracker = Tracker(tracking_uri, experiment)
        run_id = tracker.start_run(f"qgd-{s.control}-seed{s.seed}", {}, asdict(s))
    algo = dqn_config(s).build_algo()
    status, summary, start = "FAILED", {}, time.time()
    try:
        for it in range(1, s.iterations + 1):
            result = algo.train()
            steps = _count(result, "env_runners", "num_env_steps_sampled_lifetime")
            values = {
                "episode_return_mean": _metric(result, "env_runners", "episode_return_mean"),
                "td_loss": _metric(result, "learners", "default_policy", "qf_loss"),
            }
            summary = {
                "iterations": it,
                "episodes": _count(result, "env_runners", "num_episodes_lifetime"),
                "env_steps": steps,
                **values,
                "wall_time_s": round(time.time() - start, 1),
            }
            if tracker is not None:
                finite = {k: v for k, v in values.items() if math.isfinite(v)}
                tracker.log_metrics(run_id, finite, steps)
            log(
                f"qgd {s.control} iter {it:3d}  steps {steps:7d}  return "
                f"{values['episode_return_mean']:8.3f}  td_loss {values['td_loss']:.4f}"
            )
            if out is not None:
                export(algo, out, s, {"training": summary})
        status = "FINISHED"
        return summary
    finally:
        algo.stop()
        if tracker is not None:
            if out is not None and out.is_dir():
                for path in sorted(out.iterdir()):
                    tracker.safe(tracker.log_artifact, run_id, path, folder="qgd")
            tracker.end_run(run_id, status)
