"""The task interface: an objective = data + model builder + metrics.

A task turns a trial's configuration (searched hyperparameters merged with the
space's ``fixed`` values) into train/validation datasets and a model. The
shared training loop (:mod:`tune_app.tasks.loop`) does the rest: optimiser,
epochs, distributed sharding, metrics, checkpoints.

Users tune their own models by subclassing :class:`ClassificationTask` (or
:class:`Task`) and passing the object, or a ``"module:attr"`` reference, as
``task=``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
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


class Task(ABC):
    """An objective the strategies tune.

    Subclasses set :attr:`name` and :attr:`metrics` (every name the task reports
    each epoch, besides ``train_loss``) and implement the abstract methods.
    """

    name: str = "task"
    metrics: tuple[str, ...] = ("val_loss",)

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

    def validate_config(self, config: Mapping[str, Any]) -> None:  # noqa: B027
        """Raise :class:`TaskError` for options this task cannot use (optional)."""


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


def mlp(
    in_features: int,
    out_features: int,
    hidden: list[int],
    activation: str = "relu",
    dropout: float = 0.0,
    input_dropout: float = 0.0,
) -> nn.Sequential:
    """A fully connected network; raises :class:`TaskError` for bad options."""
    if activation not in ACTIVATIONS:
        raise TaskError(f"unknown activation {activation!r}; use one of {', '.join(ACTIVATIONS)}")
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
        layers += [nn.Linear(width, int(h)), ACTIVATIONS[activation]()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = int(h)
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)
