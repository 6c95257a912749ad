"""Reading a Q-gradient-descent policy that :func:`tune_app.controller.qgd_train.export`
wrote (tensors only), apart from the training code, so the training loop's
controller (:mod:`tune_app.controller.inner`) can load one without importing RLlib's
side of the package."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tune_app.controller.policy import MANIFEST_FILE, WEIGHTS_FILE, QPolicy, from_tensors
from tune_app.errors import ConfigError

FORMAT = "tune_app.qgd/1"


def load(folder: str | Path) -> QPolicy:
    """A Q-gradient-descent policy exported by :func:`export` (tensors only)."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
        tensors = torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"Q-gradient-descent policy {folder}: cannot read it ({exc})") from None
    if manifest.get("format") != FORMAT:
        raise ConfigError(
            f"{folder} is not a Q-gradient-descent policy (format {manifest.get('format')!r})"
        )
    return from_tensors(tensors, manifest, str(folder))


def variant_of(policy: QPolicy) -> str:
    """The actions' variant in a policy's manifest ("seed" when it names none)."""
    return str((policy.manifest.get("settings") or {}).get("variant", "seed"))
