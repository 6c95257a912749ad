"""Strategies head to head on the multi-fidelity benchmarks through ``compare``
(Ray Tune trials, the epoch ledger, MLflow), with paired tests against baselines.

    python benchmarks/multifidelity.py                      # 10 seeds, 10 full trials
    python benchmarks/multifidelity.py --seeds 20 --budget 25
    python benchmarks/multifidelity.py --table-only          # re-print from saved runs
    python benchmarks/multifidelity.py --strategies random,asha,hyperband,gp,dqn+asha,dqn+hyperband

A strategy ``searcher+scheduler`` (``dqn+asha``) runs the searcher under the scheduler.
For each benchmark (``branin_mf``: Branin whose early epochs mislead;
``digits_tabular``: real digits-MLP training curves) and each strategy, one
``compare`` runs every seed at a budget of ``--budget`` full-length trials
(``budget x max_epochs`` epochs), trials inside Tune (``--num-workers 0``), two at
a time on a 2-CPU machine. Each (benchmark, strategy)'s runs are saved as CSV as
soon as its comparison ends, so an interrupted run continues where it stopped,
and a larger ``--seeds`` runs only the seeds not run yet.

The table per benchmark: the mean regret (distance of the best value found from
the known optimum) with its standard error, the regret normalised by random
search's (1 = random, 0 = optimum), and for every baseline the paired Wilcoxon
test over the seeds (same seed = same benchmark noise and data split): wins /
ties / losses of the row's strategy against the baseline, and the p-value; ``+``
/ ``-`` mark a significantly better / worse strategy (p < 0.05).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from tune_app.benchmarks import get
from tune_app.comparison import report

STRATEGIES = "random,asha,hyperband,evolution,lce,bohb,pbt,pb2"
BASELINES = "random,asha,hyperband"


def run(bench_name: str, strategy: str, seeds: int, budget: int, out: Path) -> pd.DataFrame:
    """One strategy over every seed on one benchmark (cached in ``out``)."""
    from tune_app import compare

    path = out / bench_name / f"{strategy}.csv"
    cached = pd.read_csv(path) if path.exists() else pd.DataFrame({"seed": []})
    missing = sorted(set(range(seeds)) - set(cached.seed))
    if not missing:
        return cached[cached.seed < seeds]
    bench = get(bench_name)
    t0 = time.perf_counter()
    searcher, _, scheduler = strategy.partition("+")  # e.g. dqn+asha
    comparison = compare(
        [searcher],
        bench.space,
        task=bench,
        seeds=missing,
        baseline=searcher if not scheduler else strategy,
        scheduler=scheduler or None,
        budget_epochs=budget * bench.max_epochs,
        num_workers=0,
        experiment=f"multifidelity-{bench_name}",
        tracking_uri=f"sqlite:///{(out / 'mlflow.db').resolve()}",
        storage_path=str((out / "runs").resolve()),
        report_dir=out / bench_name / f"report-{strategy}",
        verbose=False,
    )
    new = report.from_comparison(comparison, optimum=bench.optimum).runs
    runs = pd.concat([cached, new], ignore_index=True) if len(cached) else new
    path.parent.mkdir(parents=True, exist_ok=True)
    runs.to_csv(path, index=False)
    print(
        f"{bench_name} {strategy}: seeds {missing[0]}..{missing[-1]} in "
        f"{time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    return runs[runs.seed < seeds]


def table(bench_name: str, runs: pd.DataFrame, baselines: list[str]) -> pd.DataFrame:
    """One row per strategy: regret, normalised regret, paired tests vs each baseline."""
    bench = get(bench_name)
    empty = pd.DataFrame()
    study = report.Study(bench.metric, bench.mode, runs, empty, empty, optimum=bench.optimum)
    reg = runs.assign(regret=report.regret(study, runs["best"]))
    base = float(reg.loc[reg.strategy == "random", "regret"].mean())
    pairs = {(p.strategy, b): p for b in baselines for p in report.paired_stats(study, b, seed=0)}
    rows = []
    for name in study.strategies:
        sub = reg[reg.strategy == name]["regret"]
        row: dict[str, object] = {
            "strategy": name,
            "seeds": len(sub),
            "regret": f"{sub.mean():.4g} ± {sub.std(ddof=1) / math.sqrt(len(sub)):.2g}",
            "normalised": f"{sub.mean() / base:.2f}" if base > 0 else "nan",
            "trials": f"{runs.loc[runs.strategy == name, 'trials'].mean():.1f}",
        }
        for b in baselines:
            p = pairs.get((name, b))
            if p is None:
                row[f"vs {b}"] = "—"
                continue
            mark = ""
            if p.p_value < report.ALPHA:
                mark = " +" if p.mean_diff > 0 else " -"
            shown = "p<0.001" if p.p_value < 0.001 else f"p={p.p_value:.3f}"
            row[f"vs {b}"] = f"{p.wins}/{p.ties}/{p.losses} {shown}{mark}"
        rows.append(row)
    return pd.DataFrame(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", default=STRATEGIES)
    parser.add_argument("--baselines", default=BASELINES)
    parser.add_argument("--benchmarks", default="branin_mf,digits_tabular")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--budget", type=int, default=10, help="budget in full-length trials")
    parser.add_argument("--out", type=Path, default=Path("benchmark_results/multifidelity"))
    parser.add_argument("--table-only", action="store_true", help="only re-print saved runs")
    args = parser.parse_args()
    names = args.strategies.split(",")
    baselines = args.baselines.split(",")
    if "random" not in names or not set(baselines) <= set(names):
        parser.error("--strategies must include random and every --baselines entry")
    if args.seeds < 6:
        parser.error("--seeds must be >= 6 for a paired Wilcoxon test to mean anything")
    out = args.out / f"budget{args.budget}"
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    frames = []
    for bench_name in args.benchmarks.split(","):
        parts = []
        for name in names:
            path = out / bench_name / f"{name}.csv"
            if args.table_only:
                if not path.exists():
                    continue
                parts.append(pd.read_csv(path))
            else:
                parts.append(run(bench_name, name, args.seeds, args.budget, out))
        runs = pd.concat(parts, ignore_index=True)
        runs = runs[runs.seed < args.seeds]
        frame = table(bench_name, runs, baselines)
        frames.append(frame.assign(benchmark=bench_name))
        print(
            f"\n### {bench_name}: {args.budget} full trials, {args.seeds} seeds "
            f"(regret: mean ± standard error; vs: wins/ties/losses, paired Wilcoxon p)\n"
        )
        print(report.markdown_table(frame))
    pd.concat(frames).to_csv(out / "summary.csv", index=False)
    print(f"\nwall time: {time.perf_counter() - t0:.0f} s; runs and reports in {out}")
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
