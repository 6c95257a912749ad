"""The comparison report: which strategy is best for this model, and how sure we are.

A :class:`Study` holds what several search runs (strategies x seeds, one space and
budget) measured: one row per run, every reported epoch, every trial's config.
It is built from a finished :class:`~tune_app.comparison.Comparison` in memory
(:func:`from_comparison`) or from MLflow alone (:func:`from_mlflow`), so a
report can be rebuilt for runs made on a cluster. :func:`write_report` turns a
study into ``report.md`` plus PNG plots and CSV tables:

- anytime curves: best-so-far metric against epochs spent and against wall
  time, mean over seeds (a +-1 standard-error band with >= 2 seeds), one line,
  marker and line style per strategy;
- the final table: mean and spread of the best metric, normalised regret when
  the optimum is known, mean rank, trials, epochs spent, wall time;
- paired statistics against a baseline strategy across seeds: wins/ties/losses,
  a bootstrap CI of the mean difference and a Wilcoxon signed-rank test, with
  an explicit "too few seeds" verdict when the test cannot reach 5 %;
- a heatmap of the metric over two hyperparameters at chosen epochs, and the
  values each strategy chose, trial by trial;
- which strategies proposed the same first configurations for a seed (a shared
  seeded random start-up).

Every PNG fits MLflow's artifact preview: at most 1400 x 1200 px, text >= 9 pt.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from tune_app.errors import ConfigError

if TYPE_CHECKING:
    pass

#: The comparison's own title: its run name gains the verdict when it finishes.
TITLE_TAG = "tune_app.title"
TABLES = ("trials", "history")  # each search run's Parquet artifacts

# Wilcoxon's two-sided exact p-value cannot go below 0.05 with fewer pairs.
MIN_PAIRS = 6
ALPHA = 0.05


@dataclass
class Study:
    """What a comparison measured, independent of where it was read from."""

    metric: str
    mode: str
    runs: pd.DataFrame  # strategy, seed, best, trials, epochs_spent, budget_epochs, ...
    history: pd.DataFrame  # strategy, seed, epochs_spent, wall_time_s, trial_id, epoch, ...
    trials: pd.DataFrame  # strategy, seed, trial, trial_id, status, epochs, config.<name>
    optimum: float | None = None
    title: str = "comparison"
    extra: dict[str, pd.DataFrame] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # fairness warnings, shown at the top

    @property
    def strategies(self) -> list[str]:
        """Strategies in the order they were run."""
        return list(dict.fromkeys(self.runs["strategy"]))

    @property
    def sign(self) -> float:
        """+1 when larger is better, -1 when smaller is better."""
        return 1.0 if self.mode == "max" else -1.0

    @property
    def params(self) -> list[str]:
        """Names of the searched hyperparameters."""
        return [c.removeprefix("config.") for c in self.trials.columns if c.startswith("config.")]


# ---------------------------------------------------------------- building a study


def from_comparison(comparison: Any, optimum: float | None = None, title: str = "") -> Study:
    """A study from an in-memory :class:`~tune_app.comparison.Comparison`."""
    results = comparison.results
    if not results:
        raise ConfigError("the comparison has no finished search runs to report on")
    runs, hist, trials = [], [], []
    for r in results:
        runs.append(
            {
                "strategy": r.strategy,
                "seed": int(r.seed),
                "best": float(r.best_metric),
                "trials": len(r.trials),
                "epochs_spent": int(r.epochs_spent),
                "budget_epochs": int(r.budget_epochs),
                "wall_time_s": float(r.wall_time_s),
                "run_id": r.mlflow_run_id,
            }
        )
        hist.append(r.history.assign(strategy=r.strategy, seed=int(r.seed)))
        trials.append(r.trials.assign(strategy=r.strategy, seed=int(r.seed)))
    first = results[0]
    return Study(
        metric=first.metric,
        mode=first.mode,
        runs=pd.DataFrame(runs),
        history=_concat(hist),
        trials=_concat(trials),
        optimum=optimum,
        title=title or "comparison",
    )


def from_mlflow(
    ref: str, tracking_uri: str | None = None, optimum: float | None = None
) -> tuple[Study, str]:
    """A study from MLflow alone: ``ref`` is a comparison run id or an experiment name.

    For an experiment, its latest comparison run is used. Returns the study and the
    comparison run id.
    """
    from tune_app.tracking.store import Reader

    reader = Reader(tracking_uri, must_exist=True)
    parent = _find_comparison(reader, ref)
    children = reader.children(parent)
    searches = [c for c in children if c.data.tags.get("tune_app.kind") == "search"]
    if not searches:
        raise ConfigError(f"comparison run {parent.info.run_id} has no search runs yet")
    searches.sort(key=lambda c: c.info.start_time or 0)
    runs, hist, trials = [], [], []
    metric = mode = ""
    for run in searches:
        tags, data = run.data.tags, run.data
        strategy, seed = tags["tune_app.strategy"], int(tags["tune_app.seed"])
        metric = data.params.get("metric", metric)
        mode = data.params.get("mode", mode)
        frames = {name: reader.frame(run.info.run_id, f"{name}.parquet") for name in TABLES}
        runs.append(
            {
                "strategy": strategy,
                "seed": seed,
                "best": float(data.metrics.get(f"final_best_{metric}", math.nan)),
                "trials": int(data.metrics.get("trials", len(frames["trials"]))),
                "epochs_spent": int(data.metrics.get("epochs_spent_total", 0)),
                "budget_epochs": int(tags.get("tune_app.budget_epochs", 0)),
                "wall_time_s": float(data.metrics.get("wall_time_s", math.nan)),
                "run_id": run.info.run_id,
            }
        )
        hist.append(frames["history"].assign(strategy=strategy, seed=seed))
        trials.append(frames["trials"].assign(strategy=strategy, seed=seed))
    if not metric or mode not in ("min", "max"):
        raise ConfigError(f"search runs under {parent.info.run_id} lack metric/mode params")
    if optimum is None and "optimum" in parent.data.params:
        optimum = float(parent.data.params["optimum"])
    warnings = parent.data.tags.get("tune_app.warnings", "")
    study = Study(
        metric=metric,
        mode=mode,
        runs=pd.DataFrame(runs),
        history=_concat(hist),
        trials=_concat(trials),
        optimum=optimum,
        title=parent.data.tags.get(TITLE_TAG) or parent.info.run_name or "comparison",
        notes=[w for w in warnings.split(" | ") if w],
    )
    return study, parent.info.run_id


def _find_comparison(reader: Any, ref: str) -> Any:
    run = reader.get_run(ref)
    if run is not None:
        if run.data.tags.get("tune_app.kind") != "comparison":
            raise ConfigError(
                f"run {ref} is a {run.data.tags.get('tune_app.kind', 'non-tune_app')} run, "
                f"not a comparison; pass the comparison run's id or its experiment name"
            )
        return run
    exp_id = reader.experiment_id(ref)
    if exp_id is None:
        raise ConfigError(
            f"{ref!r} is neither a run id nor an experiment in this tracking store; "
            f"check --tracking-uri and the id shown by `compare`"
        )
    found = reader.search_runs(
        [exp_id],
        "tags.`tune_app.kind` = 'comparison'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not found:
        raise ConfigError(f"experiment {ref!r} has no comparison runs; run `compare` first")
    return found[0]


def _concat(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


# ---------------------------------------------------------------- the numbers


def regret(study: Study, value: float | pd.Series) -> Any:
    """Distance from the known optimum (>= 0); NaN when no optimum is known."""
    if study.optimum is None:
        return value * math.nan
    return (study.optimum - value) * study.sign


def ranks(study: Study) -> pd.DataFrame:
    """Rank of each strategy within each seed (1 = best; ties share the mean rank)."""
    table = study.runs.pivot_table(index="seed", columns="strategy", values="best")
    score = table * study.sign
    return score.rank(axis=1, ascending=False, method="average")[study.strategies]


def duplicates(study: Study) -> pd.Series:
    """Per (strategy, seed): trials that re-evaluated a configuration the same run had
    already tried (a discrete space's cell proposed again)."""
    trials = study.trials
    cols = [c for c in trials.columns if c.startswith("config.")]
    if trials.empty or not cols:
        return pd.Series(dtype=float)
    if "trial" in trials:
        trials = trials.sort_values(["strategy", "seed", "trial"])
    keys = trials[cols].map(_config_key)  # list values (layer sizes) are not hashable
    dup = keys.assign(strategy=trials["strategy"], seed=trials["seed"]).duplicated()
    return dup.groupby([trials["strategy"], trials["seed"]]).sum()


def _config_key(value: Any) -> str:
    """A comparable form of one config value (floats to 12 significant digits)."""
    if isinstance(value, float | np.floating):
        return f"{float(value):.12g}"
    return str(value)


def _config_sequences(study: Study) -> dict[tuple[str, int], list[tuple[str, ...]]]:
    """Per (strategy, seed): its trials' configs, in the order they were proposed."""
    trials = study.trials
    cols = sorted(c for c in trials.columns if c.startswith("config."))
    if trials.empty or not cols:
        return {}
    if "trial" in trials:
        trials = trials.sort_values(["strategy", "seed", "trial"], kind="stable")
    keys = trials[cols].map(_config_key).apply(tuple, axis=1)
    return {
        (str(name), int(seed)): list(group)
        for (name, seed), group in keys.groupby([trials["strategy"], trials["seed"]])
    }


def shared_starts(study: Study) -> pd.DataFrame:
    """Per pair of strategies and seed both ran: how many first configurations they share.

    ``shared`` is the length of the common prefix of the two runs' configs in
    trial order (e.g. two strategies that start from the same seeded random draws).
    """
    seqs = _config_sequences(study)
    rows = []
    for a, b in itertools.combinations(study.strategies, 2):
        seeds = sorted({s for n, s in seqs if n == a} & {s for n, s in seqs if n == b})
        for seed in seeds:
            pairs = zip(seqs[a, seed], seqs[b, seed], strict=False)
            shared = sum(1 for _ in itertools.takewhile(lambda p: p[0] == p[1], pairs))
            rows.append({"strategy": a, "other": b, "seed": seed, "shared": shared})
    return pd.DataFrame(rows, columns=["strategy", "other", "seed", "shared"])


def shared_starts_note(study: Study) -> str | None:
    """Report text naming the strategies that share first configurations (None if none do)."""
    table = shared_starts(study)
    groups = table.groupby(["strategy", "other"], sort=False) if len(table) else []
    lines = [_shared_sentence(str(a), str(b), g) for (a, b), g in groups]
    found = [line for line in lines if line]
    if not found:
        return None
    return (
        "**Shared first configurations.** "
        + " ".join(found)
        + " They start from the same seeded random draws (the same random sampler or "
        "searcher with the same seed): common random numbers, by design and not a bug. "
        "Their curves coincide over those trials, and the paired comparison is sharper "
        "because any difference comes from the trials after them."
    )


def _shared_sentence(a: str, b: str, g: pd.DataFrame) -> str | None:
    """How many first configurations ``a`` and ``b`` share, seed by seed (rows ``g``)."""
    hit = g[g["shared"] > 0]
    if hit.empty:
        return None
    counts = hit["shared"].unique()
    if len(hit) == len(g) and len(counts) == 1:
        n = int(counts[0])
        what = f"first {n} configuration{'s' if n > 1 else ''}"
        one = f"in seed {g['seed'].iloc[0]}"
        where = f"in each of the {len(g)} seeds" if len(g) > 1 else one
    else:
        what = "first configurations"
        each = ", ".join(f"seed {s}: {n}" for s, n in hit[["seed", "shared"]].itertuples(False))
        some = "every seed" if len(hit) == len(g) else f"{len(hit)} of {len(g)} seeds"
        where = f"in {some} ({each})"
    return f"`{a}` and `{b}` share their {what} {where}."


def final_table(study: Study, baseline: str | None = None) -> pd.DataFrame:
    """One row per strategy: best metric (mean, std), regret, mean rank, cost, duplicates."""
    runs = study.runs
    rank = ranks(study).mean()
    dups = duplicates(study)
    rows = []
    base_regret = math.nan
    if study.optimum is not None and baseline in study.strategies:
        base_regret = float(regret(study, runs.loc[runs.strategy == baseline, "best"]).mean())
    for name in study.strategies:
        sub = runs[runs.strategy == name]
        row: dict[str, Any] = {
            "strategy": name,
            "seeds": len(sub),
            f"best {study.metric} mean": sub["best"].mean(),
            f"best {study.metric} std": sub["best"].std(ddof=1) if len(sub) > 1 else math.nan,
        }
        if study.optimum is not None:
            reg = regret(study, sub["best"])
            row["regret mean"] = reg.mean()
            row["normalised regret"] = (
                reg.mean() / base_regret if base_regret and base_regret > 0 else math.nan
            )
        row["mean rank"] = float(rank[name])
        row["trials mean"] = sub["trials"].mean()
        row["epochs spent mean"] = sub["epochs_spent"].mean()
        row["duplicates mean"] = (
            float(dups.loc[name].mean()) if name in dups.index.get_level_values(0) else 0.0
        )
        row["wall time mean (s)"] = sub["wall_time_s"].mean()
        rows.append(row)
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Paired:
    """One strategy against the baseline over the seeds both ran."""

    strategy: str
    baseline: str
    pairs: int
    wins: int
    ties: int
    losses: int
    mean_diff: float  # mean improvement over the baseline (positive = better)
    ci_low: float
    ci_high: float
    p_value: float
    verdict: str


def paired_stats(
    study: Study, baseline: str = "random", boot: int = 5000, seed: int = 0
) -> list[Paired]:
    """Each strategy vs ``baseline`` across seeds: wins, bootstrap CI, Wilcoxon test."""
    from scipy.stats import wilcoxon

    if baseline not in study.strategies:
        raise ConfigError(
            f"baseline {baseline!r} was not run; pick one of {', '.join(study.strategies)}"
        )
    table = study.runs.pivot_table(index="seed", columns="strategy", values="best")
    rng = np.random.default_rng(seed)
    out = []
    for name in study.strategies:
        if name == baseline:
            continue
        both = table[[name, baseline]].dropna()
        diff = ((both[name] - both[baseline]) * study.sign).to_numpy(dtype=float)
        n = len(diff)
        wins, ties = int((diff > 0).sum()), int((diff == 0).sum())
        if n == 0:
            nan = math.nan
            out.append(Paired(name, baseline, 0, 0, 0, 0, nan, nan, nan, nan, "no paired seeds"))
            continue
        means = rng.choice(diff, size=(boot, n), replace=True).mean(axis=1)
        lo, hi = (float(x) for x in np.quantile(means, [0.025, 0.975]))
        p = 1.0 if np.all(diff == 0) else float(wilcoxon(diff, zero_method="zsplit").pvalue)
        if n < MIN_PAIRS:
            verdict = f"too few seeds to conclude ({n} pairs; need >= {MIN_PAIRS})"
        elif p < ALPHA:
            verdict = "better than baseline" if diff.mean() > 0 else "worse than baseline"
        else:
            verdict = "no significant difference"
        losses = n - wins - ties
        mean = float(diff.mean())
        out.append(Paired(name, baseline, n, wins, ties, losses, mean, lo, hi, p, verdict))
    return out


def anytime(study: Study, x: str = "epochs_spent", points: int = 100) -> pd.DataFrame:
    """Best-so-far per strategy on a common x grid: mean and std over seeds.

    ``x`` is ``"epochs_spent"`` or ``"wall_time_s"``. Before a run's first report
    its value is missing, so early means cover only the seeds that have reported.
    """
    hist = study.history
    if hist.empty:
        return pd.DataFrame(columns=["strategy", x, "mean", "std", "se", "n"])
    top = float(hist[x].max())
    grid = (
        np.arange(1, int(top) + 1, dtype=float)
        if x == "epochs_spent"
        else np.linspace(0.0, top, points)
    )
    rows = []
    for name in study.strategies:
        curves = []
        for _, run in hist[hist.strategy == name].groupby("seed"):
            run = run.sort_values([x, "epochs_spent"])
            xs, ys = run[x].to_numpy(float), run["best_so_far"].to_numpy(float)
            idx = np.searchsorted(xs, grid, side="right") - 1
            curves.append(np.where(idx >= 0, ys[np.clip(idx, 0, None)], np.nan))
        mat = np.vstack(curves)
        with np.errstate(all="ignore"):
            n = np.sum(~np.isnan(mat), axis=0)
            mean = np.nanmean(np.where(n > 0, mat, 0.0), axis=0)
            std = np.nanstd(np.where(n > 0, mat, 0.0), axis=0)
        for g, m, s, k in zip(grid, mean, std, n, strict=True):
            if k:
                se = s / math.sqrt(k) if k > 1 else 0.0
                rows.append({"strategy": name, x: g, "mean": m, "std": s, "se": se, "n": int(k)})
    return pd.DataFrame(rows)


def markdown_table(frame: pd.DataFrame) -> str:
    """A Markdown table (no extra dependency)."""
    cols = list(frame.columns)
    lines = ["| " + " | ".join(map(str, cols)) + " |", "|" + "---|" * len(cols)]
    for _, row in frame.iterrows():
        cells = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in row]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_frame(pairs: Sequence[Paired]) -> pd.DataFrame:
    """The paired statistics as a table."""
    return pd.DataFrame(
        [
            {
                "strategy": p.strategy,
                "vs": p.baseline,
                "pairs": p.pairs,
                "wins/ties/losses": f"{p.wins}/{p.ties}/{p.losses}",
                "mean improvement": p.mean_diff,
                "95% CI low": p.ci_low,
                "95% CI high": p.ci_high,
                "Wilcoxon p": p.p_value,
                "verdict": p.verdict,
            }
            for p in pairs
        ]
    )
