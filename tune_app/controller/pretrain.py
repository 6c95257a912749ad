"""Pretrain the controller's Q-network with RLlib DQN (new API stack) and export it.

``python -m tune_app controller train`` calls :func:`train`: double DQN with a
dueling head, a target network, an epsilon schedule and prioritized replay, on
:class:`~tune_app.controller.env.TuningEnv` episodes (fresh synthetic tasks
generated on the fly). Each iteration's mean episode return, TD loss and
epsilon-greedy regret go to MLflow. The result is a **tensors-only** checkpoint
(``q_network.pt``: a flat ``name -> tensor`` dict) plus ``manifest.json``
(architecture, training command, episodes, seed, task distribution), which
:mod:`tune_app.controller.policy` loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import math
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from tune_app.controller import mdp

WEIGHTS_FILE = "q_network.pt"
MANIFEST_FILE = "manifest.json"
TASK_DISTRIBUTION = (
    "tune_app.controller.surfaces.generate(seed): 1-8 parameters (weights 1,3,3,3,3,2,2,2), "
    "3-16 boxes each (grid <= 50k), rotated anisotropic bowl with power 1/2/3, 20% nearly "
    "irrelevant parameters, 25% optima on a range edge, 0-3 Gaussian wells, 50% ripples, "
    "30% plateaus (2-7 levels), 30% cliffs (diverging region), noise sd 0/0.01/0.03/0.08 "
    "of the median-to-optimum spread, learning curves over 1/3/5/9 epochs, 1/3 of tasks "
    "report a random early epoch 30% of the time; budgets 10-60 evaluations; starts "
    "random/bad(corner)/centre"
)


@dataclass
class TrainSettings:
    """What :func:`train` runs; every field ends up in the manifest."""

    iterations: int = 60
    episodes: int | None = None  # stop after this many episodes (whichever first)
    num_env_runners: int = 0
    seed: int = 0
    steps_per_iteration: int = 1000
    hidden: tuple[int, ...] = (128, 128)
    lr: float = 5e-4
    gamma: float = 0.95
    batch_size: int = 128
    rollout_fragment_length: int = 32  # env steps sampled between updates
    updates_per_fragment: int = 1
    n_step: int = 3
    target_update: int = 4000
    epsilon_steps: int = 25_000
    final_epsilon: float = 0.05
    replay_capacity: int = 50_000
    learning_starts: int = 1000
    training_intensity: float | None = None
    max_minutes: float | None = None  # stop after this much wall time
    init_from: str | None = None  # continue from an exported checkpoint (epsilon at its end)
    budget_min: int = 10
    budget_max: int = 60
    demo_episodes: int = 0  # DQfD warm start from this many expert episodes first
    demo_updates: int = 20_000
    demo_noise: float = 0.1  # fraction of demonstration steps with a random valid action
    demo_margin: float = 0.1  # DQfD large-margin loss: expert action ahead by this much
    select_every: int = 0  # keep the best of the checkpoints scored every N iterations
    select_episodes: int = 100  # generated tasks per score (a set apart from the report's)
    extra: dict[str, Any] = field(default_factory=dict)  # more manifest entries


def dqn_config(s: TrainSettings) -> Any:
    """The RLlib ``DQNConfig`` for ``s`` (new API stack)."""
    from ray.rllib.algorithms.dqn import DQNConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    from tune_app.controller.env import TuningEnv
    from tune_app.controller.module import MaskedDQNModule

    training: dict[str, Any] = {
        "double_q": True,
        "dueling": True,
        "lr": s.lr,
        "gamma": s.gamma,
        "train_batch_size_per_learner": s.batch_size,
        "n_step": s.n_step,
        "target_network_update_freq": s.target_update,
        # Continuing from a trained network: explore at the final epsilon only.
        "epsilon": (
            [(0, 1.0), (s.epsilon_steps, s.final_epsilon)]
            if s.init_from is None
            else [(0, s.final_epsilon), (1, s.final_epsilon)]
        ),
        "num_steps_sampled_before_learning_starts": s.learning_starts,
        "replay_buffer_config": {
            "type": "PrioritizedEpisodeReplayBuffer",
            "capacity": s.replay_capacity,
            "alpha": 0.6,
            "beta": 0.4,
        },
    }
    if s.training_intensity is not None:
        training["training_intensity"] = s.training_intensity
    elif s.updates_per_fragment != 1:  # replayed / sampled steps
        training["training_intensity"] = (
            s.updates_per_fragment * s.batch_size / s.rollout_fragment_length
        )
    return (
        DQNConfig()
        .api_stack(enable_rl_module_and_learner=True, enable_env_runner_and_connector_v2=True)
        .environment(
            TuningEnv,
            env_config={"seed": s.seed, "budget_min": s.budget_min, "budget_max": s.budget_max},
        )
        .env_runners(
            num_env_runners=s.num_env_runners,
            num_envs_per_env_runner=1,
            rollout_fragment_length=s.rollout_fragment_length,
        )
        .learners(num_learners=0)
        .training(**training)
        .rl_module(
            rl_module_spec=RLModuleSpec(
                module_class=MaskedDQNModule,
                model_config=DefaultModelConfig(
                    fcnet_hiddens=list(s.hidden),
                    fcnet_activation="relu",
                    head_fcnet_hiddens=[],
                ),
            )
        )
        .reporting(
            min_sample_timesteps_per_iteration=s.steps_per_iteration,
            metrics_num_episodes_for_smoothing=50,
        )
        .debugging(seed=s.seed)
    )


def q_network_tensors(source: Any) -> dict[str, torch.Tensor]:
    """The online Q-network's tensors (encoder + heads; no target nets, no optimiser).

    ``source`` is an RLlib ``Algorithm``, a ``Learner`` or the RLModule itself.
    """
    if hasattr(source, "get_module"):
        module = source.get_module()
    elif hasattr(source, "module") and not isinstance(source, torch.nn.Module):
        module = source.module["default_policy"]
    else:
        module = source
    return {
        k: v.detach().cpu().clone()
        for k, v in module.state_dict().items()
        if not k.startswith("_target") and isinstance(v, torch.Tensor)
    }


def export(
    algo: Any, out: Path, settings: TrainSettings, stats: dict[str, Any]
) -> tuple[Path, Path]:
    """Write ``q_network.pt`` (tensors only) and ``manifest.json`` to ``out``.

    ``algo`` is anything :func:`q_network_tensors` accepts.
    """
    out.mkdir(parents=True, exist_ok=True)
    weights = out / WEIGHTS_FILE
    torch.save(q_network_tensors(algo), weights)
    manifest = {
        "format": "tune_app.controller/1",
        "obs_dim": mdp.OBS_DIM,
        "n_actions": mdp.N_ACTIONS,
        "max_params": mdp.MAX_PARAMS,
        "hidden": list(settings.hidden),
        "activation": "relu",
        "dueling": True,
        "command": "python -m tune_app " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
        "settings": {k: v for k, v in asdict(settings).items() if k != "extra"},
        "task_distribution": TASK_DISTRIBUTION,
        "rllib": "ray.rllib.algorithms.dqn (new API stack), double DQN, dueling, "
        "prioritized episode replay, target network, linear epsilon schedule, "
        "invalid actions masked (tune_app.controller.module.MaskedDQNModule)",
        **settings.extra,
        **stats,
    }
    path = out / MANIFEST_FILE
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return weights, path


def update_manifest(folder: Path, entries: dict[str, Any]) -> None:
    """Add or replace top-level ``entries`` in ``folder/manifest.json``."""
    path = folder / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    manifest.update(entries)
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def prepare_warm_start(
    settings: TrainSettings, out: Path, log: Callable[[str], None] = print
) -> TrainSettings:
    """DQfD warm start (:mod:`tune_app.controller.demos`) when ``demo_episodes`` > 0.

    Writes the warm-start network to ``out/warm_start`` and returns settings that
    continue RLlib DQN from it, with the demonstration statistics for the manifest.
    """
    if settings.demo_episodes <= 0:
        return settings
    from tune_app.controller.demos import demonstrations, warm_start

    start = time.time()
    log(f"playing {settings.demo_episodes} expert demonstration episodes")
    demos = demonstrations(
        settings.demo_episodes,
        seed=settings.seed,
        noise=settings.demo_noise,
        n_step=settings.n_step,
        gamma=settings.gamma,
        budget_min=settings.budget_min,
        budget_max=settings.budget_max,
    )
    folder = out / "warm_start"
    fit = warm_start(
        demos,
        folder,
        hidden=settings.hidden,
        updates=settings.demo_updates,
        margin=settings.demo_margin,
        seed=settings.seed,
        log=log,
    )
    info = {
        "episodes": settings.demo_episodes,
        "transitions": len(demos),
        "expert_final_log_regret": float(demos.episode_regret.mean()),
        "noise": settings.demo_noise,
        **fit,
        "wall_time_s": round(time.time() - start, 1),
    }
    log(f"warm start done: {info}")
    manifest = {
        "format": "tune_app.controller/1",
        "stage": "DQfD warm start (before RLlib DQN)",
        "obs_dim": mdp.OBS_DIM,
        "n_actions": mdp.N_ACTIONS,
        "hidden": list(settings.hidden),
        "demonstrations": info,
    }
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return replace(
        settings, init_from=str(folder), extra={**settings.extra, "demonstrations": info}
    )


def _metric(result: dict[str, Any], *keys: str) -> float:
    cur: Any = result
    for k in keys:
        if not isinstance(cur, dict) or k not in cur:
            return math.nan
        cur = cur[k]
    try:
        return float(cur)
    except (TypeError, ValueError):
        return math.nan


def _load_into(learner: Any, folder: Path) -> None:
    """Load an exported ``q_network.pt`` into the learner's online and target nets."""
    tensors = torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    module = learner.module["default_policy"]
    missing = set(tensors) - set(module.state_dict())
    if missing:
        raise ValueError(f"{folder}: tensors {sorted(missing)[:3]} do not fit this network")
    module.load_state_dict(tensors, strict=False)
    for online, target in module.get_target_network_pairs():
        target.load_state_dict(online.state_dict())


def _sync(runner: Any, learner: Any, steps: int) -> None:
    """Copy the learner's weights to the env runner and tell it the global step
    count, which drives its epsilon schedule (as RLlib's weight sync does)."""
    from ray.rllib.core import COMPONENT_RL_MODULE
    from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME

    state = learner.get_state(components=COMPONENT_RL_MODULE, inference_only=True)
    state[NUM_ENV_STEPS_SAMPLED_LIFETIME] = steps
    runner.set_state(state)


def _update(learner: Any, buffer: Any, settings: TrainSettings, steps: int) -> float:
    """One DQN update from a prioritized replay sample; returns the TD loss."""
    import numpy as np
    from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME

    batch = buffer.sample(
        num_items=settings.batch_size,
        n_step=settings.n_step,
        gamma=settings.gamma,
        beta=0.4,
        sample_episodes=True,
    )
    res = learner.update(episodes=batch, timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: steps})
    stats = res["default_policy"]
    raw = stats.pop("td_error").peek()  # a list of per-batch tensors
    parts = raw if isinstance(raw, list) else [raw]
    td = np.concatenate(
        [np.ravel(p.detach().cpu().numpy() if hasattr(p, "detach") else p) for p in parts]
    )
    buffer.update_priorities(td, "default_policy")
    return float(stats["qf_loss"].peek())


def _should_stop(settings: TrainSettings, episodes: int, start: float) -> bool:
    if settings.episodes is not None and episodes >= settings.episodes:
        return True
    return settings.max_minutes is not None and time.time() - start > 60 * settings.max_minutes


class _Log:
    """MLflow logging of the learning curve (a no-op without a tracking URI)."""

    def __init__(self, uri: str | None, experiment: str, settings: TrainSettings) -> None:
        self.on = uri is not None
        if uri is not None:
            import mlflow

            mlflow.set_tracking_uri(uri)
            mlflow.set_experiment(experiment)
            mlflow.start_run(run_name=f"dqn-pretrain-seed{settings.seed}")
            mlflow.log_params({k: str(v) for k, v in asdict(settings).items()})

    def metrics(self, values: dict[str, float], step: int) -> None:
        if self.on:
            import mlflow

            finite = {k: v for k, v in values.items() if math.isfinite(v)}
            mlflow.log_metrics(finite, step=step)

    def close(self, artifacts: Path | None) -> None:
        if self.on:
            import mlflow

            if artifacts is not None and artifacts.exists():
                mlflow.log_artifacts(str(artifacts), "controller")
            mlflow.end_run()


def train_local(
    settings: TrainSettings,
    out: Path | None = None,
    tracking_uri: str | None = None,
    experiment: str = "controller-pretraining",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """DQN pretraining with RLlib's components in this process, no Ray cluster.

    The same pieces RLlib's ``DQN.training_step`` drives (a ``SingleAgentEnvRunner``
    with the epsilon-greedy DQN module, a ``PrioritizedEpisodeReplayBuffer`` and
    the DQN ``TorchLearner``: double Q, dueling, n-step, target network), driven
    by a plain loop: sample a fragment, store it, one update, priorities, weight
    sync. Use :func:`train` to run on a Ray cluster with env runners instead.
    """
    from collections import deque

    import numpy as np
    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner
    from ray.rllib.utils.replay_buffers.prioritized_episode_buffer import (
        PrioritizedEpisodeReplayBuffer,
    )

    torch.manual_seed(settings.seed)
    config = dqn_config(settings)
    runner = SingleAgentEnvRunner(config=config)
    learner = config.build_learner(env=runner.env)
    learner.build()
    if settings.init_from is not None:  # dqn_config then keeps epsilon at its final value
        _load_into(learner, Path(settings.init_from))
    _sync(runner, learner, 0)
    buffer = PrioritizedEpisodeReplayBuffer(capacity=settings.replay_capacity, alpha=0.6)
    mlf = _Log(tracking_uri, experiment, settings)
    start = time.time()
    steps = episodes = 0
    partial: dict[str, float] = {}
    returns: deque[float] = deque(maxlen=100)
    losses: deque[float] = deque(maxlen=100)
    summary: dict[str, Any] = {}
    best_score = math.inf
    try:
        for it in range(1, settings.iterations + 1):
            target = steps + settings.steps_per_iteration
            while steps < target:
                chunks = runner.sample(num_timesteps=settings.rollout_fragment_length)
                buffer.add(chunks)
                for ep in chunks:
                    steps += len(ep)
                    partial[ep.id_] = partial.get(ep.id_, 0.0) + float(ep.get_return())
                    if ep.is_done:
                        returns.append(partial.pop(ep.id_))
                        episodes += 1
                n_updates = (
                    settings.updates_per_fragment if steps >= settings.learning_starts else 0
                )
                for _ in range(n_updates):
                    losses.append(_update(learner, buffer, settings, steps))
                _sync(runner, learner, steps)
            ret = float(np.mean(returns)) if returns else math.nan
            loss = float(np.mean(losses)) if losses else math.nan
            summary = {
                "iterations": it,
                "episodes": episodes,
                "env_steps": steps,
                "episode_return_mean": ret,
                "td_loss": loss,
                "wall_time_s": round(time.time() - start, 1),
            }
            mlf.metrics({"episode_return_mean": ret, "td_loss": loss}, step=steps)
            log(
                f"iter {it:3d}  steps {steps:7d}  episodes {episodes:5d}  "
                f"return {ret:7.3f}  td_loss {loss:.4f}  {time.time() - start:6.0f}s"
            )
            if out is not None and not settings.select_every:
                export(learner, out, settings, {"training": summary})
            elif out is not None:
                export(learner, out / "latest", settings, {"training": summary})
                if it % settings.select_every == 0:
                    score = _selection_score(learner, settings)
                    mlf.metrics({"selection_log_regret": score}, step=steps)
                    log(f"  selection score {score:.3f} (best so far {best_score:.3f})")
                    if score < best_score:
                        best_score = score
                        summary["selected"] = {"iteration": it, "selection_log_regret": score}
                        export(learner, out, settings, {"training": summary})
            if _should_stop(settings, episodes, start):
                break
        if settings.select_every and out is not None and (out / MANIFEST_FILE).is_file():
            # The selected export: say how long the run went on after it.
            run = {k: v for k, v in summary.items() if k != "selected"}
            update_manifest(out, {"training_run": run})
        return summary
    finally:
        mlf.close(out)


def _selection_score(learner: Any, settings: TrainSettings) -> float:
    """Mean final log regret of the learner's greedy policy on generated tasks drawn
    apart from both training and the held-out report (seed ``EVAL_SEED + 1``)."""
    from tune_app.controller import evaluate
    from tune_app.controller.policy import from_tensors

    policy = from_tensors(q_network_tensors(learner), {}, "learner")
    return evaluate.mean_log_regret(
        evaluate.greedy(policy), settings.select_episodes, seed=evaluate.EVAL_SEED + 1
    )


def train(
    settings: TrainSettings,
    out: Path | None = None,
    tracking_uri: str | None = None,
    experiment: str = "controller-pretraining",
    log: Callable[[str], None] = print,
    state_dir: Path | None = None,
) -> dict[str, Any]:
    """Run DQN pretraining on the current Ray cluster; export to ``out`` if given.

    With ``state_dir``, the RLlib algorithm state (module, optimiser, counters;
    not the replay buffer) is saved there after every iteration and restored on
    the next call, so a run killed with its Ray cluster resumes where it stopped.
    Returns a summary: iterations, episodes, env steps, wall time, and the last
    smoothed episode return and TD loss.
    """
    algo = dqn_config(settings).build_algo()
    if settings.init_from is not None:
        folder = Path(settings.init_from)
        algo.learner_group.foreach_learner(lambda learner: _load_into(learner, folder))
        algo.env_runner_group.sync_weights(
            from_worker_or_learner_group=algo.learner_group, inference_only=True
        )
    done_iters, prior_wall = 0, 0.0
    progress = state_dir / "progress.json" if state_dir is not None else None
    if state_dir is not None and progress is not None and progress.exists():
        algo.restore_from_path(str(state_dir / "algo"))
        saved = json.loads(progress.read_text())
        done_iters, prior_wall = int(saved["iterations"]), float(saved["wall_time_s"])
        log(f"resumed from {state_dir} after {done_iters} iterations")
    run = None
    if tracking_uri is not None:
        import mlflow

        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_experiment(experiment)
        run = mlflow.start_run(run_name=f"dqn-pretrain-seed{settings.seed}")
        mlflow.log_params({k: str(v) for k, v in asdict(settings).items()})
    start = time.time() - prior_wall
    summary: dict[str, Any] = {}
    try:
        episodes = steps = 0
        for it in range(done_iters + 1, settings.iterations + 1):
            result = algo.train()
            episodes = int(_metric(result, "env_runners", "num_episodes_lifetime") or 0)
            steps = int(_metric(result, "env_runners", "num_env_steps_sampled_lifetime") or 0)
            ret = _metric(result, "env_runners", "episode_return_mean")
            loss = _metric(result, "learners", "default_policy", "qf_loss")
            td = _metric(result, "learners", "default_policy", "td_error_mean")
            summary = {
                "iterations": it,
                "episodes": episodes,
                "env_steps": steps,
                "episode_return_mean": ret,
                "td_loss": loss,
                "td_error_mean": td,
                "wall_time_s": round(time.time() - start, 1),
            }
            if run is not None:
                import mlflow

                mlflow.log_metrics(
                    {
                        k: v
                        for k, v in {
                            "episode_return_mean": ret,
                            "td_loss": loss,
                            "td_error_mean": td,
                            "episodes": float(episodes),
                        }.items()
                        if math.isfinite(v)
                    },
                    step=steps,
                )
            log(
                f"iter {it:3d}  steps {steps:7d}  episodes {episodes:5d}  "
                f"return {ret:7.3f}  td_loss {loss:.4f}  {time.time() - start:6.0f}s"
            )
            if out is not None:
                export(algo, out, settings, {"training": summary})
            if state_dir is not None and progress is not None:
                algo.save_to_path(str(state_dir / "algo"))
                progress.write_text(json.dumps(summary))
            if _should_stop(settings, episodes, start):
                break
        return summary
    finally:
        if run is not None:
            import mlflow

            mlflow.end_run()
        algo.stop()
