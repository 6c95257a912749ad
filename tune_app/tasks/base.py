"""The objective contract: what every strategy tunes.

An :class:`Objective` has a name, the metrics it reports each epoch, and
optional checks that run on the driver before anything starts. It comes in two
kinds, and the training loop (:mod:`tune_app.tasks.loop`) tells them apart by
type:

* a :class:`Task` trains a model. It turns a trial's configuration (searched
  hyperparameters merged with the space's ``fixed`` values) into train/validation
  datasets and a model. The shared training loop (:mod:`tune_app.tasks.loop`) does
  the rest: optimiser, epochs, distributed sharding, metrics, checkpoints. Users
  tune their own models by subclassing :class:`ClassificationTask` (or
  :class:`Task`) and passing the object, or a ``"module:attr"`` reference, as
  ``task=``.
* a :class:`LookupObjective` computes or looks up the metric a trial would
  report after each epoch (the known-optimum benchmarks of
  :mod:`tune_app.benchmarks`): nothing to train, no data, no workers.

:func:`check_reported` is part of the contract: every declared metric is reported
each epoch, and is a number.
"""

from __future__ import annotations

import numbers
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from tune_app.errors import TaskError

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
}


NON_NUMERIC = "reported a non-numeric value"


def check_numeric(task: str, metrics: Mapping[str, Any], keys: Iterable[str] | None = None) -> None:
    """Raise :class:`TaskError` naming the metric if one of ``metrics`` (or of its
    ``keys``) is not a number; NaN/inf are numbers (they mark a diverged trial)."""
    for key in metrics if keys is None else keys:
        value = metrics.get(key)
        if value is None or (isinstance(value, numbers.Real) and not isinstance(value, bool)):
            continue
        raise TaskError(
            f"task {task!r} {NON_NUMERIC} for metric {key!r}: {str(value)[:80]!r} "
            f"({type(value).__name__}); eval_metrics must return numbers "
            f"(use float(...) or tensor.item())"
        )


class Objective(ABC):  # noqa: B024 (no abstract method: the two kinds below add theirs)
    """What a strategy tunes: a name, the metrics reported each epoch, and checks.

    Subclass :class:`Task` (trains a model) or :class:`LookupObjective` (the
    metric is computed per epoch), never this class directly.
    """

    name: str = "task"
    # Every name reported each epoch (a Task also reports ``train_loss``).
    metrics: tuple[str, ...] = ("val_loss",)
    # True: the objective reads files under ``config["data_dir"]``, which run_search
    # resolves on the driver (--data-dir, $TUNE_APP_DATA) and ships to workers.
    uses_data_dir: bool = False

    def validate_config(self, config: Mapping[str, Any]) -> None:  # noqa: B027
        """Raise :class:`TaskError` for options this objective cannot use (optional)."""

    def check_data(self, config: Mapping[str, Any]) -> None:  # noqa: B027
        """Raise :class:`TaskError` if the data is missing (driver side, before Ray starts)."""


def check_reported(objective: Objective, metrics: Mapping[str, Any]) -> None:
    """Raise :class:`TaskError` if one of ``objective``'s declared :attr:`~Objective.metrics`
    is missing from ``metrics``, or a reported value is not a number (:func:`check_numeric`)."""
    absent = [m for m in objective.metrics if m not in metrics]
    if absent:
        raise TaskError(
            f"task {objective.name!r} reported no {', '.join(map(repr, absent))} (it declares "
            f"metrics {list(objective.metrics)}, got {sorted(metrics)}); report every declared "
            f"metric each epoch, or declare only the ones it reports"
        )
    check_numeric(objective.name, metrics)


class LookupObjective(Objective):
    """An objective whose per-epoch metric is computed, not trained.

    The loop reports ``lookup(config, epoch)`` for epochs ``1..max_epochs`` under
    the epoch budget; :attr:`optimum` (the best reachable value of :attr:`metric`)
    makes results comparable as regret.
    """

    metric: str = "value"
    mode: str = "min"
    max_epochs: int = 1
    optimum: float = 0.0

    @abstractmethod
    def lookup(self, config: Mapping[str, Any], epoch: int) -> dict[str, float]:
        """What a trial of ``config`` reports after ``epoch`` epochs (1-based)."""


class Task(Objective):
    """An objective that trains a model: data, a model builder, a loss and metrics.

    Subclasses set :attr:`name` and :attr:`metrics` (every name the task reports
    each epoch, besides ``train_loss``) and implement the abstract methods.
    """

    @abstractmethod
    def load_data(self, config: Mapping[str, Any], seed: int) -> tuple[Dataset, Dataset]:
        """Return ``(train, validation)`` datasets of ``(input, target)`` pairs.

        The split must depend only on ``seed`` (and data options in ``config``), so
        every strategy with the same seed sees the same split.
        """

    @abstractmethod
    def build_model(self, config: Mapping[str, Any]) -> nn.Module:
        """Build the network for one configuration."""

    @abstractmethod
    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean training loss of one batch."""

    @abstractmethod
    def eval_sums(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        """Per-batch *sums* (e.g. summed loss, correct count) for validation metrics."""

    @abstractmethod
    def eval_metrics(self, sums: Mapping[str, float], count: int) -> dict[str, float]:
        """Turn summed validation statistics over ``count`` samples into metrics."""


class ClassificationTask(Task):
    """A task trained with cross-entropy, reporting accuracy and loss."""

    metrics = ("val_accuracy", "val_loss")

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of logits against class labels."""
        return nn.functional.cross_entropy(output, target)

    def eval_sums(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        """Summed loss and number of correct predictions."""
        loss = nn.functional.cross_entropy(output, target, reduction="sum")
        correct = (output.argmax(dim=1) == target).sum()
        return {"loss": float(loss), "correct": float(correct)}

    def eval_metrics(self, sums: Mapping[str, float], count: int) -> dict[str, float]:
        """Validation accuracy and mean loss."""
        n = max(count, 1)
        return {"val_accuracy": sums["correct"] / n, "val_loss": sums["loss"] / n}


def build_on_meta(task: Task, config: Mapping[str, Any]) -> None:
    """Build ``task``'s model on the meta device (no memory, no data): bad options fail early."""
    with torch.device("meta"):
        task.build_model(config)


def activation_layer(name: str) -> type[nn.Module]:
    """The activation module class called ``name``; :class:`TaskError` if unknown."""
    if name not in ACTIVATIONS:
        raise TaskError(f"unknown activation {name!r}; use one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def mlp(
    in_features: int,
    out_features: int,
    hidden: list[int],
    activation: str = "relu",
    dropout: float = 0.0,
    input_dropout: float = 0.0,
) -> nn.Sequential:
    """A fully connected network; raises :class:`TaskError` for bad options."""
    act = activation_layer(activation)
    if not hidden or any(int(h) < 1 for h in hidden):
        raise TaskError(f"hidden layer sizes must be >= 1 and at least one layer, got {hidden}")
    for label, p in (("dropout", dropout), ("input_dropout", input_dropout)):
        if not 0.0 <= float(p) < 1.0:
            raise TaskError(f"{label} must be in [0, 1), got {p}")
    layers: list[nn.Module] = []
    if input_dropout > 0:
        layers.append(nn.Dropout(input_dropout))
    width = in_features
    for h in hidden:
        layers += [nn.Linear(width, int(h)), act()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = int(h)
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


def check_fraction(name: str, value: Any, low_open: bool = False) -> float:
    """``value`` as a float in [0, 1) (or (0, 1] with ``low_open``); else :class:`TaskError`."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TaskError(f"{name} must be a number, got {value!r}") from None
    ok = 0.0 < v <= 1.0 if low_open else 0.0 <= v < 1.0
    if not ok:
        span = "(0, 1]" if low_open else "[0, 1)"
        raise TaskError(f"{name} must be in {span}, got {value!r}")
    return v


def scaled(units: Any, width_mult: Any, name: str = "width") -> int:
    """``units`` x ``width_mult`` (the fewer-units fidelity knob), at least 1."""
    mult = check_fraction("width_mult", width_mult, low_open=True)
    n = int(units)
    if n < 1:
        raise TaskError(f"{name} must be >= 1, got {units!r}")
    return max(1, round(n * mult))


def width_mult(config: Mapping[str, Any]) -> Any:
    """The ``width_mult`` fidelity knob as given (default 1.0); :func:`scaled` checks it."""
    return config.get("width_mult", 1.0)


def scaled_sizes(config: Mapping[str, Any], sizes: Any, name: str = "hidden") -> list[int]:
    """Layer sizes (a list, or one size) each scaled by the config's ``width_mult``."""
    if isinstance(sizes, int | str):
        sizes = [sizes]
    return [scaled(s, width_mult(config), name) for s in sizes]


class ImageInput(nn.Module):
    """Turn uint8 images (N, C, H, W) into normalised floats inside the model.

    Data sets stay uint8 in memory (4x smaller than float32, shared by DataLoader
    batches); the conversion runs per batch on the training device.
    """

    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.mean: torch.Tensor
        self.std: torch.Tensor
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1) * 255.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise a batch."""
        return (x.float() - self.mean) / self.std


def conv_net(
    in_channels: int,
    size: int,
    channels: list[int],
    out_features: int,
    hidden: int = 128,
    activation: str = "relu",
    dropout: float = 0.0,
) -> nn.Sequential:
    """Conv blocks (3x3 conv, activation, 2x2 max-pool) then a one-hidden-layer head.

    ``channels`` has one entry per block; ``size`` is the input's height/width.
    Pooling rounds up, so any size >= 1 survives any depth.
    """
    act = activation_layer(activation)
    if not channels or any(int(c) < 1 for c in channels):
        raise TaskError(
            f"conv blocks need >= 1 channel each and at least one block, got {channels}"
        )
    if int(hidden) < 1:
        raise TaskError(f"hidden units must be >= 1, got {hidden}")
    dropout = check_fraction("dropout", dropout)
    layers: list[nn.Module] = []
    width = in_channels
    for c in channels:
        layers += [
            nn.Conv2d(width, int(c), kernel_size=3, padding=1),
            act(),
            nn.MaxPool2d(2, ceil_mode=True),
        ]
        width = int(c)
        size = (size + 1) // 2
    layers.append(nn.Flatten())
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    layers += [
        nn.Linear(width * size * size, int(hidden)),
        act(),
    ]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(int(hidden), out_features))
    return nn.Sequential(*layers)
