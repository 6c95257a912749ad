"""The DQN controller against random search and TPE on benchmarks with known optima.

Every strategy runs in-process (:func:`tune_app.benchmarks.drive.drive`) on each
benchmark for ``--seeds`` seeds. ``random``, ``optuna`` and ``hyperopt`` do not
know the budget, so one run of the largest budget gives every smaller budget as a
prefix; ``dqn`` is told the budget (its ``horizon`` option feeds the "budget
used" state feature), so it runs once per budget.

Normalised regret = ``(best - optimum) / mean over seeds of (random_best - optimum)``
at the same budget (random search scores 1.0 on average; 0 is the optimum). The
table prints its mean, the standard error over seeds, and the mean rank of each
strategy among the four (1 = best, ties shared) per (benchmark, budget, seed).

None of these benchmarks is in the controller's pretraining distribution: it was
pretrained only on tasks from :func:`tune_app.controller.surfaces.generate`.

    python benchmarks/dqn_benchmark.py --seeds 10 --budgets 10,25,50
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import tune_app  # noqa: F401  (sets Ray's environment before anything imports ray)
from tune_app.benchmarks import BENCHMARKS, get
from tune_app.benchmarks.drive import drive

STRATEGIES = ("dqn", "random", "optuna", "hyperopt")


def regrets(
    bench_name: str, strategies: list[str], seeds: int, budgets: list[int], options: dict
) -> dict[tuple[str, int], list[float]]:
    """Best-so-far regret per (strategy, budget), one value per seed."""
    bench = get(bench_name)
    out: dict[tuple[str, int], list[float]] = {}
    top = max(budgets)
    for strategy in strategies:
        for seed in range(seeds):
            if strategy == "dqn":
                for b in budgets:
                    opts = {"horizon": b, **options}
                    trace = drive("dqn", bench, b, seed, options=opts)
                    best = trace.best_so_far(bench.mode)[-1]
                    out.setdefault((strategy, b), []).append(bench.regret(best))
            else:
                trace = drive(strategy, bench, top, seed)
                curve = trace.best_so_far(bench.mode)
                for b in budgets:
                    out.setdefault((strategy, b), []).append(bench.regret(curve[b - 1]))
    return out


def ranks(rows: dict[str, list[float]]) -> dict[str, float]:
    """Mean rank per strategy across seeds (1 = lowest regret, ties averaged)."""
    names = list(rows)
    table = np.array([rows[n] for n in names])  # strategies x seeds
    from scipy.stats import rankdata

    r = np.apply_along_axis(rankdata, 0, table)
    return {n: float(r[i].mean()) for i, n in enumerate(names)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budgets", default="10,25,50")
    # branin_mf evaluated at full fidelity (all the in-process driver does) is branin.
    default = ",".join(b for b in BENCHMARKS if b != "branin_mf")
    parser.add_argument("--benchmarks", default=default)
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--checkpoint", default=None, help="controller checkpoint directory")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument(
        "--manifest",
        default=None,
        help="record the results in this controller manifest.json (key 'benchmark')",
    )
    args = parser.parse_args(argv)
    budgets = sorted(int(b) for b in args.budgets.split(","))
    strategies = args.strategies.split(",")
    options = {"checkpoint": args.checkpoint} if args.checkpoint else {}
    start = time.time()
    results: list[dict[str, Any]] = []
    header = (
        f"{'benchmark':15s} {'budget':>6s} "
        + " ".join(f"{s + ' regret':>17s}" for s in strategies)
        + "   mean rank ("
        + ", ".join(strategies)
        + ")"
    )
    print(header)
    for name in args.benchmarks.split(","):
        table = regrets(name, strategies, args.seeds, budgets, options)
        for b in budgets:
            ref = float(np.mean(table[("random", b)])) if "random" in strategies else 1.0
            ref = ref if ref > 0 else math.nan
            rows = {s: table[(s, b)] for s in strategies}
            mean_rank = ranks(rows)
            cells = []
            for s in strategies:
                norm = np.asarray(rows[s]) / ref
                se = float(norm.std(ddof=1) / math.sqrt(len(norm))) if len(norm) > 1 else 0.0
                cells.append(f"{norm.mean():8.3f} ± {se:5.3f} ")
                results.append(
                    {
                        "benchmark": name,
                        "budget": b,
                        "strategy": s,
                        "normalised_regret_mean": float(norm.mean()),
                        "normalised_regret_se": se,
                        "mean_rank": mean_rank[s],
                        "raw_regret": [float(x) for x in rows[s]],
                    }
                )
            print(
                f"{name:15s} {b:6d} "
                + " ".join(cells)
                + "   "
                + ", ".join(f"{mean_rank[s]:.2f}" for s in strategies),
                flush=True,
            )
    print(f"({args.seeds} seeds per cell; {time.time() - start:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    if args.manifest:
        from dataclasses import asdict

        from tune_app.controller.pretrain import update_manifest
        from tune_app.strategies.options import DQNOptions

        benchmark = {
            "command": "python benchmarks/dqn_benchmark.py " + " ".join(argv or sys.argv[1:]),
            "dqn_options": {**asdict(DQNOptions()), **options, "horizon": "the budget"},
            "normalised_regret": "(best - optimum) / mean over seeds of (random_best - optimum)",
            "results": [{k: v for k, v in r.items() if k != "raw_regret"} for r in results],
        }
        update_manifest(Path(args.manifest), {"benchmark": benchmark})
    return 0


if __name__ == "__main__":
    sys.exit(main())
