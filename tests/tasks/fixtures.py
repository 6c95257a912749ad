"""Small, learnable data sets written in the seed tasks' real on-disk formats.

Each writer produces the files the real loaders read (torchvision's MNIST idx
files, CIFAR-10's pickled python batches, the UCI Covertype CSV, a key-point
folder); labels depend on class-specific patterns, so a model that learns does
measurably better than chance.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np


def _templates(
    rng: np.random.Generator, classes: int, cells: int, side: int, ch: int
) -> np.ndarray:
    """One coarse random block pattern per class, upsampled to ``side`` pixels."""
    coarse = rng.random((classes, ch, cells, cells))
    rep = side // cells
    return coarse.repeat(rep, axis=2).repeat(rep, axis=3)


def _images(
    rng: np.random.Generator, templates: np.ndarray, labels: np.ndarray, noise: float
) -> np.ndarray:
    x = 0.65 * templates[labels] + noise * rng.random((len(labels), *templates.shape[1:]))
    return np.clip(x * 255 / (0.65 + noise), 0, 255).astype(np.uint8)


def write_mnist(root: Path, n_train: int = 1200, n_test: int = 200, seed: int = 0) -> Path:
    """Gzipped idx files under ``root/MNIST/raw`` (as the official download ships them)."""
    rng = np.random.default_rng(seed)
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    tmpl = _templates(rng, 10, 7, 28, 1)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        y = rng.integers(0, 10, n).astype(np.uint8)
        x = _images(rng, tmpl, y, noise=0.5)[:, 0]
        with gzip.open(raw / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
            f.write(struct.pack(">IIII", 0x803, n, 28, 28) + x.tobytes())
        with gzip.open(raw / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(struct.pack(">II", 0x801, n) + y.tobytes())
    return root


def write_cifar10(root: Path, per_batch: int = 200, seed: int = 0, noise: float = 0.6) -> Path:
    """``root/cifar-10-batches-py`` with five training batches, a test batch and meta
    (a larger ``noise`` makes the classes harder to tell apart)."""
    rng = np.random.default_rng(seed)
    base = root / "cifar-10-batches-py"
    base.mkdir(parents=True, exist_ok=True)
    tmpl = _templates(rng, 10, 4, 32, 3)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        y = rng.integers(0, 10, per_batch)
        x = _images(rng, tmpl, y, noise=noise).reshape(per_batch, 3072)  # R, G, B planes
        entry = {
            "batch_label": f"{name} of fixture",
            "labels": [int(v) for v in y],
            "data": x,
            "filenames": [f"img_{i}.png" for i in range(per_batch)],
        }
        with open(base / name, "wb") as f:
            pickle.dump(entry, f, protocol=2)
    meta = {
        "num_cases_per_batch": per_batch,
        "label_names": [f"class_{i}" for i in range(10)],
        "num_vis": 3072,
    }
    with open(base / "batches.meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)
    return root


def write_covertype(root: Path, n: int = 2000, seed: int = 0, gz: bool = False) -> Path:
    """``root/covertype/covtype.data``: 55 comma-separated ints per line, no header.

    Elevation, wilderness area and soil type depend on the class (as in the real
    data, where elevation alone separates several classes); the rest is noise in
    the real columns' ranges.
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(1, 8, n)
    cont = np.stack(
        [
            1900 + 250 * y + rng.normal(0, 120, n),  # elevation (m)
            rng.integers(0, 361, n),  # aspect
            rng.integers(0, 67, n),  # slope
            rng.integers(0, 1398, n),  # horizontal distance to hydrology
            rng.integers(-173, 602, n),  # vertical distance to hydrology
            rng.integers(0, 7118, n),  # horizontal distance to roadways
            rng.integers(0, 255, n),  # hillshade 9am
            rng.integers(0, 255, n),  # hillshade noon
            rng.integers(0, 255, n),  # hillshade 3pm
            rng.integers(0, 7174, n),  # horizontal distance to fire points
        ],
        axis=1,
    ).astype(np.int64)
    wild = np.zeros((n, 4), np.int64)
    wild[np.arange(n), np.where(rng.random(n) < 0.7, y % 4, rng.integers(0, 4, n))] = 1
    soil = np.zeros((n, 40), np.int64)
    soil[np.arange(n), (5 * (y - 1) + rng.integers(0, 6, n)) % 40] = 1
    rows = np.concatenate([cont, wild, soil, y[:, None]], axis=1)
    out = root / "covertype"
    out.mkdir(parents=True, exist_ok=True)
    text = "\n".join(",".join(map(str, r)) for r in rows.tolist()) + "\n"
    if gz:
        with gzip.open(out / "covtype.data.gz", "wt") as f:
            f.write(text)
    else:
        (out / "covtype.data").write_text(text)
    return root
