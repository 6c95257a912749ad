"""``tune-app controller ...``: pretrain the DQN controller on a Ray cluster."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from tune_app.errors import ConfigError


def add_parser(sub: Any) -> None:
    """Register ``controller train`` under the main CLI's subcommands."""
    ctl = sub.add_parser("controller", help="pretrain the DQN controller (RLlib)")
    ctl_sub = ctl.add_subparsers(dest="controller_command", required=True)
    train = ctl_sub.add_parser("train", help="pretrain on synthetic tuning tasks; export weights")
    train.add_argument("--iterations", type=int, default=60, help="RLlib train() iterations")
    train.add_argument("--episodes", type=int, default=None, help="stop after N episodes")
    train.add_argument("--steps-per-iteration", type=int, default=1000)
    train.add_argument("--num-env-runners", type=int, default=0, help="RLlib env runners")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--max-minutes", type=float, default=None, help="wall-time limit")
    train.add_argument("--init-from", default=None, help="continue from this checkpoint dir")
    train.add_argument("--gamma", type=float, default=0.95, help="discount")
    train.add_argument("--lr", type=float, default=5e-4, help="Adam learning rate")
    train.add_argument(
        "--updates-per-fragment", type=int, default=1, help="updates per 32 sampled steps"
    )
    train.add_argument(
        "--demo-episodes",
        type=int,
        default=0,
        help="DQfD: first fit the network to this many scripted-expert episodes",
    )
    train.add_argument("--demo-updates", type=int, default=20_000, help="DQfD warm-start updates")
    train.add_argument(
        "--demo-margin",
        type=float,
        default=0.1,
        help="DQfD large margin (expert action first); 0.8 left Q-values RLlib then undid",
    )
    train.add_argument(
        "--eval-episodes",
        type=int,
        default=300,
        help="held-out generated tasks scored at the end (0: skip)",
    )
    train.add_argument(
        "--select-every",
        type=int,
        default=0,
        help="in-process only: score the greedy policy on generated tasks every N "
        "iterations and export the best (OUT/latest holds the last)",
    )
    train.add_argument("--out", default="controller_weights", help="output directory")
    train.add_argument("--address", default=None, help="Ray address (default: local Ray)")
    train.add_argument("--tracking-uri", default=None, help="MLflow URI (default sqlite)")
    train.add_argument("--experiment", default="controller-pretraining")
    train.add_argument(
        "--resume", action="store_true", help="continue from OUT/state after an interruption"
    )


def run(args: argparse.Namespace) -> int:
    """Run ``controller train``."""
    from tune_app.controller.pretrain import (
        TrainSettings,
        prepare_warm_start,
        train,
        train_local,
    )

    for flag, value, low in (
        ("--iterations", args.iterations, 1),
        ("--num-env-runners", args.num_env_runners, 0),
        ("--steps-per-iteration", args.steps_per_iteration, 1),
        ("--demo-episodes", args.demo_episodes, 0),
        ("--demo-updates", args.demo_updates, 1),
        ("--eval-episodes", args.eval_episodes, 0),
        ("--select-every", args.select_every, 0),
    ):
        if value < low:
            raise ConfigError(f"{flag} must be >= {low}, got {value}")
    if args.episodes is not None and args.episodes < 1:
        raise ConfigError(f"--episodes must be >= 1, got {args.episodes}")
    out = Path(args.out)
    settings = TrainSettings(
        iterations=args.iterations,
        episodes=args.episodes,
        num_env_runners=args.num_env_runners,
        seed=args.seed,
        steps_per_iteration=args.steps_per_iteration,
        max_minutes=args.max_minutes,
        gamma=args.gamma,
        lr=args.lr,
        updates_per_fragment=args.updates_per_fragment,
        init_from=args.init_from,
        demo_episodes=args.demo_episodes,
        demo_updates=args.demo_updates,
        demo_margin=args.demo_margin,
        select_every=args.select_every,
    )
    if settings.select_every and (args.num_env_runners or args.address):
        raise ConfigError("--select-every works in-process only: drop --num-env-runners/--address")
    if settings.demo_episodes and settings.init_from:
        raise ConfigError("--demo-episodes starts a new network; drop --init-from (or it)")
    settings = prepare_warm_start(settings, out)
    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    address = args.address or os.environ.get("RAY_ADDRESS")
    if args.num_env_runners == 0 and not address:
        # RLlib's DQN pieces in this process: no Ray daemons to start (or lose).
        summary = train_local(settings, out=out, tracking_uri=uri, experiment=args.experiment)
        return _done(summary, out, args.eval_episodes)
    import ray

    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:  # a fresh local Ray, even if another one runs on this machine
            ray.init(
                address="local",
                num_cpus=max(2, args.num_env_runners + 1),
                include_dashboard=False,
                log_to_driver=False,
            )
    summary = train(
        settings,
        out=out,
        tracking_uri=uri,
        experiment=args.experiment,
        state_dir=out / "state" if args.resume else None,
    )
    return _done(summary, out, args.eval_episodes)


def _done(summary: dict[str, Any], out: Path, eval_episodes: int) -> int:
    if eval_episodes > 0:
        held_out(out, eval_episodes)
    print(
        f"trained {summary['iterations']} iterations, {summary['episodes']} episodes, "
        f"{summary['env_steps']} env steps in {summary['wall_time_s']} s; "
        f"weights and manifest in {out}/ (use --opt checkpoint={out})"
    )
    return 0


def held_out(out: Path, episodes: int) -> dict[str, float]:
    """Score the exported policy on held-out generated tasks; record it in the manifest."""
    from tune_app.controller import evaluate
    from tune_app.controller.policy import MANIFEST_FILE, QPolicy
    from tune_app.controller.pretrain import update_manifest

    scores = evaluate.compare(QPolicy.load(out), episodes)
    warm = out / "warm_start"
    if (warm / MANIFEST_FILE).is_file():
        scores["warm_start"] = evaluate.mean_log_regret(
            evaluate.greedy(QPolicy.load(warm)), episodes
        )
    print(
        f"held-out generated tasks ({episodes}), mean final log10 normalised regret "
        f"(lower is better): policy {scores['policy']:.3f}, scripted expert "
        f"{scores['expert']:.3f}, random search {scores['random']:.3f}"
        + (f", DQfD warm start {scores['warm_start']:.3f}" if "warm_start" in scores else "")
    )
    update_manifest(out, {"held_out": scores})
    return scores
