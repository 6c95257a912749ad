"""Shared helpers of the image tasks: seeded splits and the resolution fidelity."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch.nn import functional as F

from tune_app.errors import TaskError
from tune_app.tasks.base import check_fraction


def split_indices(n: int, val_fraction: Any, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded (train, validation) split of ``range(n)``; both parts non-empty."""
    frac = check_fraction("val_fraction", val_fraction, low_open=True)
    if n < 2:
        raise TaskError(f"need at least 2 examples to split off a validation set, got {n}")
    n_val = min(max(1, round(n * frac)), n - 1)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_val:], perm[:n_val]


def resolution(config: Mapping[str, Any], native: int) -> int:
    """The ``resolution`` fidelity knob: image side length, 4..native (default native)."""
    raw = config.get("resolution", native)
    try:
        res = int(raw)
    except (TypeError, ValueError):
        raise TaskError(f"resolution must be an integer, got {raw!r}") from None
    if res != raw and not (isinstance(raw, float) and raw == res):
        raise TaskError(f"resolution must be an integer, got {raw!r}")
    if not 4 <= res <= native:
        raise TaskError(f"resolution must be in [4, {native}] (the native size), got {raw!r}")
    return res


def resize_uint8(images: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """Area-downscale uint8 images (N, C, H, W) to ``size`` x ``size``, kept as uint8."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    parts = [
        F.interpolate(images[i : i + chunk].float(), size=(size, size), mode="area")
        .round()
        .clamp(0, 255)
        .to(torch.uint8)
        for i in range(0, len(images), chunk)
    ]
    return torch.cat(parts) if parts else images[:, :, :size, :size]
