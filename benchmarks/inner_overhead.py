"""What the inner controller (``--inner-controller``) costs per optimizer step.

    .venv/bin/python benchmarks/inner_overhead.py --steps 300 --repeats 5 --every 10,2

Side by side in one process, on CPU, with the same model, optimizer (Adam) and
mini-batches: the training step alone (forward, backward, ``optimizer.step()``)
against the same step followed by :meth:`InnerController.after_step`, for each
``K`` in ``--every`` and a policy that always accepts (a snapshot of the weights
and the optimizer's state every K steps) or always halves (a restore every K
steps: the worst case). Runs alternate, ``--repeats`` times. Times are the
thread's CPU time (``time.thread_time``, torch on one thread), which other
processes on a shared machine disturb far less than wall time. Printed: the
median microseconds per step plain and controlled, their ratio, and the
controller's own share of the controlled run (its ``after_step`` calls, timed
inside the same run). Models: the ``digits_mlp``
task's default MLP (64-64-10 on 8x8 digits) and the seed's 3072-100-50-10
sigmoid net (CIFAR-10 sized inputs), on random data: only the time matters.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from tune_app.controller import qgd_train
from tune_app.controller.inner import InnerController, resolve
from tune_app.controller.policy import MANIFEST_FILE, WEIGHTS_FILE
from tune_app.controller.qgd import ACTIONS, N_FEATURES

MODELS: dict[str, tuple[int, Callable[[], nn.Module]]] = {
    "digits_mlp 64-64-10": (
        64,
        lambda: nn.Sequential(
            nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)
        ),
    ),
    "seed 3072-100-50-10": (
        3072,
        lambda: nn.Sequential(
            nn.Linear(3072, 100), nn.Sigmoid(), nn.Linear(100, 50), nn.Sigmoid(), nn.Linear(50, 10)
        ),
    ),
}


def constant_policy(folder: Path, action: str) -> Path:
    """A tensors-only ``lr`` policy export whose greedy action is always ``action``."""
    folder.mkdir(parents=True, exist_ok=True)
    actions = ACTIONS["lr"]
    bias = torch.zeros(len(actions))
    bias[actions.index(action)] = 1.0
    tensors = {
        "encoder.net.mlp.0.weight": torch.zeros(4, N_FEATURES),
        "encoder.net.mlp.0.bias": torch.zeros(4),
        "af.net.mlp.0.weight": torch.zeros(len(actions), 4),
        "af.net.mlp.0.bias": bias,
    }
    torch.save(tensors, folder / WEIGHTS_FILE)
    manifest = {
        "format": qgd_train.FORMAT,
        "control": "lr",
        "actions": list(actions),
        "obs_dim": N_FEATURES,
        "n_actions": len(actions),
        "settings": {"memory": 5},
    }
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    return folder


def time_steps(
    model_name: str, steps: int, controller: tuple[int, Path] | None
) -> tuple[float, float]:
    """CPU seconds per optimizer step, in all and in the controller, for ``steps``
    steps after 10 warm-up steps."""
    width, build = MODELS[model_name]
    torch.manual_seed(0)
    model = build()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    ctl = InnerController(resolve("lr", controller[0], str(controller[1])), model, opt) if (
        controller
    ) else None  # fmt: skip
    g = torch.Generator().manual_seed(1)
    data = [
        (torch.randn(64, width, generator=g), torch.randint(0, 10, (64,), generator=g))
        for _ in range(16)
    ]
    start, inside = 0.0, 0.0
    for i in range(steps + 10):
        if i == 10:
            start, inside = time.thread_time(), 0.0
        x, y = data[i % len(data)]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        if ctl is not None:
            before = time.thread_time()
            ctl.after_step(loss)
            inside += time.thread_time() - before
        _ = loss.item()  # the loop reads it every step too
    return (time.thread_time() - start) / steps, inside / steps


def main() -> None:
    """Print one row per (model, K, policy): plain and controlled us/step, ratio."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--every", default="10,2", help="values of K, comma-separated")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    everies = [int(k) for k in args.every.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        policies = {a: constant_policy(Path(tmp) / a, a) for a in ("accept", "half")}
        variants: list[tuple[str, tuple[int, Path] | None]] = [("plain", None)]
        variants += [(f"K={k} {a}", (k, p)) for k in everies for a, p in policies.items()]
        print(f"{args.steps} Adam steps per run, batch 64, {args.repeats} alternating repeats, "
              f"{args.threads} thread(s); median CPU us/step")  # fmt: skip
        print("| model | controller | us/step | plain us/step | ratio | controller's share |")
        print("|---|---|---|---|---|---|")
        for model_name in MODELS:
            times: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in variants}
            for _ in range(args.repeats):
                for name, controller in variants:
                    times[name].append(time_steps(model_name, args.steps, controller))
            plain = statistics.median(t for t, _ in times["plain"])
            for name, _ in variants[1:]:
                t = statistics.median(t for t, _ in times[name])
                share = statistics.median(c / t for t, c in times[name])
                print(
                    f"| {model_name} | {name} | {t * 1e6:.0f} | {plain * 1e6:.0f} | "
                    f"{t / plain:.3f} | {share:.1%} |"
                )


if __name__ == "__main__":
    main()
