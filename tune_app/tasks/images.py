"""The image tasks' shared skeleton and helpers: the resolution fidelity, downscaling.

:class:`ImageTask` holds what every image task does (check the files, validate
options on the meta device, load uint8 images, downscale to ``resolution``,
split); a task supplies its files and loader, native size, normalisation and
layers. :class:`ConvImageTask` adds the configurable conv/pool network.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import Dataset, TensorDataset

from tune_app.errors import TaskError
from tune_app.tasks.base import ImageInput, Task, build_on_meta, conv_net, scaled, width_mult
from tune_app.tasks.data import cached, data_root
from tune_app.tasks.split import VAL_FRACTION, val_split

MIN_RESOLUTION = 4


def resolution(config: Mapping[str, Any], native: int) -> int:
    """The ``resolution`` fidelity knob: image side length, 4..native (default native)."""
    raw = config.get("resolution", native)
    try:
        res = int(raw)
    except (TypeError, ValueError):
        raise TaskError(f"resolution must be an integer, got {raw!r}") from None
    if res != raw and not (isinstance(raw, float) and raw == res):
        raise TaskError(f"resolution must be an integer, got {raw!r}")
    if not MIN_RESOLUTION <= res <= native:
        raise TaskError(
            f"resolution must be in [{MIN_RESOLUTION}, {native}] (the native size), got {raw!r}"
        )
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


class ImageTask(Task):
    """A task on square uint8 images, with the ``resolution`` fidelity knob.

    Subclasses set :attr:`dataset` (the ``fetch`` name, also the cache prefix),
    :attr:`native_side` (or override :meth:`native`), :attr:`mean` and :attr:`std`
    (one per channel), :attr:`out_features`, optionally :attr:`val_fraction`, and
    implement :meth:`files`, :meth:`images` and :meth:`layers`.
    """

    uses_data_dir = True
    dataset: str
    native_side: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    out_features: int
    val_fraction: float = VAL_FRACTION

    @abstractmethod
    def files(self, root: Path) -> list[Path]:
        """The data files, the first standing for the training images (cache key);
        :class:`TaskError` naming what is missing."""

    @abstractmethod
    def images(self, root: Path) -> tuple[torch.Tensor, torch.Tensor]:
        """The training set: ``(images uint8 (N, C, S, S), targets)``."""

    @abstractmethod
    def layers(self, config: Mapping[str, Any], res: int, native: int) -> list[nn.Module]:
        """The layers after input normalisation, for ``res`` x ``res`` inputs."""

    @property
    def in_channels(self) -> int:
        """Image channels (one normalisation mean per channel)."""
        return len(self.mean)

    def native(self, root: Path) -> int:
        """Side length of the stored images."""
        return self.native_side

    def check_data(self, config: Mapping[str, Any]) -> None:
        """The data files exist under the data directory."""
        self.files(data_root(config))

    def validate_config(self, config: Mapping[str, Any]) -> None:
        """Bad options (resolution first) fail before any data loads."""
        resolution(config, self.native(data_root(config)))
        build_on_meta(self, config)

    def load_data(self, config: Mapping[str, Any], seed: int) -> tuple[Dataset, Dataset]:
        """Seeded train/validation split of the training images at ``resolution``."""
        root = data_root(config)
        x, y = self.images(root)
        native = self.native(root)
        res = resolution(config, native)
        if res != native:
            key = self.files(root)[:1]
            x = cached(f"{self.dataset}-res", key, lambda: resize_uint8(x, res), res)
        tr, va = val_split(config, len(y), seed, self.val_fraction)
        return TensorDataset(x[tr], y[tr]), TensorDataset(x[va], y[va])

    def build_model(self, config: Mapping[str, Any]) -> nn.Module:
        """Normalise uint8 inputs inside the model, then :meth:`layers`."""
        native = self.native(data_root(config))
        res = resolution(config, native)
        return nn.Sequential(
            ImageInput(list(self.mean), list(self.std)), *self.layers(config, res, native)
        )


class ConvImageTask(ImageTask):
    """An image task whose network is :func:`~tune_app.tasks.base.conv_net`.

    Config keys: ``channels`` (filters of the first block; each next block doubles
    them), ``blocks`` (1..:attr:`max_blocks`), ``hidden`` (dense units), ``dropout``,
    ``activation``; ``width_mult`` multiplies filters and units.
    """

    blocks: int = 2
    max_blocks: int = 4
    channels: int = 32
    hidden: int = 128

    def layers(self, config: Mapping[str, Any], res: int, native: int) -> list[nn.Module]:
        """``blocks`` conv/pool blocks, a dense layer, :attr:`out_features` outputs."""
        blocks = int(config.get("blocks", self.blocks))
        if not 1 <= blocks <= self.max_blocks:
            raise TaskError(
                f"blocks must be in 1..{self.max_blocks} (conv/pool blocks), got {blocks}"
            )
        mult = width_mult(config)
        first = scaled(config.get("channels", self.channels), mult, "channels")
        net = conv_net(
            self.in_channels,
            res,
            [first * 2**i for i in range(blocks)],
            self.out_features,
            hidden=scaled(config.get("hidden", self.hidden), mult, "hidden"),
            activation=str(config.get("activation", "relu")),
            dropout=config.get("dropout", 0.0),
        )
        return [net]
