"""Seeded generator of cheap synthetic tuning tasks for pretraining the controller.

A :class:`SyntheticTask` is a response surface over a grid of value boxes (1 to
:data:`~tune_app.controller.mdp.MAX_PARAMS` parameters, 3 to 16 boxes each) that
looks like a real tuning problem: an anisotropic rotated bowl (parameter
interactions, some parameters barely matter, optima often on an edge of the
range), extra local minima, ripples, plateaus (quantised values), cliffs (a
region that diverges, like a too-large learning rate), observation noise, and
learning-curve shaped multi-epoch results (what a trial stopped early reports).

Values are losses (lower is better), normalised so the grid's best value is 0
and its median is 1. The benchmarks of :mod:`tune_app.benchmarks` are fixed
functions and a lookup table that are never generated here: pretraining and
benchmark tasks are disjoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

BOX_CHOICES = (3, 4, 5, 6, 8, 10, 12, 16)
MAX_GRID = 50_000  # grid points evaluated exactly to know the optimum


@dataclass
class SyntheticTask:
    """One generated tuning task: noiseless surface over the boxes + learning curves."""

    n_boxes: tuple[int, ...]
    max_epochs: int
    noise: float
    p_early_stop: float
    seed: int
    _spec: dict[str, Any] = field(repr=False, default_factory=dict)
    _grid_values: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))

    @property
    def n_params(self) -> int:
        """Number of parameters."""
        return len(self.n_boxes)

    @property
    def grid_size(self) -> int:
        """Number of configurations."""
        return math.prod(self.n_boxes)

    def _raw(self, idx: np.ndarray) -> np.ndarray:
        """Unnormalised final-epoch loss for an (N, d) array of box indices."""
        s = self._spec
        u = idx / (np.asarray(self.n_boxes, dtype=float) - 1.0)
        z = ((u - s["centre"]) * s["scale"]) @ s["rotation"].T
        f = (np.abs(z) ** s["power"]).sum(axis=1)
        for centre, depth, width in s["wells"]:
            f = f - depth * np.exp(-(((u - centre) / width) ** 2).sum(axis=1))
        f = f + s["ripple"] * np.sin(2 * np.pi * s["freq"] * u + s["phase"]).sum(axis=1)
        return np.asarray(f, dtype=float)

    def true_values(self, idx: np.ndarray) -> np.ndarray:
        """Normalised noiseless final losses (grid best 0, grid median 1)."""
        s = self._spec
        f = (self._raw(np.atleast_2d(idx)) - s["lo"]) / s["spread"]
        if s["levels"]:
            f = np.floor(f * s["levels"]) / s["levels"]
        if s["cliff"] is not None:
            k, threshold, side = s["cliff"]
            u = np.atleast_2d(idx)[:, k] / (self.n_boxes[k] - 1.0)
            hit = u > threshold if side > 0 else u < threshold
            f = np.where(hit, s["cliff_value"], f)
        return np.asarray(f, dtype=float)

    optimum: float = 0.0  # best noiseless value on the grid (set by generate)
    median: float = 1.0  # median noiseless value on the grid (set by generate)

    def true_value(self, idx: tuple[int, ...]) -> float:
        """Noiseless final loss of one configuration (a lookup in the grid's values)."""
        flat = int(np.ravel_multi_index(idx, self.n_boxes))
        return float(self._grid_values[flat])

    def curve(self, idx: tuple[int, ...], rng: np.random.Generator) -> list[float]:
        """Observed loss after each epoch 1..max_epochs: a noisy learning curve."""
        s = self._spec
        final = self.true_value(idx)
        u = np.asarray(idx, dtype=float) / (np.asarray(self.n_boxes, dtype=float) - 1.0)
        tau = s["tau0"] * math.exp(float(s["tau_dir"] @ (u - 0.5)))
        out = []
        for e in range(1, self.max_epochs + 1):
            gap = math.exp(-(e - 1) / tau) if e < self.max_epochs else 0.0
            noise = self.noise * (1.0 + 2.0 * gap) * float(rng.standard_normal())
            out.append(final + s["start_gap"] * gap + noise)
        return out

    def observe(self, idx: tuple[int, ...], rng: np.random.Generator) -> float:
        """What a trial reports: its last epoch, or an earlier one if stopped early."""
        values = self.curve(idx, rng)
        if self.max_epochs > 1 and rng.random() < self.p_early_stop:
            return values[int(rng.integers(0, self.max_epochs - 1))]
        return values[-1]


def _orthogonal(rng: np.random.Generator, d: int, mix: float) -> np.ndarray:
    """A rotation between the identity (mix=0) and a random orthogonal matrix."""
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    q = q * np.sign(np.diag(r))
    m = (1 - mix) * np.eye(d) + mix * q
    q2, _ = np.linalg.qr(m)
    return np.asarray(q2 * np.sign(np.diag(q2)), dtype=float)


def generate(seed: int, max_params: int = 8) -> SyntheticTask:
    """A random synthetic tuning task, fully determined by ``seed``."""
    rng = np.random.default_rng(seed)
    weights = np.array([1, 3, 3, 3, 3, 2, 2, 2][:max_params], dtype=float)
    d = int(rng.choice(np.arange(1, max_params + 1), p=weights / weights.sum()))
    boxes = [int(rng.choice(BOX_CHOICES)) for _ in range(d)]
    while math.prod(boxes) > MAX_GRID:
        boxes[int(np.argmax(boxes))] //= 2
        boxes = [max(3, b) for b in boxes]
    centre = rng.uniform(0, 1, d)
    edge = rng.random(d) < 0.25  # optimum on a range edge ("more is better")
    centre[edge] = rng.choice([0.0, 1.0], size=int(edge.sum()))
    scale = np.exp(rng.uniform(np.log(0.5), np.log(4.0), d))
    irrelevant = rng.random(d) < 0.2
    scale[irrelevant] = 0.05
    wells = [
        (rng.uniform(0, 1, d), rng.uniform(0.2, 1.5), rng.uniform(0.08, 0.35))
        for _ in range(int(rng.integers(0, 4)))
    ]
    spec: dict[str, Any] = {
        "centre": centre,
        "scale": scale,
        "rotation": _orthogonal(rng, d, float(rng.uniform(0, 1))),
        "power": float(rng.choice([1.0, 2.0, 2.0, 3.0])),
        "wells": wells,
        "ripple": float(rng.uniform(0, 0.15)) if rng.random() < 0.5 else 0.0,
        "freq": rng.uniform(1.0, 4.0, d),
        "phase": rng.uniform(0, 2 * np.pi, d),
        "lo": 0.0,
        "spread": 1.0,
        "levels": 0,
        "cliff": None,
        "cliff_value": 0.0,
        "tau0": float(rng.uniform(0.5, 4.0)),
        "tau_dir": rng.normal(0, 1.0, d),
        "start_gap": float(rng.uniform(0.3, 3.0)),
    }
    task = SyntheticTask(
        n_boxes=tuple(boxes),
        max_epochs=int(rng.choice([1, 3, 5, 9])),
        noise=float(rng.choice([0.0, 0.01, 0.03, 0.08])),
        p_early_stop=float(rng.choice([0.0, 0.0, 0.3])),
        seed=seed,
        _spec=spec,
    )
    grid = np.stack(
        np.meshgrid(*[np.arange(b, dtype=float) for b in boxes], indexing="ij"), -1
    ).reshape(-1, d)
    raw = task._raw(grid)
    lo, med = float(raw.min()), float(np.median(raw))
    spec["lo"], spec["spread"] = lo, max(med - lo, 1e-9)
    if rng.random() < 0.3:
        spec["levels"] = int(rng.integers(2, 8))  # plateaus: a few quantised levels
    if rng.random() < 0.3:
        k = int(rng.integers(0, d))
        threshold = float(rng.uniform(0.6, 0.9))
        side = 1 if centre[k] < threshold else -1
        if side < 0:
            threshold = 1.0 - threshold
        spec["cliff"] = (k, threshold, side)
        spec["cliff_value"] = float(rng.uniform(2.0, 5.0))  # diverged: much worse than median
    task._grid_values = task.true_values(grid)
    task.optimum = float(task._grid_values.min())
    task.median = float(np.median(task._grid_values))
    return task
