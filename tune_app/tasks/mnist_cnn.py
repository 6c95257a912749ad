"""``mnist_cnn``: a small CNN on MNIST, read by ``torchvision.datasets.MNIST``.

Data: ``<data_dir>/MNIST/raw/`` with torchvision's four idx files
(``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``,
``t10k-labels-idx1-ubyte``; ``.gz`` copies are unpacked on first use). Tuning
uses a seeded validation split of the 60,000 training images (``val_fraction``,
default 0.1); the t10k test set is left for a final test.
"""

from __future__ import annotations

import gzip
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from tune_app.errors import TaskError
from tune_app.tasks.base import ClassificationTask, ImageInput, conv_net, scaled
from tune_app.tasks.data import cached, data_root, missing
from tune_app.tasks.images import resize_uint8, resolution, split_indices

NATIVE = 28
RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
MEAN, STD = [0.1307], [0.3081]


def raw_dir(root: Path) -> Path:
    """Where torchvision's MNIST looks for its idx files."""
    return root / "MNIST" / "raw"


def mnist_files(root: Path) -> list[Path]:
    """The four idx files (unpacking ``.gz`` copies); :class:`TaskError` if absent."""
    raw = raw_dir(root)
    for name in RAW_FILES:
        gz = raw / f"{name}.gz"
        if not (raw / name).exists() and gz.exists():
            # What torchvision's download does after fetching: unpack next to the .gz.
            with gzip.open(gz, "rb") as src, open(raw / name, "wb") as dst:
                shutil.copyfileobj(src, dst)
    files = [raw / n for n in RAW_FILES]
    if not all(f.exists() for f in files):
        absent = ", ".join(f.name for f in files if not f.exists())
        raise missing("mnist", root, f"{raw}/{{{','.join(RAW_FILES)}}}", f"missing: {absent}")
    return files


def load_mnist(root: Path, train: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images uint8 (N, 1, 28, 28), labels int64)`` through torchvision's reader."""
    files = mnist_files(root)
    raw = raw_dir(root)

    def read() -> tuple[torch.Tensor, torch.Tensor]:
        from torchvision.datasets import MNIST

        try:
            ds = MNIST(str(root), train=train, download=False)
        except (RuntimeError, ValueError, AssertionError) as exc:
            raise TaskError(f"cannot read the MNIST idx files in {raw}: {exc}") from None
        return ds.data.unsqueeze(1).contiguous(), ds.targets.long()

    return cached("mnist", files, read, train)


class MNISTCNN(ClassificationTask):
    """10-class digits from 28x28 grey images.

    Config keys: ``channels`` (filters of the first block; each next block doubles
    them), ``blocks`` (conv/pool blocks, 1-4), ``hidden`` (units of the dense
    layer), ``dropout``, ``activation``. Fidelity knobs: ``data_fraction`` (seeded
    fraction of the training split, in the loop), ``resolution`` (side length,
    4-28, area downscaling), ``width_mult`` (multiplies filters and units).
    Data: ``data_dir``, ``val_fraction``.
    """

    name = "mnist_cnn"
    uses_data_dir = True

    def check_data(self, config: Mapping[str, Any]) -> None:
        """The idx files exist under the data directory."""
        mnist_files(data_root(config))

    def validate_config(self, config: Mapping[str, Any]) -> None:
        """Build the model once on the meta device: bad options fail before data loads."""
        resolution(config, NATIVE)
        with torch.device("meta"):
            self.build_model(config)

    def load_data(self, config: Mapping[str, Any], seed: int) -> tuple[Dataset, Dataset]:
        """Seeded train/validation split of the MNIST training set at ``resolution``."""
        root = data_root(config)
        x, y = load_mnist(root)
        res = resolution(config, NATIVE)
        if res != NATIVE:
            x = cached(
                "mnist-res", [raw_dir(root) / RAW_FILES[0]], lambda: resize_uint8(x, res), res
            )
        tr, va = split_indices(len(y), config.get("val_fraction", 0.1), seed)
        return TensorDataset(x[tr], y[tr]), TensorDataset(x[va], y[va])

    def build_model(self, config: Mapping[str, Any]) -> nn.Module:
        """``blocks`` conv/pool blocks, then a dense layer and 10 logits."""
        blocks = int(config.get("blocks", 2))
        if not 1 <= blocks <= 4:
            raise TaskError(f"blocks must be in 1..4 (conv/pool blocks), got {blocks}")
        mult = config.get("width_mult", 1.0)
        first = scaled(config.get("channels", 32), mult, "channels")
        return nn.Sequential(
            ImageInput(MEAN, STD),
            conv_net(
                1,
                resolution(config, NATIVE),
                [first * 2**i for i in range(blocks)],
                10,
                hidden=scaled(config.get("hidden", 128), mult, "hidden"),
                activation=str(config.get("activation", "relu")),
                dropout=config.get("dropout", 0.0),
            ),
        )
