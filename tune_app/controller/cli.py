"""``tune-app controller ...``: pretrain the DQN controller on a Ray cluster."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from tune_app.controller.settings import TrainSettings, cli_fields
from tune_app.errors import ConfigError


def _option(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_parser(sub: Any) -> None:
    """Register ``controller train`` under the main CLI's subcommands."""
    ctl = sub.add_parser("controller", help="pretrain the DQN controller (RLlib)")
    ctl_sub = ctl.add_subparsers(dest="controller_command", required=True)
    train = ctl_sub.add_parser("train", help="pretrain on synthetic tuning tasks; export weights")
    for f, kind in cli_fields():  # defaults and help: TrainSettings
        train.add_argument(_option(f.name), type=kind, default=f.default, help=f.metadata["help"])
    train.add_argument(
        "--eval-episodes",
        type=int,
        default=300,
        help="held-out generated tasks scored at the end (0: skip)",
    )
    train.add_argument("--out", default="controller_weights", help="output directory")
    train.add_argument("--address", default=None, help="Ray address (default: local Ray)")
    train.add_argument("--tracking-uri", default=None, help="MLflow URI (default sqlite)")
    train.add_argument(
        "--experiment", default="controller-pretraining", help="MLflow experiment (%(default)s)"
    )
    train.add_argument(
        "--resume", action="store_true", help="continue from OUT/state after an interruption"
    )


def _settings(args: argparse.Namespace) -> TrainSettings:
    """The TrainSettings of the command line; raises ConfigError on a value too low."""
    values = {f.name: getattr(args, f.name) for f, _ in cli_fields()}
    lows = {_option(f.name): (values[f.name], f.metadata["low"]) for f, _ in cli_fields()}
    lows["--eval-episodes"] = (args.eval_episodes, 0)
    for flag, (value, low) in lows.items():
        if low is not None and value is not None and value < low:
            raise ConfigError(f"{flag} must be >= {low}, got {value}")
    settings = TrainSettings(**values)
    if settings.select_every and (settings.num_env_runners or args.address):
        raise ConfigError("--select-every works in-process only: drop --num-env-runners/--address")
    if settings.demo_episodes and settings.init_from:
        raise ConfigError("--demo-episodes starts a new network; drop --init-from (or it)")
    return settings


def run(args: argparse.Namespace) -> int:
    """Run ``controller train``."""
    from tune_app.controller.pretrain import prepare_warm_start, train, train_local
    from tune_app.tracking.store import resolve_tracking_uri

    out = Path(args.out)
    settings = prepare_warm_start(_settings(args), out)
    uri = resolve_tracking_uri(args.tracking_uri)
    address = args.address or os.environ.get("RAY_ADDRESS")
    if settings.num_env_runners == 0 and not address:
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
                num_cpus=max(2, settings.num_env_runners + 1),
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
