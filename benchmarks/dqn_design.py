"""Choose the ``dqn`` strategy's options (``design``, ``start``) on held-out generated tasks.

Each task is a :func:`tune_app.controller.surfaces.generate` surface (the
pretraining distribution) with seeds from :data:`FIRST_TASK` on. Pretraining
draws its task seeds uniformly from [0, 2**31): the shipped policy's ~12,000
tasks (demonstrations, training, checkpoint selection) met one of 200 such seeds
with probability about 0.1%. Every candidate variant (``dqn`` options, e.g.
``design=5`` or ``start=default,epsilon=0``; a ``design`` size only below the
budget) runs the ``dqn`` searcher in-process on every task, at every budget, for
``--seeds`` seeds; random search runs on the same tasks. The score is the
normalised regret of the benchmark tables, ``(best - optimum) / mean random
regret``, per task, pooled over tasks where random search's mean regret is not 0.

This is the *choice* set: the benchmarks of :mod:`tune_app.benchmarks` (scored by
``benchmarks/dqn_benchmark.py``) report the chosen value and are never used here.

    python benchmarks/dqn_design.py --tasks 200 --seeds 5 --variants design=1 design=5 start=default
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qgd_controller import paired

import tune_app  # noqa: F401  (sets Ray's environment before anything imports ray)
from tune_app.benchmarks.base import Benchmark
from tune_app.benchmarks.drive import drive, variant
from tune_app.controller.surfaces import SyntheticTask, generate
from tune_app.spaces import SearchSpace

FIRST_TASK = 7_000_000  # generated-task seeds from here on are this choice set's


class GeneratedBenchmark(Benchmark):
    """A generated surface as a known-optimum benchmark (noiseless final values)."""

    metrics = ("value",)

    def __init__(self, task: SyntheticTask) -> None:
        self.task = task
        self.name = f"generated-{task.seed}"
        self.optimum = task.optimum

    @property
    def space(self) -> SearchSpace:
        params = {
            f"p{i}": {"type": "uniform", "low": 0.0, "high": 1.0, "boxes": n}
            for i, n in enumerate(self.task.n_boxes)
        }
        return SearchSpace.from_dict(
            {
                "task": self.name,
                "metric": "value",
                "mode": "min",
                "max_epochs": 1,
                "params": params,
            },
            source=f"<{self.name}>",
        )

    def evaluate(self, config: Mapping[str, Any], epoch: int) -> float:
        idx = tuple(
            round(float(config[f"p{i}"]) * (n - 1)) for i, n in enumerate(self.task.n_boxes)
        )
        return self.task.true_value(idx)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=60)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budgets", default="10,25,50")
    parser.add_argument(
        "--variants",
        nargs="+",
        default=["design=1", "design=3", "design=5", "design=8", "design=10", "design=15"],
        help="dqn options per variant, KEY=VALUE[,KEY=VALUE] (design sizes only below the budget)",
    )
    parser.add_argument("--first-task", type=int, default=FIRST_TASK)
    args = parser.parse_args(argv)
    budgets = [int(b) for b in args.budgets.split(",")]
    variants = {v: variant("dqn@" + v)[1] for v in args.variants}
    start = time.time()
    # scores[(variant, budget)] = per-task mean normalised regret
    scores: dict[tuple[str, int], list[float]] = {}
    skipped = 0
    for t in range(args.tasks):
        bench = GeneratedBenchmark(generate(args.first_task + t))
        top = max(budgets)
        random_curves = [
            drive("random", bench, top, s).best_so_far("min") for s in range(args.seeds)
        ]
        for b in budgets:
            ref = float(np.mean([bench.regret(c[b - 1]) for c in random_curves]))
            if ref <= 0:
                skipped += 1
                continue
            for name, given in variants.items():
                if given.get("design", 1) >= b:
                    continue
                opts = {"horizon": b, **given}
                best = [
                    drive("dqn", bench, b, s, options=opts).best_so_far("min")[-1]
                    for s in range(args.seeds)
                ]
                scores.setdefault((name, b), []).append(
                    float(np.mean([bench.regret(v) for v in best])) / ref
                )
    print("normalised regret per task, mean ± standard error over tasks [median]")
    width = max(len("variant"), *(len(v) for v in variants))
    print(f"{'variant':>{width}s} " + " ".join(f"{'budget ' + str(b):>24s}" for b in budgets))
    for name in variants:
        cells = []
        for b in budgets:
            x = np.asarray(scores.get((name, b), [math.nan]))
            se = x.std(ddof=1) / math.sqrt(len(x)) if len(x) > 1 else 0.0
            cells.append(f"{x.mean():8.3f} ± {se:5.3f} [{np.median(x):5.3f}]")
        print(f"{name:>{width}s} " + " ".join(cells))
    first = next(iter(variants))
    print(f"each variant against {first} per task (wins/ties/losses, paired Wilcoxon p)")
    for name in list(variants)[1:]:
        cells = []
        for b in budgets:
            mine, base = scores.get((name, b)), scores.get((first, b))
            ok = mine is not None and base is not None and len(mine) == len(base)
            pair = paired(np.asarray(mine), np.asarray(base)) if ok else "-"
            cells.append(f"{pair:>24s}")
        print(f"{name:>{width}s} " + " ".join(cells))
    print(
        f"({args.tasks} generated tasks from seed {args.first_task}, {args.seeds} seeds each; "
        f"{skipped} (task, budget) cells skipped where random search always found the "
        f"optimum; random = 1.0; {time.time() - start:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
