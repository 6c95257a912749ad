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
    train.add_argument("--out", default="controller_weights", help="output directory")
    train.add_argument("--address", default=None, help="Ray address (default: local Ray)")
    train.add_argument("--tracking-uri", default=None, help="MLflow URI (default sqlite)")
    train.add_argument("--experiment", default="controller-pretraining")
    train.add_argument(
        "--resume", action="store_true", help="continue from OUT/state after an interruption"
    )


def run(args: argparse.Namespace) -> int:
    """Run ``controller train``."""
    from tune_app.controller.pretrain import TrainSettings, train, train_local

    for flag, value, low in (
        ("--iterations", args.iterations, 1),
        ("--num-env-runners", args.num_env_runners, 0),
        ("--steps-per-iteration", args.steps_per_iteration, 1),
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
    )
    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"
    address = args.address or os.environ.get("RAY_ADDRESS")
    if args.num_env_runners == 0 and not address:
        # RLlib's DQN pieces in this process: no Ray daemons to start (or lose).
        summary = train_local(settings, out=out, tracking_uri=uri, experiment=args.experiment)
        return _done(summary, out)
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
    return _done(summary, out)


def _done(summary: dict[str, Any], out: Path) -> int:
    print(
        f"trained {summary['iterations']} iterations, {summary['episodes']} episodes, "
        f"{summary['env_steps']} env steps in {summary['wall_time_s']} s; "
        f"weights and manifest in {out}/ (use --opt checkpoint={out})"
    )
    return 0
