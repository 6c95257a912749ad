"""``keypoints_cnn``: a CNN regressing 4 hand key points; metric MAE in pixels (min).

Data: a folder ``<data_dir>/keypoints/`` with

* ``keypoints.csv``: a header row, then one row per image with the columns
  ``image`` (path relative to the folder) and ``wrist_x, wrist_y, palm_x, palm_y,
  thumb_tip_x, thumb_tip_y, index_tip_x, index_tip_y`` in pixels (x right, y
  down, (0, 0) the centre of the top-left pixel); other columns are ignored;
* the images: square, all the same size, any format Pillow reads (converted to
  8-bit greyscale).

No hand data ships with tune_app: ``python -m tune_app.tasks.data fetch
keypoints`` writes a *synthetic* set (:mod:`tune_app.tasks.keypoints_synth`).

``val_mae`` is the mean absolute error over the 8 coordinates, in pixels of the
original images (also at a lower ``resolution``, so fidelities are comparable).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tune_app.errors import TaskError
from tune_app.tasks.data import cached, missing
from tune_app.tasks.images import ConvImageTask
from tune_app.tasks.keypoints_synth import COLUMNS, CSV_NAME, KEYPOINTS

N_OUT = 2 * len(KEYPOINTS)
HUBER_PX = 1.0  # smooth L1: quadratic within this many pixels, linear beyond


def _folder(root: Path) -> Path:
    folder = root / "keypoints"
    if not (folder / CSV_NAME).exists():
        raise missing(
            "keypoints",
            root,
            f"{folder / CSV_NAME} plus the images it lists (format: see README, Tasks)",
            "no hand data ships; `fetch keypoints` writes a synthetic set",
        )
    return folder


def _rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / CSV_NAME, newline="") as f:
        reader = csv.DictReader(f)
        absent = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if absent:
            raise TaskError(
                f"{folder / CSV_NAME}: missing column(s) {absent}; need {list(COLUMNS)}"
            )
        rows = list(reader)
    if len(rows) < 2:
        raise TaskError(f"{folder / CSV_NAME}: need at least 2 labelled images, got {len(rows)}")
    return rows


def native_size(root: Path) -> int:
    """Side length of the images (read from the first image's header)."""
    from PIL import Image

    folder = _folder(root)

    def first() -> int:
        path = folder / _rows(folder)[0]["image"]
        try:
            with Image.open(path) as im:
                w, h = im.size
        except OSError as exc:
            raise TaskError(f"cannot read image {path}: {exc}") from None
        if w != h:
            raise TaskError(f"{path}: images must be square, got {w}x{h}")
        return int(w)

    return cached("keypoints-size", [folder / CSV_NAME], first)


def load_keypoints(root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images uint8 (N, 1, S, S), key points float32 (N, 8) in pixels)``."""
    from PIL import Image

    folder = _folder(root)

    def read() -> tuple[torch.Tensor, torch.Tensor]:
        rows = _rows(folder)
        size = native_size(root)
        images = np.empty((len(rows), 1, size, size), np.uint8)
        points = np.empty((len(rows), N_OUT), np.float32)
        for i, row in enumerate(rows):
            path = folder / row["image"]
            try:
                with Image.open(path) as im:
                    grey = im.convert("L")
            except OSError as exc:
                raise TaskError(f"cannot read image {path}: {exc}") from None
            if grey.size != (size, size):
                raise TaskError(f"{path}: {grey.size[0]}x{grey.size[1]}, expected {size}x{size}")
            images[i, 0] = np.asarray(grey)
            try:
                points[i] = [float(row[c]) for c in COLUMNS[1:]]
            except ValueError:
                raise TaskError(
                    f"{folder / CSV_NAME}: non-numeric key point in row {i + 2}"
                ) from None
        return torch.from_numpy(images), torch.from_numpy(points)

    return cached("keypoints", [folder / CSV_NAME], read)


class PixelHead(nn.Module):
    """Map the network's outputs (offsets from the image centre, in image widths) to pixels."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = float(size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pixels, with (0, 0) the centre of the top-left pixel."""
        return (x + 0.5) * self.size - 0.5


class KeypointsCNN(ConvImageTask):
    """Regress (x, y) of the wrist, palm centre, thumb tip and index tip.

    Config keys: see :class:`~tune_app.tasks.images.ConvImageTask` (``blocks``
    1-5, default 3; ``channels`` default 16). Loss: smooth L1 (Huber, 1 px) on
    pixel coordinates. Fidelity knobs: ``data_fraction``, ``resolution`` (side
    length, 4..native), ``width_mult``. Data: ``data_dir``, ``val_fraction``
    (default 0.2).
    """

    name = "keypoints_cnn"
    metrics = ("val_mae", "val_loss")
    dataset = "keypoints"
    mean, std = (0.5,), (0.25,)
    out_features = N_OUT
    val_fraction = 0.2
    blocks, max_blocks, channels = 3, 5, 16

    def native(self, root: Path) -> int:
        """Side length of the images in the folder."""
        return native_size(root)

    def files(self, root: Path) -> list[Path]:
        """The CSV, after checking it and its first image are readable."""
        native_size(root)
        return [_folder(root) / CSV_NAME]

    def images(self, root: Path) -> tuple[torch.Tensor, torch.Tensor]:
        """Every labelled image and its key points in pixels."""
        return load_keypoints(root)

    def layers(self, config: Mapping[str, Any], res: int, native: int) -> list[nn.Module]:
        """Conv/pool blocks, a dense layer, 8 outputs mapped to pixels."""
        return [*super().layers(config, res, native), PixelHead(native)]

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Huber loss in pixels (quadratic within 1 px, linear beyond)."""
        return nn.functional.smooth_l1_loss(output, target, beta=HUBER_PX)

    def eval_sums(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        """Summed absolute error (pixels) and summed Huber loss over all coordinates."""
        return {
            "abs": float((output - target).abs().sum()),
            "loss": float(
                nn.functional.smooth_l1_loss(output, target, beta=HUBER_PX, reduction="sum")
            ),
        }

    def eval_metrics(self, sums: Mapping[str, float], count: int) -> dict[str, float]:
        """MAE in pixels per coordinate, and the mean loss."""
        n = max(count, 1) * N_OUT
        return {"val_mae": sums["abs"] / n, "val_loss": sums["loss"] / n}
