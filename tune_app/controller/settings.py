"""What ``tune-app controller train`` runs, declared once.

:class:`TrainSettings` is the Python API of :mod:`tune_app.controller.pretrain`,
what the manifest records, and the source of the CLI's ``--flag`` defaults and
help (:mod:`tune_app.controller.cli` builds its options from :func:`cli_fields`).
Kept apart from ``pretrain`` so that building the CLI does not import torch.
"""

from __future__ import annotations

from dataclasses import Field, dataclass, field, fields
from types import NoneType
from typing import Any, get_args, get_type_hints


def _flag(default: Any, help: str, low: float | None = None) -> Any:
    """A setting the CLI exposes as ``--name-with-dashes`` (``low``: its minimum)."""
    return field(default=default, metadata={"help": help, "low": low})


@dataclass
class TrainSettings:
    """What :func:`~tune_app.controller.pretrain.train` runs; every field ends up in
    the manifest, and those declared with ``_flag`` are ``controller train`` options."""

    iterations: int = _flag(60, "RLlib train() iterations", low=1)
    episodes: int | None = _flag(None, "stop after N episodes", low=1)  # whichever first
    num_env_runners: int = _flag(0, "RLlib env runners", low=0)
    seed: int = _flag(0, "seed of the task stream, RLlib and torch")
    steps_per_iteration: int = _flag(1000, "env steps sampled per iteration", low=1)
    hidden: tuple[int, ...] = (128, 128)
    lr: float = _flag(5e-4, "Adam learning rate")
    gamma: float = _flag(0.95, "discount")
    batch_size: int = 128
    rollout_fragment_length: int = 32  # env steps sampled between updates
    updates_per_fragment: int = _flag(1, "updates per 32 sampled steps")
    n_step: int = 3
    target_update: int = 4000
    epsilon_steps: int = 25_000
    final_epsilon: float = 0.05
    replay_capacity: int = 50_000
    learning_starts: int = 1000
    training_intensity: float | None = None
    max_minutes: float | None = _flag(None, "wall-time limit")
    # Continue from an exported checkpoint (epsilon at its end).
    init_from: str | None = _flag(None, "continue from this checkpoint dir")
    budget_min: int = 10
    budget_max: int = 60
    demo_episodes: int = _flag(
        0, "DQfD: first fit the network to this many scripted-expert episodes", low=0
    )
    demo_updates: int = _flag(20_000, "DQfD warm-start updates", low=1)
    demo_noise: float = 0.1  # fraction of demonstration steps with a random valid action
    demo_margin: float = _flag(
        0.1, "DQfD large margin (expert action first); 0.8 left Q-values RLlib then undid"
    )
    # Keep the best of the checkpoints scored every N iterations.
    select_every: int = _flag(
        0,
        "in-process only: score the greedy policy on generated tasks every N "
        "iterations and export the best (OUT/latest holds the last)",
        low=0,
    )
    select_episodes: int = 100  # generated tasks per score (a set apart from the report's)
    extra: dict[str, Any] = field(default_factory=dict)  # more manifest entries


def cli_fields() -> list[tuple[Field[Any], type]]:
    """The settings the CLI exposes, in declaration order, each with the type its
    ``--flag`` parses (``int | None`` parses as ``int``; omitted, it stays None)."""
    hints = get_type_hints(TrainSettings)
    return [
        (f, next(t for t in get_args(hints[f.name]) or (hints[f.name],) if t is not NoneType))
        for f in fields(TrainSettings)
        if "help" in f.metadata
    ]
