"""The pretrained Q-network, loaded safely and evaluated without RLlib.

A checkpoint is a directory with ``q_network.pt`` (a flat ``name -> tensor``
dict, read with ``torch.load(weights_only=True)``: no arbitrary objects are ever
unpickled) and ``manifest.json`` (architecture and provenance). The forward
pass mirrors RLlib's default DQN module (MLP encoder, dueling advantage and
value heads, advantages centred by their mean) and is checked against it in the
tests.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tune_app.controller import mdp
from tune_app.errors import ConfigError

SHIPPED = Path(__file__).parent / "weights"
WEIGHTS_FILE = "q_network.pt"
MANIFEST_FILE = "manifest.json"


def _linear_stack(tensors: dict[str, torch.Tensor], prefix: str) -> list[tuple[Any, Any]]:
    """The (weight, bias) pairs under ``prefix``, in layer order."""
    idx = sorted(
        {
            int(k[len(prefix) :].split(".")[0])
            for k in tensors
            if k.startswith(prefix) and k.endswith(".weight")
        }
    )
    return [(tensors[f"{prefix}{i}.weight"], tensors[f"{prefix}{i}.bias"]) for i in idx]


@dataclass
class QPolicy:
    """Q-values for tuning-MDP states, from a tensors-only checkpoint."""

    encoder: list[tuple[torch.Tensor, torch.Tensor]]
    af: list[tuple[torch.Tensor, torch.Tensor]]
    vf: list[tuple[torch.Tensor, torch.Tensor]]
    manifest: dict[str, Any]
    source: str

    @classmethod
    def load(cls, path: str | Path | None = None) -> QPolicy:
        """Load the checkpoint directory ``path`` (default: the shipped policy)."""
        return _load_cached(str(Path(path).resolve()) if path is not None else str(SHIPPED))

    def q_values(self, obs: np.ndarray) -> np.ndarray:
        """Q-values of shape ``(N_ACTIONS,)`` for one state, or ``(B, N_ACTIONS)``."""
        x = torch.as_tensor(np.asarray(obs, dtype=np.float32))
        single = x.dim() == 1
        if single:
            x = x[None]
        with torch.no_grad():
            q = forward(self.encoder, self.af, self.vf, x)
        out = q.numpy()
        return out[0] if single else out


Layers = list[tuple[torch.Tensor, torch.Tensor]]


def forward(encoder: Layers, af: Layers, vf: Layers, x: torch.Tensor) -> torch.Tensor:
    """RLlib's DQN module forward pass on a batch ``x``: the ReLU encoder, then the
    dueling heads (advantages centred by their mean; no value head: advantages)."""
    h = x
    for w, b in encoder:
        h = torch.relu(h @ w.T + b)
    a = _mlp(af, h)
    return a - a.mean(dim=-1, keepdim=True) + _mlp(vf, h) if vf else a


def _mlp(layers: Layers, h: torch.Tensor) -> torch.Tensor:
    for i, (w, b) in enumerate(layers):
        h = h @ w.T + b
        if i < len(layers) - 1:
            h = torch.relu(h)
    return h


@lru_cache(maxsize=8)
def _load_cached(path: str) -> QPolicy:
    folder = Path(path)
    if folder.is_file():
        folder = folder.parent
    weights, manifest_file = folder / WEIGHTS_FILE, folder / MANIFEST_FILE
    if not weights.is_file() or not manifest_file.is_file():
        raise ConfigError(
            f"controller checkpoint {folder}: expected {WEIGHTS_FILE} and {MANIFEST_FILE} "
            f"there; pass a directory written by `tune-app controller train --out DIR`"
        )
    try:
        manifest = json.loads(manifest_file.read_text())
        tensors = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"controller checkpoint {folder}: cannot read it ({exc})") from None
    if not isinstance(tensors, dict) or not all(
        isinstance(v, torch.Tensor) for v in tensors.values()
    ):
        raise ConfigError(f"controller checkpoint {weights}: not a flat dict of tensors")
    if manifest.get("obs_dim") != mdp.OBS_DIM or manifest.get("n_actions") != mdp.N_ACTIONS:
        raise ConfigError(
            f"controller checkpoint {folder}: made for obs_dim={manifest.get('obs_dim')}, "
            f"n_actions={manifest.get('n_actions')}; this version needs {mdp.OBS_DIM} and "
            f"{mdp.N_ACTIONS}: retrain with `tune-app controller train`"
        )
    return from_tensors(tensors, manifest, str(folder))


def from_tensors(
    tensors: dict[str, torch.Tensor], manifest: dict[str, Any], source: str
) -> QPolicy:
    """A :class:`QPolicy` from a ``name -> tensor`` dict (RLlib's DQN module names)."""
    tensors = {k: v.detach().float() for k, v in tensors.items()}
    encoder = _linear_stack(tensors, "encoder.net.mlp.")
    af = _linear_stack(tensors, "af.net.mlp.")
    vf = _linear_stack(tensors, "vf.net.mlp.")
    if not encoder or not af:
        raise ConfigError(f"controller checkpoint {source}: no encoder/advantage tensors found")
    return QPolicy(encoder, af, vf, manifest, source)
