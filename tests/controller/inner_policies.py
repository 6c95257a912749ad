"""Tensors-only Q-gradient-descent policies for tests: random, constant and rule-based
exports in ``qgd_train``'s format (read back with ``qgd_train.load``), and a
scripted stand-in that plays a fixed list of actions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tune_app.controller.policy import MANIFEST_FILE, WEIGHTS_FILE
from tune_app.controller.qgd import N_FEATURES, action_names
from tune_app.controller.qgd_train import FORMAT

HIDDEN = 4


def export(
    folder: Path,
    control: str,
    tensors: dict[str, torch.Tensor],
    memory: int = 3,
    variant: str = "seed",
) -> Path:
    """Write ``tensors`` (RLlib's DQN module names) with a ``qgd_train`` manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(tensors, folder / WEIGHTS_FILE)
    names = action_names(control, variant)
    manifest = {
        "format": FORMAT,
        "control": control,
        "actions": list(names),
        "obs_dim": N_FEATURES,
        "n_actions": len(names),
        "hidden": [HIDDEN],
        "settings": {"memory": memory, "variant": variant},
    }
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    return folder


def random_policy(folder: Path, control: str, seed: int = 0, variant: str = "seed") -> Path:
    """A random-initialised dueling Q-network."""
    g = torch.Generator().manual_seed(seed)
    n = len(action_names(control, variant))
    return export(
        folder,
        control,
        {
            "encoder.net.mlp.0.weight": torch.randn(HIDDEN, N_FEATURES, generator=g),
            "encoder.net.mlp.0.bias": torch.randn(HIDDEN, generator=g),
            "af.net.mlp.0.weight": torch.randn(n, HIDDEN, generator=g),
            "af.net.mlp.0.bias": torch.randn(n, generator=g),
            "vf.net.mlp.0.weight": torch.randn(1, HIDDEN, generator=g),
            "vf.net.mlp.0.bias": torch.randn(1, generator=g),
        },
        variant=variant,
    )


def improved_policy(folder: Path) -> Path:
    """``lr``: accept when the block's loss is below the anchor's (feature 2 > 0),
    else half."""
    enc = torch.zeros(2, N_FEATURES)
    enc[0, 1], enc[1, 1] = 100.0, -100.0  # h0 = relu(100 f2), h1 = relu(-100 f2)
    af = torch.tensor([[0.0, 1.0], [1.0, 0.0]])  # Q(half) = h1, Q(accept) = h0
    return export(
        folder,
        "lr",
        {
            "encoder.net.mlp.0.weight": enc,
            "encoder.net.mlp.0.bias": torch.zeros(2),
            "af.net.mlp.0.weight": af,
            "af.net.mlp.0.bias": torch.tensor([1e-6, 0.0]),  # a tie: half
        },
    )


class Scripted:
    """Plays ``actions`` in order (a QPolicy stand-in); keeps the states it saw."""

    def __init__(
        self, control: str, actions: list[str], memory: int = 3, variant: str = "seed"
    ) -> None:
        self.actions, self.names = list(actions), action_names(control, variant)
        settings = {"memory": memory, "variant": variant}
        self.manifest: dict[str, Any] = {"control": control, "settings": settings}
        self.seen: list[np.ndarray] = []

    def q_values(self, obs: np.ndarray) -> np.ndarray:
        self.seen.append(np.asarray(obs))
        q = np.zeros(len(self.names), dtype=np.float32)
        q[self.names.index(self.actions.pop(0))] = 1.0
        return q
