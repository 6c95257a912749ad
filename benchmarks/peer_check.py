"""Peer check: the project's Optuna strategies against Optuna used directly.

    python benchmarks/peer_check.py                 # 20 seeds, 10/25/50 trials, all tables

For every tabular benchmark (``digits_tabular`` and the HPOBench tables), the
project's ``optuna`` and ``gp`` strategies (their defaults, driven in-process
through the same searcher objects Tune uses) run against Optuna used directly the
way its documentation does it: a study with the sampler's defaults, seeded, and
an objective that calls ``trial.suggest_categorical`` over each parameter's table
values. Same seeds, same budgets. Regret is normalised by the project's ``random``
at the same budget (1 = random, 0 = optimum).

The check holds when the project's mean normalised regret is no worse than the
direct use's by more than one standard error (of the difference of the two means,
over seeds). Exits 1 if it fails anywhere.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import optuna
import pandas as pd
import torch

from tune_app.benchmarks import BENCHMARKS, get
from tune_app.benchmarks.drive import drive
from tune_app.comparison import report

TABULAR = [n for n in BENCHMARKS if n == "digits_tabular" or n.startswith("hpobench_")]
# project strategy -> the Optuna sampler a user would construct directly
PEERS = {"optuna": optuna.samplers.TPESampler, "gp": optuna.samplers.GPSampler}


def direct(bench_name: str, sampler: str, seed: int, trials: int) -> list[float]:
    """Optuna used directly: ``suggest_categorical`` over the table's values."""
    bench = get(bench_name)
    values = {p.name: list(p.boxes) for p in bench.space.params}

    def objective(trial: optuna.Trial) -> float:
        config = {name: trial.suggest_categorical(name, vals) for name, vals in values.items()}
        return bench.evaluate({**bench.space.fixed, **config}, bench.max_epochs)

    direction = "maximize" if bench.mode == "max" else "minimize"
    study = optuna.create_study(direction=direction, sampler=PEERS[sampler](seed=seed))
    study.optimize(objective, n_trials=trials)
    return [float(t.value) for t in study.trials]


def _one(job: tuple[str, str, str, int, int]) -> list[float]:
    bench_name, how, strategy, seed, trials = job
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if how == "direct":
        return direct(bench_name, strategy, seed, trials)
    return drive(strategy, get(bench_name), trials, seed).values


def best_regret(bench_name: str, values: list[float], budget: int) -> float:
    """Regret of the best of the first ``budget`` values."""
    bench = get(bench_name)
    head = values[:budget]
    best = max(head) if bench.mode == "max" else min(head)
    return bench.regret(best)


def _mean_se(x: Any) -> str:
    return f"{x.mean():.3f} ± {x.std(ddof=1) / math.sqrt(len(x)):.3f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--budgets", default="10,25,50")
    parser.add_argument("--benchmarks", default=",".join(TABULAR))
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    t0 = time.perf_counter()
    budgets = sorted(int(b) for b in args.budgets.split(","))
    top, seeds = budgets[-1], range(args.seeds)
    work = [(b, "project", "random", s, top) for b in args.benchmarks.split(",") for s in seeds]
    for b in args.benchmarks.split(","):
        for strategy in PEERS:
            work += [(b, how, strategy, s, top) for how in ("project", "direct") for s in seeds]
    with ProcessPoolExecutor(args.jobs) as pool:
        runs = dict(zip(work, pool.map(_one, work, chunksize=2), strict=True))
    rows: list[dict[str, Any]] = []
    for bench_name in args.benchmarks.split(","):
        for budget in budgets:

            def regrets(how: str, strategy: str, b: str = bench_name, n: int = budget) -> Any:
                return np.array(
                    [best_regret(b, runs[(b, how, strategy, s, top)], n) for s in seeds]
                )

            base = regrets("project", "random").mean()
            for strategy in PEERS:
                mine = regrets("project", strategy) / base
                theirs = regrets("direct", strategy) / base
                diff = mine - theirs
                se = float(diff.std(ddof=1) / math.sqrt(len(diff)))
                rows.append(
                    {
                        "benchmark": bench_name,
                        "trials": budget,
                        "strategy": strategy,
                        "project": _mean_se(mine),
                        "direct Optuna": _mean_se(theirs),
                        "difference": round(float(diff.mean()), 3),
                        "se of difference": round(se, 3),
                        "holds": bool(diff.mean() <= se + 1e-12),
                    }
                )
    frame = pd.DataFrame(rows)
    print(
        f"## Peer check: {args.seeds} seeds, normalised regret (mean ± standard error; "
        "1 = the project's random, 0 = optimum)\n"
    )
    print(report.markdown_table(frame))
    held = bool(frame["holds"].all())
    print(f"\npeer check {'holds' if held else 'FAILS'} on every row: {held}")
    print(f"wall time: {time.perf_counter() - t0:.0f} s ({args.jobs} processes)")
    return 0 if held else 1


if __name__ == "__main__":
    sys.exit(main())
