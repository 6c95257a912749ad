"""Second opinions on the winners: cross-validation and "with vs without tuning".

A single validation split can crown a lucky config. :func:`cross_validate`
re-trains each finalist on F folds of the task's data (train + validation
pooled, split by a seeded K-fold), optionally for more epochs, and reports the
mean and spread per config. :func:`with_without` trains the best config and the
space's default config N times each with paired seeds and tests the difference.
Every training is a Ray task (one CPU), so finalists run in parallel on the
cluster; each uses the project's own training loop in-process.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import ConcatDataset, Dataset, Subset

from tune_app.errors import ConfigError
from tune_app.tasks.base import Objective, Task
from tune_app.tasks.loop import TrialSpec, train


class FoldTask(Task):
    """``base`` with its train and validation sets pooled and split into fold ``fold``."""

    def __init__(self, base: Task, fold: int, folds: int) -> None:
        self.base, self.fold, self.folds = base, fold, folds
        self.name = f"{base.name}[fold {fold + 1}/{folds}]"
        self.metrics = base.metrics

    def load_data(self, config: Mapping[str, Any], seed: int) -> tuple[Dataset, Dataset]:
        from sklearn.model_selection import KFold

        train_ds, val_ds = self.base.load_data(config, seed)
        pooled: ConcatDataset[Any] = ConcatDataset([train_ds, val_ds])
        split = KFold(n_splits=self.folds, shuffle=True, random_state=seed).split(
            np.arange(len(pooled))
        )
        tr, va = list(split)[self.fold]
        return Subset(pooled, tr.tolist()), Subset(pooled, va.tolist())

    def build_model(self, config: Mapping[str, Any]) -> nn.Module:
        return self.base.build_model(config)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.base.loss(output, target)

    def eval_sums(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        return self.base.eval_sums(output, target)

    def eval_metrics(self, sums: Mapping[str, float], count: int) -> dict[str, float]:
        return self.base.eval_metrics(sums, count)

    def validate_config(self, config: Mapping[str, Any]) -> None:
        self.base.validate_config(config)


class Collector:
    """A reporter for :func:`~tune_app.tasks.loop.train` outside Tune: keeps every
    epoch's metrics, saves no checkpoints."""

    rank, world_size = 0, 1

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    @property
    def last(self) -> dict[str, Any]:
        """The last epoch's metrics (empty before the first report)."""
        return self.rows[-1] if self.rows else {}

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        self.rows.append(metrics)

    def checkpoint_dir(self) -> Any:
        return None

    def broadcast(self, value: Any) -> Any:
        return value


def train_once(task: Task, config: Mapping[str, Any], seed: int, epochs: int) -> dict[str, Any]:
    """Train ``config`` for ``epochs`` epochs in this process; the last epoch's metrics."""
    torch.set_num_threads(1)
    spec = TrialSpec(task=task, seed=seed, max_epochs=epochs, num_workers=0)
    rec = Collector()
    train(dict(config), spec, f"final-{seed}", rec)
    return rec.last


def _run_all(jobs: Sequence[tuple[Task, Mapping[str, Any], int, int]]) -> list[dict[str, Any]]:
    """Run ``train_once`` for every job as Ray tasks, in order."""
    import ray

    remote = ray.remote(num_cpus=1, max_retries=1)(train_once)
    return list(ray.get([remote.remote(*job) for job in jobs]))


def _check_trainable(task: Objective) -> Task:
    if not isinstance(task, Task):
        raise ConfigError(
            f"{task.name} is a lookup benchmark with no data to re-train; "
            f"cross-validation and with/without runs need a real task"
        )
    return task


@dataclass(frozen=True)
class Finalist:
    """One config to re-evaluate, and where it came from."""

    strategy: str
    rank: int
    config: dict[str, Any]
    search_best: float


def finalists(comparison: Any, k: int) -> list[Finalist]:
    """The ``k`` best distinct configs of each strategy, pooled over its seeds."""
    if k < 1:
        raise ConfigError(f"--cv-top must be >= 1, got {k}")
    out: list[Finalist] = []
    for name in dict.fromkeys(r.strategy for r in comparison.results):
        frames = [r.trials for r in comparison.results if r.strategy == name and len(r.trials)]
        if not frames:
            continue
        metric, mode = comparison.results[0].metric, comparison.results[0].mode
        pool = pd.concat(frames, ignore_index=True)
        col = f"best_{metric}"
        pool = pool[pool[col].notna()].sort_values(col, ascending=mode == "min")
        cfg_cols = [c for c in pool.columns if c.startswith("config.")]
        pool = pool.drop_duplicates(subset=cfg_cols)
        for rank, (_, row) in enumerate(pool.head(k).iterrows(), 1):
            config = {c.removeprefix("config."): _plain(row[c]) for c in cfg_cols}
            out.append(Finalist(name, rank, config, float(row[col])))
    return out


def _plain(v: Any) -> Any:
    return v.item() if hasattr(v, "item") else v


def cross_validate(
    task: Objective,
    candidates: Sequence[Finalist],
    fixed: Mapping[str, Any],
    metric: str,
    folds: int = 5,
    epochs: int = 3,
    seed: int = 0,
) -> pd.DataFrame:
    """F-fold cross-validation of each candidate: one row per config with mean and std."""
    task = _check_trainable(task)
    if folds < 2:
        raise ConfigError(f"--folds must be >= 2, got {folds}")
    jobs = [
        (FoldTask(task, f, folds), {**fixed, **c.config}, seed, epochs)
        for c in candidates
        for f in range(folds)
    ]
    scores = [float(r.get(metric, math.nan)) for r in _run_all(jobs)]
    rows = []
    for i, c in enumerate(candidates):
        s = np.array(scores[i * folds : (i + 1) * folds])
        rows.append(
            {
                "strategy": c.strategy,
                "rank in search": c.rank,
                "search best": c.search_best,
                f"cv {metric} mean": float(np.nanmean(s)),
                f"cv {metric} std": float(np.nanstd(s, ddof=1)),
                "folds": folds,
                "epochs": epochs,
                "config": ", ".join(f"{k}={_short(v)}" for k, v in c.config.items()),
            }
        )
    return pd.DataFrame(rows)


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def with_without(
    task: Objective,
    best: Mapping[str, Any],
    default: Mapping[str, Any],
    fixed: Mapping[str, Any],
    metric: str,
    mode: str,
    repeats: int = 5,
    epochs: int = 3,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train the tuned and the default config ``repeats`` times each (paired seeds).

    Returns the per-repeat results and a one-row summary with the paired
    Wilcoxon test of tuned vs default.
    """
    from scipy.stats import wilcoxon

    task = _check_trainable(task)
    if repeats < 2:
        raise ConfigError(f"--with-without needs >= 2 repeats, got {repeats}")
    jobs = [(task, {**fixed, **cfg}, s, epochs) for s in range(repeats) for cfg in (best, default)]
    res = _run_all(jobs)
    rows = [
        {
            "repeat": s,
            "tuned": float(res[2 * s].get(metric, math.nan)),
            "default": float(res[2 * s + 1].get(metric, math.nan)),
        }
        for s in range(repeats)
    ]
    per = pd.DataFrame(rows)
    sign = 1.0 if mode == "max" else -1.0
    diff = ((per["tuned"] - per["default"]) * sign).to_numpy(float)
    finite = diff[np.isfinite(diff)]
    p = (
        1.0
        if len(finite) == 0 or np.all(finite == 0)
        else float(wilcoxon(finite, zero_method="zsplit").pvalue)
    )
    summary = pd.DataFrame(
        [
            {
                "repeats": repeats,
                f"tuned {metric} mean": per["tuned"].mean(),
                f"tuned {metric} std": per["tuned"].std(ddof=1),
                f"default {metric} mean": per["default"].mean(),
                f"default {metric} std": per["default"].std(ddof=1),
                "tuned better in": f"{int((finite > 0).sum())}/{len(finite)}",
                "Wilcoxon p": p,
                "verdict": (
                    f"too few repeats to conclude ({len(finite)}; need >= 6)"
                    if len(finite) < 6
                    else (
                        "tuning helps"
                        if p < 0.05 and finite.mean() > 0
                        else "tuning hurts"
                        if p < 0.05
                        else "no significant difference"
                    )
                ),
                "tuned config": ", ".join(f"{k}={_short(v)}" for k, v in best.items()),
                "default config": ", ".join(f"{k}={_short(v)}" for k, v in default.items()),
            }
        ]
    )
    return per, summary
