"""A baseline for the inner controller: a policy that always takes one action.

    python benchmarks/constant_policy.py --like benchmarks/policies/qgd_lr_block \\
        --action grow --out DIR

It copies ``--like``'s manifest (control, actions, settings) and network shapes,
with the advantage head's weights zeroed and its bias 1 on ``--action``, 0 on the
others, so every decision is ``--action`` whatever the features. ``inner_service.py
--policy DIR`` then measures what a trained policy adds over a fixed rule (for
example ``grow``: double the rate after every block, within the space's range).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's tune_app

from tune_app.controller.policy import MANIFEST_FILE, WEIGHTS_FILE

HEAD = "af.net.mlp."  # the advantage head (RLlib's DQN module names)


def write(like: Path, action: str, out: Path) -> Path:
    """``out``: ``like``'s policy made to choose ``action`` at every decision."""
    manifest = json.loads((like / MANIFEST_FILE).read_text())
    actions = list(manifest["actions"])
    if action not in actions:
        raise SystemExit(f"--action {action!r}: {like} chooses among {', '.join(actions)}")
    tensors = torch.load(like / WEIGHTS_FILE, weights_only=True)
    layers = sorted({k[len(HEAD) :].split(".")[0] for k in tensors if k.startswith(HEAD)}, key=int)
    last = f"{HEAD}{layers[-1]}"
    tensors[f"{last}.weight"] = torch.zeros_like(tensors[f"{last}.weight"])
    bias = torch.zeros_like(tensors[f"{last}.bias"])
    bias[actions.index(action)] = 1.0
    tensors[f"{last}.bias"] = bias
    out.mkdir(parents=True, exist_ok=True)
    torch.save(tensors, out / WEIGHTS_FILE)
    manifest["constant_action"] = action
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--like", type=Path, required=True, help="a policy directory to copy")
    ap.add_argument("--action", required=True, help="the action to take at every decision")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    if args.out.resolve() == args.like.resolve():
        raise SystemExit("--out must differ from --like")
    shutil.rmtree(args.out, ignore_errors=True)
    print(write(args.like, args.action, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
