"""``cifar10_mlp``: the objective net of the Q-gradient-descent report, on CIFAR-10.

A fully connected 3072 x 100 x 50 x 10 net, sigmoid hidden units, softmax output
(cross-entropy on the logits), plain SGD; the report tunes the learning rate and
the L2 coefficient (``weight_decay``: coupled L2 under SGD).

Data: ``<data_dir>/cifar-10-batches-py/`` (the "CIFAR-10 python version":
``data_batch_1`` .. ``data_batch_5``, ``test_batch``, ``batches.meta``), read by
``torchvision.datasets.CIFAR10``. Tuning uses a seeded validation split of the
50,000 training images (``val_fraction``, default 0.1).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tune_app.errors import TaskError
from tune_app.tasks.base import ClassificationTask, mlp, scaled_sizes
from tune_app.tasks.data import cached, missing
from tune_app.tasks.images import ImageTask

BASE = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))


def _reader(root: Path, train: bool) -> Any:
    """torchvision's CIFAR-10 reader, checking that the batch files exist, not their md5.

    The files are pickles (the format CIFAR-10 ships in): only point ``data_dir`` at
    data you trust. Skipping the md5 lets re-packed or smaller batch files in the
    same format load (the tests' fixtures); ``fetch`` still verifies the archive.
    torchvision is imported here, not with the module: a trial's worker unpickles
    the task without it (its data come from the run's store; importing torchvision
    took a few seconds per worker).
    """
    from torchvision.datasets import CIFAR10

    class CIFAR10Batches(CIFAR10):
        train_list = [[name, None] for name, _ in CIFAR10.train_list]
        test_list = [[name, None] for name, _ in CIFAR10.test_list]
        meta = {**CIFAR10.meta, "md5": None}

    return CIFAR10Batches(str(root), train=train, download=False)


def cifar10_files(root: Path) -> list[Path]:
    """The batch files; :class:`TaskError` naming the missing ones."""
    base = root / BASE
    files = [base / n for n in (*TRAIN_FILES, "test_batch", "batches.meta")]
    if not all(f.exists() for f in files):
        absent = ", ".join(f.name for f in files if not f.exists())
        raise missing(
            "cifar10",
            root,
            f"{base}/{{data_batch_1..5,test_batch,batches.meta}}",
            f"missing: {absent}",
        )
    return files


def load_cifar10(root: Path, train: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images uint8 (N, 3, 32, 32), labels int64)``."""
    files = cifar10_files(root)
    base = root / BASE

    def read() -> tuple[torch.Tensor, torch.Tensor]:
        try:
            ds = _reader(root, train)
        except (RuntimeError, ValueError, KeyError, EOFError, OSError) as exc:
            raise TaskError(f"cannot read the CIFAR-10 batches in {base}: {exc!r}") from None
        x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        return x, torch.tensor(ds.targets, dtype=torch.long)

    return cached("cifar10", files, read, train)


class CIFAR10MLP(ImageTask, ClassificationTask):
    """10-class CIFAR-10 with the report's sigmoid MLP.

    Config keys: ``hidden`` (list of hidden sizes, default ``[100, 50]``),
    ``activation`` (default sigmoid), ``dropout``. The loop reads ``lr``,
    ``weight_decay`` (L2), ``optimizer`` (the space fixes ``sgd``) and
    ``batch_size``. Fidelity knobs: ``data_fraction``, ``resolution`` (side 4-32:
    16 gives a 768-input net), ``width_mult`` (multiplies hidden units).
    Data: ``data_dir``, ``val_fraction``.
    """

    name = "cifar10_mlp"
    dataset = "cifar10"
    native_side = 32
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    out_features = 10

    def files(self, root: Path) -> list[Path]:
        """The batch files (see :func:`cifar10_files`)."""
        return cifar10_files(root)

    def images(self, root: Path) -> tuple[torch.Tensor, torch.Tensor]:
        """The 50,000 training images and labels."""
        return load_cifar10(root)

    def layers(self, config: Mapping[str, Any], res: int, native: int) -> list[nn.Module]:
        """Flatten, ``3 * res * res`` x hidden... x 10."""
        hidden = scaled_sizes(config, config.get("hidden", [100, 50]))
        net = mlp(
            self.in_channels * res * res,
            self.out_features,
            hidden,
            activation=str(config.get("activation", "sigmoid")),
            dropout=float(config.get("dropout", 0.0)),
        )
        return [nn.Flatten(), net]
