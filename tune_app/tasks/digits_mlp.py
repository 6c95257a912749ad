"""``digits_mlp``: an MLP on scikit-learn's 8x8 digits (ships with the package, offline)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from tune_app.tasks.base import ClassificationTask, mlp


class DigitsMLP(ClassificationTask):
    """10-class digit recognition from 64 pixel features.

    Config keys: ``hidden`` (units per layer), ``layers`` (hidden layer count),
    ``activation``, ``dropout``; the loop reads ``lr``, ``optimizer``,
    ``weight_decay``, ``batch_size`` and ``data_fraction``.
    """

    name = "digits_mlp"

    def load_data(self, config: Mapping[str, Any], seed: int) -> tuple[Dataset, Dataset]:
        """A stratified 80/20 split of the 1,797 digits, fixed by ``seed``."""
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        x, y = load_digits(return_X_y=True)
        x = (x / 16.0).astype(np.float32)
        x_tr, x_va, y_tr, y_va = train_test_split(
            x, y, test_size=0.2, random_state=seed, stratify=y
        )
        return (
            TensorDataset(torch.from_numpy(x_tr), torch.from_numpy(y_tr).long()),
            TensorDataset(torch.from_numpy(x_va), torch.from_numpy(y_va).long()),
        )

    def build_model(self, config: Mapping[str, Any]) -> nn.Module:
        """An MLP of ``layers`` x ``hidden`` units."""
        hidden = int(config.get("hidden", 64))
        return mlp(
            64,
            10,
            [hidden] * int(config.get("layers", 2)),
            activation=str(config.get("activation", "relu")),
            dropout=float(config.get("dropout", 0.0)),
        )
