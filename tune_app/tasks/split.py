"""Seeded train/validation splits shared by the data-backed tasks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from tune_app.errors import TaskError
from tune_app.tasks.base import check_fraction

VAL_FRACTION = 0.1  # default share of the training files held out for validation


def split_indices(n: int, val_fraction: Any, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded (train, validation) split of ``range(n)``; both parts non-empty."""
    frac = check_fraction("val_fraction", val_fraction, low_open=True)
    if n < 2:
        raise TaskError(f"need at least 2 examples to split off a validation set, got {n}")
    n_val = min(max(1, round(n * frac)), n - 1)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_val:], perm[:n_val]


def val_split(
    config: Mapping[str, Any], n: int, seed: int, default: float = VAL_FRACTION
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`split_indices` with the config's ``val_fraction`` (else ``default``)."""
    return split_indices(n, config.get("val_fraction", default), seed)
