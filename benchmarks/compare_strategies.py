"""Every strategy x many seeds x the benchmarks with known optima: the final table.

    python benchmarks/compare_strategies.py                      # searchers, in-process
    python benchmarks/compare_strategies.py --continuous         # the same, discrete ignored
    python benchmarks/compare_strategies.py --tune --seeds 10     # + all strategies via Tune
    python benchmarks/compare_strategies.py --strategies random,dqn,dqn@design=1  # variants

Part 1 drives every registered *searcher* in-process
(:mod:`tune_app.benchmarks.drive`: the same searcher objects Tune uses, each
proposal evaluated at full fidelity) on every known-optimum benchmark, 20 seeds,
at budgets of 10, 25 and 50 full-length trials, in parallel processes. A searcher
that ignores the budget runs once at the largest budget and is read at each
budget (its first N proposals are the same either way); ``dqn`` runs per budget.
Per (benchmark, budget) it prints the normalised regret (mean regret / random's
mean regret: 1 = random, 0 = optimum), its standard error, the mean rank, the
mean number of duplicate evaluations (a table cell evaluated again) and the
paired Wilcoxon test against random. Grid runs only where its whole grid fits.

Part 2 (``--tune``) runs *all* strategies, schedulers included, through
:func:`tune_app.compare` (Ray Tune trials, epoch budget, MLflow) on the
multi-fidelity benchmarks, and writes each comparison's full report.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from tune_app import strategies as registry
from tune_app.benchmarks import BENCHMARKS, get
from tune_app.benchmarks.drive import Trace, drive, variant
from tune_app.comparison import report
from tune_app.spaces import SearchSpace


def study_from_traces(bench_name: str, budget: int, traces: list[Trace]) -> report.Study:
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


def continuous(space: SearchSpace) -> SearchSpace:
    """``space`` with every ``discrete`` declaration removed (the old mapping)."""
    return replace(space, params=tuple(replace(p, discrete=False) for p in space.params))


def _budget_free(strategy: str) -> bool:
    """Whether a searcher ignores the budget, so one long run truncated serves all budgets."""
    return variant(strategy)[0] != "dqn"  # dqn's state includes the fraction of budget used


def _one(job: tuple[str, str, int, int, bool]) -> Trace:
    """One driven search (run in a worker process)."""
    bench_name, strategy, seed, budget, as_continuous = job
    torch.set_num_threads(1)
    bench = get(bench_name)
    space = continuous(bench.space) if as_continuous else None
    name, opts = variant(strategy)
    if name == "dqn":
        opts = {"horizon": budget, **opts}
    return drive(name, bench, budget, seed, opts, name=strategy, space=space)


def cell_duplicates(space: SearchSpace, trace: Trace, upto: int) -> int:
    """Evaluations (of the first ``upto``) of a table cell the search had already evaluated."""
    if not space.is_finite:
        return 0
    cells = [space.cell(c) for c in trace.configs[:upto]]
    return len(cells) - len(set(cells))


def truncated(trace: Trace, budget: int) -> Trace:
    """The first ``budget`` evaluations of ``trace``."""
    return Trace(trace.strategy, trace.seed, trace.configs[:budget], trace.values[:budget])


def part1(
    names: list[str],
    benchmarks: list[str],
    seeds: int,
    budgets: list[int],
    out: Path,
    jobs: int,
    as_continuous: bool,
) -> pd.DataFrame:
    """Every searcher x seed on every benchmark in-process; a row per (bench, budget, strategy)."""
    top = max(budgets)
    space = {b: get(b).space for b in benchmarks}  # the declared (discrete) spaces
    work: list[tuple[str, str, int, int, bool]] = []
    for bench_name in benchmarks:
        for strategy in names:
            if strategy == "grid" and space[bench_name].grid_size > top:
                continue  # the grid would be cut short: not a grid search
            runs = [top] if _budget_free(strategy) else budgets
            work += [
                (bench_name, strategy, s, b, as_continuous) for b in runs for s in range(seeds)
            ]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(jobs) as pool:
        traces = dict(zip(work, pool.map(_one, work, chunksize=4), strict=True))
    print(
        f"{len(work)} searches in {time.perf_counter() - t0:.0f} s ({jobs} processes)", flush=True
    )
    rows = []
    for bench_name in benchmarks:
        for budget in budgets:
            picked: list[Trace] = []
            dups: dict[tuple[str, int], int] = {}
            for (b, strategy, seed, run_budget, _), tr in traces.items():
                if b != bench_name or (run_budget != budget and not _budget_free(strategy)):
                    continue
                if strategy == "grid" and space[b].grid_size > budget:
                    continue
                picked.append(truncated(tr, budget))
                dups[(strategy, seed)] = cell_duplicates(space[b], tr, budget)
            study = study_from_traces(bench_name, budget, picked)
            rows += summarise(bench_name, study, budget, dups)
    frame = pd.DataFrame(rows)
    frame.to_csv(
        out / ("searchers-continuous.csv" if as_continuous else "searchers.csv"), index=False
    )
    return frame


def summarise(
    bench_name: str, study: report.Study, budget: int, dups: dict[tuple[str, int], int]
) -> list[dict[str, Any]]:
    """Normalised regret (mean, standard error), rank, duplicates and the test against random."""
    table = report.final_table(study, "random")
    base = float(report.regret(study, study.runs[study.runs.strategy == "random"]["best"]).mean())
    pairs = {p.strategy: p for p in report.paired_stats(study, "random")}
    rows = []
    for _, row in table.iterrows():
        name = row["strategy"]
        sub = study.runs[study.runs.strategy == name]
        norm = report.regret(study, sub["best"]) / base if base > 0 else sub["best"] * np.nan
        pair = pairs.get(name)
        rows.append(
            {
                "benchmark": bench_name,
                "budget": budget,
                "strategy": name,
                "seeds": int(row["seeds"]),
                "normalised regret": row["normalised regret"],
                "se": float(norm.std(ddof=1) / np.sqrt(len(norm))),
                "mean rank": row["mean rank"],
                "duplicates": float(np.mean([v for (s, _), v in dups.items() if s == name])),
                "vs random": "" if pair is None else f"{pair.wins}/{pair.ties}/{pair.losses}",
                "p": math.nan if pair is None else pair.p_value,
            }
        )
    return rows


def pivot(frame: pd.DataFrame, budget: int) -> pd.DataFrame:
    """Strategies x benchmarks at one budget: normalised regret, marked where the paired
    test against random is significant (+ better, - worse, p < 0.05)."""
    sub = frame[frame.budget == budget].copy()

    def cell(r: pd.Series) -> str:
        mark = ""
        if r["p"] < report.ALPHA:
            mark = " +" if r["normalised regret"] < 1 else " -"
        return f"{r['normalised regret']:.2f}{mark}"

    sub["cell"] = sub.apply(cell, axis=1)
    table = sub.pivot(index="strategy", columns="benchmark", values="cell")
    table["mean"] = sub.groupby("strategy")["normalised regret"].mean().map("{:.2f}".format)
    table["duplicates"] = sub.groupby("strategy")["duplicates"].mean().map("{:.1f}".format)
    order = list(dict.fromkeys(sub.strategy))
    cols = [*dict.fromkeys(sub.benchmark), "mean", "duplicates"]
    return table.loc[order, cols].reset_index()


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
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--budgets", default="10,25,50", help="budgets in full-length trials")
    parser.add_argument("--strategies", help="searchers for part 1 (default: all registered)")
    parser.add_argument(
        "--benchmarks",
        help="benchmarks for part 1 (default: all but branin_mf, which "
        "equals branin at full fidelity)",
    )
    parser.add_argument(
        "--continuous",
        action="store_true",
        help="part 1 with every 'discrete' declaration removed (continuous ranges, snapped)",
    )
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes")
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
    t0 = time.perf_counter()
    if args.seeds < 2:
        parser.error("--seeds must be >= 2 for spread and ranks")
    budgets = sorted(int(b) for b in args.budgets.split(","))
    names = args.strategies.split(",") if args.strategies else registry.names("searcher")
    if "random" not in names:
        parser.error("part 1 needs 'random' (the normalising baseline)")
    benchmarks = (
        args.benchmarks.split(",")
        if args.benchmarks
        else [b for b in BENCHMARKS if b != "branin_mf"]
    )
    args.out.mkdir(parents=True, exist_ok=True)
    frame = part1(names, benchmarks, args.seeds, budgets, args.out, args.jobs, args.continuous)
    mapping = (
        "continuous ranges snapped to the table" if args.continuous else "discrete as declared"
    )
    print(
        f"\n## Searchers in-process, {args.seeds} seeds, {mapping} (normalised regret: "
        "1 = random, 0 = optimum; + / -: better / worse than random, paired Wilcoxon p < 0.05)"
    )
    for budget in budgets:
        print(f"\n### {budget} trials\n")
        print(report.markdown_table(pivot(frame, budget)))
    if args.tune:
        tune_names = args.tune_strategies.split(",") if args.tune_strategies else None
        if tune_names is not None and "random" not in tune_names:
            parser.error("part 2 needs 'random' (the normalising baseline)")
        part2(args.seeds, args.tune_budget, args.out, args.tune_benchmarks.split(","), tune_names)
    print(f"\nwall time: {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
