"""``covertype_mlp``: an MLP of any depth/width/activation/dropout on UCI Covertype.

Data, first found wins:

1. ``<data_dir>/covertype/covtype.data`` or ``covtype.data.gz``: the UCI file,
   581,012 lines of 55 comma-separated integers, no header: 10 continuous
   features (elevation, aspect, slope, distances, hill shades), 4 wilderness-area
   and 40 soil-type 0/1 columns, then the class 1-7.
2. scikit-learn's ``fetch_covtype`` cache under ``<data_dir>/scikit_learn_data``
   (what ``python -m tune_app.tasks.data fetch covertype`` writes) or
   scikit-learn's default data home.

The 10 continuous features are standardised with the training split's mean and
standard deviation; the 44 boolean columns are left as they are.

Why not Ray Data here: the whole table is ~125 MB as float32 and fits in every
worker's memory, so each worker parses it once (cached per process) and trains
on its ``DistributedSampler`` shard; a Ray Data pipeline per trial would start a
streaming executor and copy blocks through the object store for every one of a
search's many short trials, costing more than it saves. A table larger than a
worker's memory is where ``ray.data.read_csv`` + ``get_dataset_shard`` pays off.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

from tune_app.errors import TaskError
from tune_app.tasks.base import ClassificationTask, build_on_meta, mlp, scaled_sizes
from tune_app.tasks.data import cached, data_root, missing
from tune_app.tasks.split import val_split

N_CONTINUOUS, N_FEATURES, N_CLASSES = 10, 54, 7
CSV_NAMES = ("covtype.data", "covtype.data.gz")


def _csv(root: Path) -> Path | None:
    for name in CSV_NAMES:
        path = root / "covertype" / name
        if path.exists():
            return path
    return None


def _sklearn_homes(root: Path) -> list[Path]:
    from sklearn.datasets import get_data_home

    homes = [root / "scikit_learn_data", Path(get_data_home())]
    return [h for h in homes if (h / "covertype" / "samples_py3").exists()]


def read_covtype_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Parse the UCI CSV: ``(features float32 (N, 54), labels 0..6 int64)``."""
    import pandas as pd

    try:
        frame = pd.read_csv(path, header=None, dtype=np.int32)
    except (ValueError, pd.errors.ParserError, OSError) as exc:
        raise TaskError(
            f"{path}: not the UCI covtype.data format (55 comma-separated integers per "
            f"line, no header): {exc}"
        ) from None
    if frame.shape[1] != N_FEATURES + 1:
        raise TaskError(
            f"{path}: expected {N_FEATURES + 1} columns (54 features + class), got {frame.shape[1]}"
        )
    values = frame.to_numpy()
    y = values[:, -1].astype(np.int64)
    if y.min() < 1 or y.max() > N_CLASSES:
        raise TaskError(f"{path}: the last column must be the class 1..7, got {y.min()}..{y.max()}")
    return values[:, :-1].astype(np.float32), y - 1


def covertype_source(root: Path) -> Path:
    """The CSV or scikit-learn cache directory to read; :class:`TaskError` if none."""
    csv = _csv(root)
    if csv is not None:
        return csv
    homes = _sklearn_homes(root)
    if homes:
        return homes[0] / "covertype"
    raise missing(
        "covertype",
        root,
        f"{root / 'covertype' / 'covtype.data'}[.gz] (UCI format) or scikit-learn's "
        f"fetch_covtype cache in {root / 'scikit_learn_data'}",
    )


def load_covertype(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """All rows: ``(features float32 (N, 54), labels 0..6)``, parsed once per process."""
    source = covertype_source(root)
    if source.is_file():
        return cached("covertype-csv", [source], lambda: read_covtype_csv(source))

    def from_sklearn() -> tuple[np.ndarray, np.ndarray]:
        from sklearn.datasets import fetch_covtype

        bunch = fetch_covtype(data_home=str(source.parent), download_if_missing=False)
        return bunch.data.astype(np.float32), bunch.target.astype(np.int64) - 1

    return cached("covertype-sk", [source / "samples_py3"], from_sklearn)


def hidden_sizes(config: Mapping[str, Any]) -> list[int]:
    """Hidden layer sizes: ``hidden_sizes`` as given, else ``layers`` x ``hidden``
    shrinking by ``shrink`` per layer; scaled by ``width_mult``."""
    sizes = config.get("hidden_sizes")
    if sizes is None:
        layers = int(config.get("layers", 2))
        if layers < 1:
            raise TaskError(f"layers must be >= 1 (at least one hidden layer), got {layers}")
        shrink = float(config.get("shrink", 1.0))
        if not 0.0 < shrink <= 1.0:
            raise TaskError(f"shrink must be in (0, 1], got {shrink}")
        width = int(config.get("hidden", 128))
        sizes = [max(1, round(width * shrink**i)) for i in range(layers)]
    hidden = scaled_sizes(config, sizes)
    if not hidden:
        raise TaskError("hidden_sizes must list at least one layer, got []")
    return hidden


class CovertypeMLP(ClassificationTask):
    """7-class forest cover type from 54 cartographic features.

    Config keys: architecture as ``hidden_sizes`` (a list) or ``layers`` +
    ``hidden`` + ``shrink`` (each layer ``shrink`` x the previous), ``activation``,
    ``dropout`` (hidden layers), ``input_dropout``; the loop reads ``optimizer``,
    ``lr``, ``weight_decay``, ``momentum`` and ``batch_size``, and the epoch count
    is the trial's epochs. Fidelity knobs: ``data_fraction``, ``width_mult``.
    Data: ``data_dir``, ``val_fraction``.
    """

    name = "covertype_mlp"
    uses_data_dir = True

    def check_data(self, config: Mapping[str, Any]) -> None:
        """A CSV or scikit-learn cache exists under the data directory."""
        covertype_source(data_root(config))

    def validate_config(self, config: Mapping[str, Any]) -> None:
        """Bad options fail before any data loads."""
        build_on_meta(self, config)

    def load_data(self, config: Mapping[str, Any], seed: int) -> tuple[Dataset, Dataset]:
        """Seeded split; continuous columns standardised on the training part."""
        x_all, y_all = load_covertype(data_root(config))
        tr, va = val_split(config, len(y_all), seed)
        x = torch.from_numpy(x_all)
        y = torch.from_numpy(y_all)
        x_tr, x_va = x[tr].clone(), x[va].clone()
        mean = x_tr[:, :N_CONTINUOUS].mean(dim=0)
        std = x_tr[:, :N_CONTINUOUS].std(dim=0).clamp_min(1e-6)
        x_tr[:, :N_CONTINUOUS] = (x_tr[:, :N_CONTINUOUS] - mean) / std
        x_va[:, :N_CONTINUOUS] = (x_va[:, :N_CONTINUOUS] - mean) / std
        return TensorDataset(x_tr, y[tr]), TensorDataset(x_va, y[va])

    def build_model(self, config: Mapping[str, Any]) -> nn.Module:
        """54 inputs, the configured hidden layers, 7 logits."""
        return mlp(
            N_FEATURES,
            N_CLASSES,
            hidden_sizes(config),
            activation=str(config.get("activation", "relu")),
            dropout=float(config.get("dropout", 0.0)),
            input_dropout=float(config.get("input_dropout", 0.0)),
        )
