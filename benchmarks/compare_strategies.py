"""Every strategy x many seeds x the benchmarks with known optima: the final table.

    python benchmarks/compare_strategies.py                      # searchers, in-process
    python benchmarks/compare_strategies.py --tune --seeds 10     # + all strategies via Tune

Part 1 drives every registered *searcher* (grid, random, optuna, hyperopt, dqn when
registered) in-process (:mod:`tune_app.benchmarks.drive`: the same searcher objects
Tune uses, each proposal evaluated at full fidelity) on every benchmark, at budgets
of N full-length trials, and prints per (benchmark, budget): normalised regret
(mean regret / random's mean regret: 1 = random, 0 = optimum), its spread over
seeds, and the mean rank. Grid runs only where its whole grid fits the budget.

Part 2 (``--tune``) runs *all* strategies, schedulers included, through
:func:`tune_app.compare` (Ray Tune trials, epoch budget, MLflow) on the
multi-fidelity benchmarks, and writes each comparison's full report.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from tune_app import strategies as registry
from tune_app.benchmarks import BENCHMARKS, get
from tune_app.benchmarks.drive import drive
from tune_app.comparison import report


def study_from_traces(bench_name: str, budget: int, traces: list) -> report.Study:
    """A report :class:`~tune_app.comparison.report.Study` from in-process driver traces."""
    bench = get(bench_name)
    runs, hist, trials = [], [], []
    for tr in traces:
        best = tr.best_so_far(bench.mode)
        runs.append(
            {
                "strategy": tr.strategy,
                "seed": tr.seed,
                "best": best[-1],
                "trials": len(tr.values),
                "epochs_spent": len(tr.values) * bench.max_epochs,
                "budget_epochs": budget * bench.max_epochs,
                "wall_time_s": np.nan,
                "run_id": "",
            }
        )
        for i, (v, b, c) in enumerate(zip(tr.values, best, tr.configs, strict=True)):
            hist.append(
                {
                    "strategy": tr.strategy,
                    "seed": tr.seed,
                    "epochs_spent": (i + 1) * bench.max_epochs,
                    "wall_time_s": float(i + 1),
                    "trial_id": str(i),
                    "epoch": bench.max_epochs,
                    bench.metric: v,
                    "best_so_far": b,
                }
            )
            trials.append(
                {
                    "strategy": tr.strategy,
                    "seed": tr.seed,
                    "trial": i + 1,
                    "trial_id": str(i),
                    f"best_{bench.metric}": v,
                    **{f"config.{k}": x for k, x in c.items()},
                }
            )
    return report.Study(
        bench.metric,
        bench.mode,
        pd.DataFrame(runs),
        pd.DataFrame(hist),
        pd.DataFrame(trials),
        optimum=bench.optimum,
        title=f"{bench_name}, {budget} full trials",
    )


def part1(names: list[str], seeds: int, budgets: list[int], out: Path) -> pd.DataFrame:
    rows = []
    for bench_name in BENCHMARKS:
        bench = get(bench_name)
        for budget in budgets:
            traces = []
            t0 = time.perf_counter()
            for strategy in names:
                if strategy == "grid" and bench.space.grid_size > budget:
                    continue  # the grid would be cut short: not a grid search
                # dqn's state includes the budget fraction used: tell it the budget
                opts = {"horizon": budget} if strategy == "dqn" else None
                for seed in range(seeds):
                    traces.append(drive(strategy, bench, budget, seed, opts))
            study = study_from_traces(bench_name, budget, traces)
            table = report.final_table(study, "random")
            # spread of the normalised regret over seeds
            base = float(
                report.regret(study, study.runs[study.runs.strategy == "random"]["best"]).mean()
            )
            for _, row in table.iterrows():
                sub = study.runs[study.runs.strategy == row["strategy"]]
                norm = (
                    report.regret(study, sub["best"]) / base if base > 0 else sub["best"] * np.nan
                )
                rows.append(
                    {
                        "benchmark": bench_name,
                        "budget (full trials)": budget,
                        "strategy": row["strategy"],
                        "seeds": int(row["seeds"]),
                        "normalised regret": row["normalised regret"],
                        "std": float(norm.std(ddof=1)),
                        "mean rank": row["mean rank"],
                    }
                )
            skipped = (
                " (grid skipped: larger than the budget)"
                if "grid" in names and bench.space.grid_size > budget
                else ""
            )
            print(
                f"{bench_name} @ {budget} trials: {time.perf_counter() - t0:.1f} s{skipped}",
                flush=True,
            )
    frame = pd.DataFrame(rows)
    frame.to_csv(out / "searchers.csv", index=False)
    return frame


def part2(
    seeds: int,
    budget_trials: int,
    out: Path,
    benchmarks: list[str],
    strategies: list[str] | None = None,
) -> None:
    from tune_app import compare

    for bench_name in benchmarks:
        bench = get(bench_name)
        fits = bench.space.grid_size <= budget_trials
        names = [n for n in strategies or registry.names() if n != "grid" or fits]
        comparison = compare(
            names,
            bench.space,
            task=bench,
            seeds=range(seeds),
            budget_epochs=budget_trials * bench.max_epochs,
            num_workers=0,
            experiment=f"benchmark-{bench_name}",
            report_dir=out / f"tune-{bench_name}",
            verbose=False,
        )
        study = report.from_comparison(comparison, optimum=bench.optimum, title=bench_name)
        table = report.final_table(study, "random")
        cols = [
            "strategy",
            "seeds",
            "normalised regret",
            "mean rank",
            "trials mean",
            "epochs spent mean",
        ]
        print(f"\n## {bench_name}: all strategies through Ray Tune, {budget_trials} full trials")
        print(report.markdown_table(table[cols]))
        print(f"report: {comparison.report_path}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budgets", default="10,30", help="budgets in full-length trials")
    parser.add_argument("--strategies", help="searchers for part 1 (default: all registered)")
    parser.add_argument("--tune", action="store_true", help="also run part 2 through Ray Tune")
    parser.add_argument("--tune-budget", type=int, default=10, help="part 2 budget (full trials)")
    parser.add_argument(
        "--tune-benchmarks", default="branin_mf,digits_tabular", help="part 2 benchmarks"
    )
    parser.add_argument(
        "--tune-strategies",
        help="strategies for part 2 (default: all registered; include random, the baseline)",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmark_results"))
    args = parser.parse_args()
    if args.seeds < 2:
        parser.error("--seeds must be >= 2 for spread and ranks")
    budgets = [int(b) for b in args.budgets.split(",")]
    names = args.strategies.split(",") if args.strategies else registry.names("searcher")
    if "random" not in names:
        parser.error("part 1 needs 'random' (the normalising baseline)")
    args.out.mkdir(parents=True, exist_ok=True)
    frame = part1(names, args.seeds, budgets, args.out)
    print(
        f"\n## Searchers in-process, {args.seeds} seeds "
        "(normalised regret: 1 = random, 0 = optimum)"
    )
    print(report.markdown_table(frame))
    if args.tune:
        tune_names = args.tune_strategies.split(",") if args.tune_strategies else None
        if tune_names is not None and "random" not in tune_names:
            parser.error("part 2 needs 'random' (the normalising baseline)")
        part2(args.seeds, args.tune_budget, args.out, args.tune_benchmarks.split(","), tune_names)
    return 0


if __name__ == "__main__":
    sys.exit(main())
