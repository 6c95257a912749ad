"""The seed's own experiment for Q-gradient descent, on real data.

Seed 001 (after Hansen 2016): an MLP ``inputs-100-50-classes`` with sigmoid hidden
layers and a softmax output (cross-entropy), trained by plain full-batch gradient
descent for 100 steps at ``alpha_c = 1`` on CIFAR-10; the lambda experiment trains
on 1,000 examples so that the net overfits within 100 steps.

:func:`seed_problems` gives :class:`~tune_app.controller.qgd.QGDEnv` a
``problems(rng)`` of such nets: each episode draws its training rows (``n_train``
of the data set's pool) and the net's initial weights from its seed; the
validation rows (the ``l2`` controller's value) and the test rows (the report's
accuracy) are fixed per data set. Data sets (:data:`DATASETS`):

* ``cifar10``: the project's CIFAR-10 reader (:func:`~tune_app.tasks.cifar10_mlp.load_cifar10`)
  on a data directory, pixels standardised per channel as the ``cifar10_mlp`` task
  does; real CIFAR-10 when the directory holds it;
* ``digits``, ``breast_cancer``, ``wine``: the real data sets that ship with
  scikit-learn, standardised by the pool's statistics.

``inputs="pixels"`` (image sets only: ``cifar10``, ``digits``) keeps the images' own
scale instead, divided by the largest pixel value (255, 16) into [0, 1] (the seed
does not say whether it standardises its CIFAR-10 pixels).

Pretraining never sees these nets (it draws :func:`~tune_app.controller.qgd.generate`'s).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from tune_app.controller.qgd import NetProblem
from tune_app.errors import ConfigError

DATASETS = ("cifar10", "digits", "breast_cancer", "wine")
#: How inputs are scaled: per-feature standardisation, or pixels / their largest value.
INPUTS = ("standardised", "pixels")
PIXEL_MAX = {"cifar10": 255.0, "digits": 16.0}
HIDDEN = (100, 50)  # the seed's objective net
VAL_ROWS, TEST_ROWS = 1000, 2000  # at most; small data sets: a quarter each
SPLIT_SEED = 20160101


@dataclass
class SeedData:
    """A data set split into a training pool, validation and test rows."""

    name: str
    x_pool: torch.Tensor
    y_pool: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: int


def _cifar10(
    data_dir: Path, standardise: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from tune_app.tasks.cifar10_mlp import CIFAR10MLP, load_cifar10

    mean = torch.tensor(CIFAR10MLP.mean).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10MLP.std).view(1, 3, 1, 1)

    def flat(train: bool) -> tuple[np.ndarray, np.ndarray]:
        x, y = load_cifar10(data_dir, train=train)
        x = x.float() / PIXEL_MAX["cifar10"]
        if standardise:
            x = (x - mean) / std
        return x.reshape(len(x), -1).numpy(), y.numpy()

    x, y = flat(True)
    x_test, y_test = flat(False)
    return x, y, x_test, y_test


def _sklearn(name: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn import datasets

    loader = {
        "digits": datasets.load_digits,
        "breast_cancer": datasets.load_breast_cancer,
        "wine": datasets.load_wine,
    }[name]
    x, y = loader(return_X_y=True)
    return np.asarray(x, dtype=np.float32), np.asarray(y, dtype=np.int64)


def load_data(name: str, data_dir: Path | None = None, inputs: str = INPUTS[0]) -> SeedData:
    """Data set ``name`` split (seeded) into pool, validation and test rows, its
    inputs scaled as ``inputs`` says (:data:`INPUTS`)."""
    if name not in DATASETS:
        raise ConfigError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    if inputs not in INPUTS:
        raise ConfigError(f"inputs must be one of {', '.join(INPUTS)}; got {inputs!r}")
    if inputs == "pixels" and name not in PIXEL_MAX:
        raise ConfigError(
            f"inputs='pixels' is for the image data sets ({', '.join(PIXEL_MAX)}); "
            f"{name!r} has no pixels: use inputs='standardised'"
        )
    standardise = inputs == "standardised"
    rng = np.random.default_rng(SPLIT_SEED)
    if name == "cifar10":
        if data_dir is None:
            raise ConfigError("the cifar10 data set needs a data directory (data_dir)")
        x, y, x_test, y_test = _cifar10(data_dir, standardise)
        order = rng.permutation(len(y))
        n_val = min(VAL_ROWS, len(y) // 5)
        val, pool = order[:n_val], order[n_val:]
        keep = rng.permutation(len(y_test))[:TEST_ROWS]
        x_test, y_test = x_test[keep], y_test[keep]
    else:
        x, y = _sklearn(name)
        order = rng.permutation(len(y))
        quarter = len(y) // 4
        test, val, pool = order[:quarter], order[quarter : 2 * quarter], order[2 * quarter :]
        x_test, y_test = x[test], y[test]
        if standardise:
            mean, std = x[pool].mean(0), x[pool].std(0) + 1e-6
            x, x_test = (x - mean) / std, (x_test - mean) / std
        else:
            x, x_test = x / PIXEL_MAX[name], x_test / PIXEL_MAX[name]

    def t(a: np.ndarray, long: bool = False) -> torch.Tensor:
        return torch.tensor(a, dtype=torch.long if long else torch.float32)

    return SeedData(
        name,
        t(x[pool]),
        t(y[pool], True),
        t(x[val]),
        t(y[val], True),
        t(x_test),
        t(y_test, True),
        int(max(y.max(), y_test.max())) + 1,
    )


def seed_net(inputs: int, classes: int, hidden: tuple[int, ...] = HIDDEN) -> nn.Sequential:
    """``inputs-100-50-classes``, sigmoid hidden layers (the softmax is the loss's)."""
    layers: list[nn.Module] = []
    width = inputs
    for h in hidden:
        layers += [nn.Linear(width, h), nn.Sigmoid()]
        width = h
    layers.append(nn.Linear(width, classes))
    return nn.Sequential(*layers)


def seed_problems(data: SeedData, n_train: int) -> Callable[[np.random.Generator], NetProblem]:
    """``problems(rng)`` for :class:`~tune_app.controller.qgd.QGDEnv`: the seed's
    net, full batch, on ``n_train`` rows of the pool drawn from ``rng``."""
    if n_train < 1:
        raise ConfigError(f"n_train must be at least 1, got {n_train}")

    def make(rng: np.random.Generator) -> NetProblem:
        seed = int(rng.integers(2**31))
        rows = torch.from_numpy(
            rng.choice(len(data.y_pool), min(n_train, len(data.y_pool)), replace=False)
        )
        torch.manual_seed(seed)
        model = seed_net(data.x_pool.shape[1], data.classes)
        return NetProblem(
            model,
            data.x_pool[rows],
            data.y_pool[rows],
            data.x_val,
            data.y_val,
            batch=0,
            seed=seed,
            x_test=data.x_test,
            y_test=data.y_test,
        )

    return make
