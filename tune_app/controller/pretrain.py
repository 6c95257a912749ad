"""Pretrain the controller's Q-network with RLlib DQN (new API stack) and export it.

``python -m tune_app controller train`` calls :func:`train_local` (RLlib's DQN
pieces in this process) or :func:`train` (RLlib's ``Algorithm`` on a Ray
cluster): double DQN with a dueling head, a target network, an epsilon schedule
and prioritized replay, on :class:`~tune_app.controller.env.TuningEnv` episodes
(fresh synthetic tasks generated on the fly). Both drive one loop
(:func:`_loop`): each iteration's mean episode return and TD loss go to MLflow
(through :class:`tune_app.tracking.store.Tracker`) and the network is exported.
The result is a **tensors-only** checkpoint (``q_network.pt``: a flat
``name -> tensor`` dict) plus ``manifest.json`` (architecture, training command,
episodes, seed, task distribution), which :mod:`tune_app.controller.policy`
loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import math
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from tune_app.controller import mdp
from tune_app.controller.policy import MANIFEST_FILE, WEIGHTS_FILE
from tune_app.controller.settings import TrainSettings

TASK_DISTRIBUTION = (
    "tune_app.controller.surfaces.generate(seed): 1-8 parameters (weights 1,3,3,3,3,2,2,2), "
    "3-16 boxes each (grid <= 50k), rotated anisotropic bowl with power 1/2/3, 20% nearly "
    "irrelevant parameters, 25% optima on a range edge, 0-3 Gaussian wells, 50% ripples, "
    "30% plateaus (2-7 levels), 30% cliffs (diverging region), noise sd 0/0.01/0.03/0.08 "
    "of the median-to-optimum spread, learning curves over 1/3/5/9 epochs, 1/3 of tasks "
    "report a random early epoch 30% of the time; budgets 10-60 evaluations; starts "
    "random/bad(corner)/default(centre)"
)


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


def _manifest_head(settings: TrainSettings) -> dict[str, Any]:
    """The entries every manifest starts with: format and network shape."""
    return {
        "format": "tune_app.controller/1",
        "obs_dim": mdp.OBS_DIM,
        "n_actions": mdp.N_ACTIONS,
        "hidden": list(settings.hidden),
    }


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


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
        **_manifest_head(settings),
        "max_params": mdp.MAX_PARAMS,
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
    _write_json(path, manifest)
    return weights, path


def update_manifest(folder: Path, entries: dict[str, Any]) -> None:
    """Add or replace top-level ``entries`` in ``folder/manifest.json`` (``folder``
    may also name the manifest file itself)."""
    path = folder if folder.is_file() else folder / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    manifest.update(entries)
    _write_json(path, manifest)


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
        **_manifest_head(settings),
        "stage": "DQfD warm start (before RLlib DQN)",
        "demonstrations": info,
    }
    _write_json(folder / MANIFEST_FILE, manifest)
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


def _count(result: dict[str, Any], *keys: str) -> int:
    value = _metric(result, *keys)
    return int(value) if math.isfinite(value) else 0


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


def _selection_score(source: Any, settings: TrainSettings) -> float:
    """Mean final log regret of the greedy policy of ``source`` (anything
    :func:`q_network_tensors` accepts) on generated tasks drawn apart from both
    training and the held-out report (seed ``EVAL_SEED + 1``)."""
    from tune_app.controller import evaluate
    from tune_app.controller.policy import from_tensors

    policy = from_tensors(q_network_tensors(source), {}, "source")
    return evaluate.mean_log_regret(
        evaluate.greedy(policy), settings.select_episodes, seed=evaluate.EVAL_SEED + 1
    )


# -- the training loop and its two drivers ------------------------------------------


class _Driver:
    """One way to run DQN iterations: :class:`_InProcess` or :class:`_OnCluster`.

    ``source`` is what :func:`export` reads the network from; a resumed driver
    sets ``done_iterations`` and ``prior_wall_s``.
    """

    source: Any
    done_iterations = 0
    prior_wall_s = 0.0

    def iterate(self) -> tuple[int, int, dict[str, float]]:
        """Run one iteration; return the lifetime episodes and env steps and the
        iteration's smoothed metrics (``episode_return_mean``, ``td_loss``, ...)."""
        raise NotImplementedError

    def save(self, summary: dict[str, Any]) -> None:
        """Checkpoint after an iteration (for a later resume), if the driver can."""

    def stop(self) -> None:
        """Release what the driver holds."""


class _InProcess(_Driver):
    """RLlib's components in this process, no Ray cluster: the pieces RLlib's
    ``DQN.training_step`` drives (a ``SingleAgentEnvRunner`` with the epsilon-greedy
    DQN module, a ``PrioritizedEpisodeReplayBuffer`` and the DQN ``TorchLearner``:
    double Q, dueling, n-step, target network), driven by a plain loop: sample a
    fragment, store it, updates, priorities, weight sync."""

    def __init__(self, settings: TrainSettings) -> None:
        from collections import deque

        from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner
        from ray.rllib.utils.replay_buffers.prioritized_episode_buffer import (
            PrioritizedEpisodeReplayBuffer,
        )

        torch.manual_seed(settings.seed)
        config = dqn_config(settings)
        self.settings = settings
        self.runner = SingleAgentEnvRunner(config=config)
        self.learner = self.source = config.build_learner(env=self.runner.env)
        self.learner.build()
        if settings.init_from is not None:  # dqn_config then keeps epsilon at its final value
            _load_into(self.learner, Path(settings.init_from))
        _sync(self.runner, self.learner, 0)
        self.buffer = PrioritizedEpisodeReplayBuffer(capacity=settings.replay_capacity, alpha=0.6)
        self.steps = self.episodes = 0
        self.partial: dict[str, float] = {}
        self.returns: deque[float] = deque(maxlen=100)
        self.losses: deque[float] = deque(maxlen=100)

    def iterate(self) -> tuple[int, int, dict[str, float]]:
        import numpy as np

        s = self.settings
        target = self.steps + s.steps_per_iteration
        while self.steps < target:
            chunks = self.runner.sample(num_timesteps=s.rollout_fragment_length)
            self.buffer.add(chunks)
            for ep in chunks:
                self.steps += len(ep)
                self.partial[ep.id_] = self.partial.get(ep.id_, 0.0) + float(ep.get_return())
                if ep.is_done:
                    self.returns.append(self.partial.pop(ep.id_))
                    self.episodes += 1
            n_updates = s.updates_per_fragment if self.steps >= s.learning_starts else 0
            for _ in range(n_updates):
                self.losses.append(_update(self.learner, self.buffer, s, self.steps))
            _sync(self.runner, self.learner, self.steps)
        return (
            self.episodes,
            self.steps,
            {
                "episode_return_mean": (float(np.mean(self.returns)) if self.returns else math.nan),
                "td_loss": float(np.mean(self.losses)) if self.losses else math.nan,
            },
        )


class _OnCluster(_Driver):
    """RLlib's DQN ``Algorithm`` on the current Ray cluster. With ``state_dir`` the
    algorithm state (module, optimiser, counters; not the replay buffer) is saved
    after every iteration and restored here, so a run killed with its Ray cluster
    resumes where it stopped."""

    def __init__(
        self, settings: TrainSettings, state_dir: Path | None, log: Callable[[str], None]
    ) -> None:
        self.algo = self.source = dqn_config(settings).build_algo()
        if settings.init_from is not None:
            folder = Path(settings.init_from)
            self.algo.learner_group.foreach_learner(lambda learner: _load_into(learner, folder))
            self.algo.env_runner_group.sync_weights(
                from_worker_or_learner_group=self.algo.learner_group, inference_only=True
            )
        self.state_dir = state_dir
        if state_dir is not None and (state_dir / "progress.json").exists():
            self.algo.restore_from_path(str(state_dir / "algo"))
            saved = json.loads((state_dir / "progress.json").read_text())
            self.done_iterations = int(saved["iterations"])
            self.prior_wall_s = float(saved["wall_time_s"])
            log(f"resumed from {state_dir} after {self.done_iterations} iterations")

    def iterate(self) -> tuple[int, int, dict[str, float]]:
        result = self.algo.train()
        return (
            _count(result, "env_runners", "num_episodes_lifetime"),
            _count(result, "env_runners", "num_env_steps_sampled_lifetime"),
            {
                "episode_return_mean": _metric(result, "env_runners", "episode_return_mean"),
                "td_loss": _metric(result, "learners", "default_policy", "qf_loss"),
                "td_error_mean": _metric(result, "learners", "default_policy", "td_error_mean"),
            },
        )

    def save(self, summary: dict[str, Any]) -> None:
        if self.state_dir is not None:
            self.algo.save_to_path(str(self.state_dir / "algo"))
            (self.state_dir / "progress.json").write_text(json.dumps(summary))

    def stop(self) -> None:
        self.algo.stop()


class _Tracking:
    """The run's MLflow logging through :class:`~tune_app.tracking.store.Tracker`
    (a no-op without a tracking URI)."""

    def __init__(self, uri: str | None, experiment: str, settings: TrainSettings) -> None:
        self.tracker: Any = None
        self.run_id = ""
        if uri is not None:
            from tune_app.tracking.store import Tracker

            self.tracker = Tracker(uri, experiment)
            self.run_id = self.tracker.start_run(
                f"dqn-pretrain-seed{settings.seed}", {}, asdict(settings)
            )

    def metrics(self, values: dict[str, float], step: int) -> None:
        if self.tracker is not None:
            self.tracker.log_metrics(self.run_id, values, step)

    def close(self, out: Path | None, status: str) -> None:
        """Upload the export (not the resume state) and end the run with ``status``."""
        if self.tracker is None:
            return
        if out is not None and out.is_dir():
            for path in sorted(out.iterdir()):
                if path.name != "state":
                    self.tracker.safe(
                        self.tracker.log_artifact, self.run_id, path, folder="controller"
                    )
        self.tracker.end_run(self.run_id, status)


def _loop(
    driver: _Driver,
    settings: TrainSettings,
    out: Path | None,
    tracking_uri: str | None,
    experiment: str,
    log: Callable[[str], None],
) -> dict[str, Any]:
    """Iterate ``driver``: log each iteration (MLflow and ``log``), export it to
    ``out`` (with ``select_every``: the best-scoring one; ``out/latest``: the last),
    stop at ``iterations``, ``episodes`` or ``max_minutes``; return the summary."""
    status = "FAILED"
    track: _Tracking | None = None
    try:
        track = _Tracking(tracking_uri, experiment, settings)
        start = time.time() - driver.prior_wall_s
        summary: dict[str, Any] = {}
        best_score = math.inf
        for it in range(driver.done_iterations + 1, settings.iterations + 1):
            episodes, steps, values = driver.iterate()
            elapsed = time.time() - start
            summary = {
                "iterations": it,
                "episodes": episodes,
                "env_steps": steps,
                **values,
                "wall_time_s": round(elapsed, 1),
            }
            track.metrics({**values, "episodes": float(episodes)}, step=steps)
            log(
                f"iter {it:3d}  steps {steps:7d}  episodes {episodes:5d}  return "
                f"{values['episode_return_mean']:7.3f}  td_loss {values['td_loss']:.4f}  "
                f"{elapsed:6.0f}s"
            )
            if out is not None and not settings.select_every:
                export(driver.source, out, settings, {"training": summary})
            elif out is not None:
                export(driver.source, out / "latest", settings, {"training": summary})
                if it % settings.select_every == 0:
                    score = _selection_score(driver.source, settings)
                    track.metrics({"selection_log_regret": score}, step=steps)
                    log(f"  selection score {score:.3f} (best so far {best_score:.3f})")
                    if score < best_score:
                        best_score = score
                        summary["selected"] = {"iteration": it, "selection_log_regret": score}
                        export(driver.source, out, settings, {"training": summary})
            driver.save(summary)
            if settings.episodes is not None and episodes >= settings.episodes:
                break
            if settings.max_minutes is not None and elapsed > 60 * settings.max_minutes:
                break
        if settings.select_every and out is not None and (out / MANIFEST_FILE).is_file():
            # The selected export: say how long the run went on after it.
            run = {k: v for k, v in summary.items() if k != "selected"}
            update_manifest(out, {"training_run": run})
        status = "FINISHED"
        return summary
    finally:
        try:
            if track is not None:
                track.close(out, status)
        finally:
            driver.stop()


def train_local(
    settings: TrainSettings,
    out: Path | None = None,
    tracking_uri: str | None = None,
    experiment: str = "controller-pretraining",
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """DQN pretraining with RLlib's components in this process, no Ray cluster
    (:class:`_InProcess`); export to ``out`` if given. Use :func:`train` to run on a
    Ray cluster with env runners instead. Returns a summary: iterations, episodes,
    env steps, wall time, and the mean return and TD loss over the last 100."""
    return _loop(_InProcess(settings), settings, out, tracking_uri, experiment, log)


def train(
    settings: TrainSettings,
    out: Path | None = None,
    tracking_uri: str | None = None,
    experiment: str = "controller-pretraining",
    log: Callable[[str], None] = print,
    state_dir: Path | None = None,
) -> dict[str, Any]:
    """Run DQN pretraining on the current Ray cluster (:class:`_OnCluster`); export
    to ``out`` if given, resume from and checkpoint to ``state_dir`` if given.

    Returns a summary: iterations, episodes, env steps, wall time, and the last
    smoothed episode return, TD loss and TD error.
    """
    driver = _OnCluster(settings, state_dir, log)
    return _loop(driver, settings, out, tracking_uri, experiment, log)
