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
from pathlib import Path

import torch

from tune_app.errors import TaskError
from tune_app.tasks.base import ClassificationTask
from tune_app.tasks.data import cached, missing
from tune_app.tasks.images import ConvImageTask

RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


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


class MNISTCNN(ConvImageTask, ClassificationTask):
    """10-class digits from 28x28 grey images.

    Config keys: see :class:`~tune_app.tasks.images.ConvImageTask` (``blocks``
    1-4, default 2; ``channels`` default 32). Fidelity knobs: ``data_fraction``
    (seeded fraction of the training split, in the loop), ``resolution`` (side
    length, 4-28, area downscaling), ``width_mult`` (multiplies filters and units).
    Data: ``data_dir``, ``val_fraction``.
    """

    name = "mnist_cnn"
    dataset = "mnist"
    native_side = 28
    mean, std = (0.1307,), (0.3081,)
    out_features = 10

    def files(self, root: Path) -> list[Path]:
        """The idx files (see :func:`mnist_files`)."""
        return mnist_files(root)

    def images(self, root: Path) -> tuple[torch.Tensor, torch.Tensor]:
        """The 60,000 training images and labels."""
        return load_mnist(root)
