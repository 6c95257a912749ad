"""Q-gradient descent against gradient descent, Armijo line search and the best
fixed learning rate, on held-out generated objective nets (paired by net).

    .venv/bin/python benchmarks/qgd_controller.py --policy DIR --episodes 20
    .venv/bin/python benchmarks/qgd_controller.py --policy DIR --train 30   # train first

``DIR`` is a policy from :func:`tune_app.controller.qgd_train.train` (with
``--train N``: N iterations of it on an embedded Ray, written to ``DIR``). Every
controller plays the same nets (seeds from ``qgd_eval.HELD_OUT`` on, never used in
pretraining), the same number of steps from the same start:

* ``plain``: gradient descent at ``alpha_c``;
* ``armijo``: backtracking line search (Hansen's baseline);
* ``best fixed``: gradient descent at the best of ``--grid`` rates *for each net*
  (an oracle: it sees the results of every rate);
* ``qgd``: the policy's greedy actions.

It prints the mean final training loss, the mean objective evaluations, and for
``qgd`` against each baseline the wins/ties/losses over the nets and the paired
Wilcoxon p-value. Only the ``lr`` controller has these baselines.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from tune_app.controller import qgd_eval
from tune_app.controller.qgd_train import load


def paired(a: np.ndarray, b: np.ndarray) -> str:
    """Wins/ties/losses of ``a`` against ``b`` (lower is better) and Wilcoxon's p."""
    wins, losses = int((a < b).sum()), int((a > b).sum())
    ties = len(a) - wins - losses
    p = stats.wilcoxon(a, b, zero_method="zsplit").pvalue if wins + losses else 1.0
    return f"{wins}/{ties}/{losses} p={p:.3g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", type=Path, required=True)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--grid", default="0.03,0.1,0.3,1,3")
    parser.add_argument("--train", type=int, default=0, help="pretrain N iterations first")
    args = parser.parse_args()
    if args.train:
        from tune_app.controller.qgd_train import QGDSettings, train
        from tune_app.run.placement import ensure_ray

        ensure_ray()
        train(QGDSettings(control="lr", iterations=args.train), out=args.policy)
    policy = load(args.policy)
    s = policy.manifest["settings"]
    env: dict[str, Any] = {
        "control": "lr",
        "steps": s["steps"],
        "memory": s["memory"],
        "alpha_c": s["alpha_c"],
    }
    t0 = time.perf_counter()
    runs = qgd_eval.compare(
        {"plain": qgd_eval.plain, "armijo": qgd_eval.armijo, "qgd": qgd_eval.greedy(policy)},
        args.episodes,
        env,
    )
    grid = [float(a) for a in args.grid.split(",")]
    fixed = {
        a: qgd_eval.compare({"plain": qgd_eval.plain}, args.episodes, {**env, "alpha_c": a})[
            "plain"
        ]
        for a in grid
    }
    runs["best fixed"] = [
        min((fixed[a][i] for a in grid), key=lambda r: r["value"]) for i in range(args.episodes)
    ]
    value = {k: np.array([r["value"] for r in v]) for k, v in runs.items()}
    evals = {k: np.mean([r["evaluations"] for r in v]) for k, v in runs.items()}
    print(
        f"lr controller, {args.episodes} held-out nets, {s['steps']} steps, "
        f"alpha_c {s['alpha_c']}, policy {args.policy}"
    )
    print("| controller | final training loss | evaluations | qgd vs it (W/T/L, p) |")
    print("|---|---|---|---|")
    for name in ("plain", "armijo", "best fixed", "qgd"):
        versus = "" if name == "qgd" else paired(value["qgd"], value[name])
        print(f"| {name} | {value[name].mean():.4f} | {evals[name]:.0f} | {versus} |")
    print(f"wall time: {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
