"""Bookkeeping overhead: N trials that each sleep t seconds, on C logical CPUs.

A scaled-down version of Ray Tune's bookkeeping release test. Both modes run in
one process on one fresh local Ray with C CPUs, alternating:

* ``bare``: a plain ``tune.Tuner`` over a function that sleeps and reports each
  epoch (no searcher, no callbacks);
* ``tune_app``: :func:`tune_app.run_search` with its whole stack on — guarded
  searcher, epoch-budget ledger (one grant per epoch), the journal and MLflow
  outbox (one child run per trial, per-epoch metrics, the parent's curve), Tune
  experiment snapshots for resume, and the shared training loop (data, model,
  a checkpoint per epoch) around the same sleep.

It prints ``wall / (N * t / C)`` for both; 1.0 is the theoretical minimum.

    .venv/bin/python benchmarks/overhead.py --trials 40 --sleep 2 --cpus 2 --epochs 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

import tune_app  # noqa: F401  (sets Ray's loopback-only and token-auth defaults)
from tune_app.tasks import ClassificationTask


class SleepTask(ClassificationTask):
    """A task whose every epoch takes ``seconds`` (a tiny model on 8 samples)."""

    name = "sleep"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def load_data(self, config: Mapping[str, Any], seed: int) -> tuple[Dataset, Dataset]:
        x = torch.zeros(8, 2)
        y = torch.zeros(8, dtype=torch.long)
        return TensorDataset(x, y), TensorDataset(x, y)

    def build_model(self, config: Mapping[str, Any]) -> nn.Module:
        return nn.Linear(2, 2)

    def eval_metrics(self, sums: Mapping[str, float], count: int) -> dict[str, float]:
        time.sleep(self.seconds)
        return super().eval_metrics(sums, count)


def bare(trials: int, epochs: int, per_epoch: float, cpus: int, root: Path) -> float:
    """Plain Ray Tune: sleep and report, nothing else."""
    from ray import tune

    def trainable(config: dict[str, Any]) -> None:
        for epoch in range(1, epochs + 1):
            time.sleep(per_epoch)
            tune.report({"val_accuracy": config["x"], "epoch": epoch})

    start = time.perf_counter()
    tune.Tuner(
        tune.with_resources(trainable, {"CPU": 1}),
        param_space={"x": tune.uniform(0, 1)},
        tune_config=tune.TuneConfig(
            num_samples=trials, max_concurrent_trials=cpus, reuse_actors=True
        ),
        run_config=tune.RunConfig(storage_path=str(root / "bare"), verbose=0),
    ).fit()
    return time.perf_counter() - start


def full(trials: int, epochs: int, per_epoch: float, cpus: int, root: Path) -> float:
    """tune_app's run_search with MLflow tracking and the epoch ledger on."""
    from tune_app import run_search

    space = root / "sleep.yaml"
    space.write_text(
        json.dumps(
            {
                "name": "sleep",
                "task": "digits_mlp",
                "metric": "val_accuracy",
                "mode": "max",
                "max_epochs": epochs,
                "params": {"x": {"type": "uniform", "low": 0.0, "high": 1.0}},
            }
        )
    )
    uri = f"sqlite:///{root / 'mlflow.db'}"
    # The store exists before the search (a user's tracking store does): its
    # one-time schema creation is not per-trial bookkeeping.
    from mlflow.tracking import MlflowClient

    MlflowClient(uri).search_experiments()
    start, started_at = time.perf_counter(), time.time()
    result = run_search(
        "random",
        space,
        task=SleepTask(per_epoch),
        budget_epochs=trials * epochs,
        max_trials=trials,
        num_workers=0,
        max_concurrent=cpus,
        tracking_uri=uri,
        storage_path=root / "runs",
        verbose=False,
    )
    wall = time.perf_counter() - start
    assert len(result.trials) == trials and result.epochs_spent == trials * epochs, (
        len(result.trials),
        result.epochs_spent,
        result.trials[["trial_id", "status", "epochs"]].to_string(),
    )
    # Where the wall time went, from the run's journal (driver-side timestamps).
    journal = (Path(result.storage_path) / "journal.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in journal]
    first = min(e["t"] for e in events if e["k"] == "trial")
    last = max(e["t"] for e in events if e["k"] == "end")
    PHASES.append((first - started_at, last - first, started_at + wall - last))
    return wall


PHASES: list[tuple[float, float, float]] = []


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--trials", type=int, default=40, help="N trials per mode")
    p.add_argument("--sleep", type=float, default=2.0, help="t: seconds per trial")
    p.add_argument("--epochs", type=int, default=2, help="reports per trial (t split evenly)")
    p.add_argument("--cpus", type=int, default=2, help="C logical CPUs (one trial per CPU)")
    p.add_argument("--repeats", type=int, default=1, help="alternating runs per mode")
    args = p.parse_args(argv)

    import ray

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # A fresh local Ray with exactly C CPUs (never another user's cluster).
    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    # A first MLflow store creation (schema migrations) is not per-trial overhead.
    with tempfile.TemporaryDirectory() as tmp:
        from mlflow.tracking import MlflowClient

        MlflowClient(f"sqlite:///{Path(tmp) / 'warm.db'}").search_experiments()

    ideal = args.trials * args.sleep / args.cpus
    per_epoch = args.sleep / args.epochs
    walls: dict[str, list[float]] = {"bare": [], "tune_app": []}
    for _ in range(args.repeats):
        for mode, fn in (("bare", bare), ("tune_app", full)):
            with tempfile.TemporaryDirectory() as tmp:
                walls[mode].append(fn(args.trials, args.epochs, per_epoch, args.cpus, Path(tmp)))
    ray.shutdown()

    print(
        f"\n{args.trials} trials x {args.sleep:g} s ({args.epochs} reports each) on "
        f"{args.cpus} CPUs; theoretical minimum N*t/C = {ideal:.1f} s"
    )
    print(f"{'mode':<32} {'wall s':>8} {'wall / (N*t/C)':>15}")
    labels = {"bare": "bare Ray Tune", "tune_app": "tune_app (MLflow + ledger on)"}
    for mode, values in walls.items():
        wall = sum(values) / len(values)
        print(f"{labels[mode]:<32} {wall:8.1f} {wall / ideal:15.3f}")
    n = len(PHASES)
    up, body, down = (sum(p[i] for p in PHASES) / n for i in range(3))
    print(
        f"tune_app phases: start-up to the first trial {up:.1f} s, first trial start to "
        f"last trial end {body:.1f} s ({body / ideal:.3f} x N*t/C), wrap-up {down:.1f} s"
    )


if __name__ == "__main__":
    main()
