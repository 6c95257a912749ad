"""Per-trial overhead: Ray Train worker groups vs in-trial execution vs bare compute.

Runs the same random search (same seed, same configs) on the digits task with
``num_workers=1`` (a Ray Train TorchTrainer per trial) and ``num_workers=0`` (the
loop inside the Tune trial), alternating, on one local Ray, and prints wall time
per trial and the ratio to the bare compute (the same trials trained in a plain
loop in this process, divided by the concurrency).

    .venv/bin/python benchmarks/trial_overhead.py --trials 6 --epochs 2 --repeats 2

``--without-sharing`` adds both modes as they ran before the run's data store and
paced checkpoints (:mod:`tune_app.tasks.shared_data`, ``CheckpointPacer``): every
trial loads its data itself and checkpoints every epoch. ``--fresh-trial-actors``
adds the Ray Train mode with a new trial process per trial (Tune's
``reuse_actors`` off, as Ray Train runs had it before).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

from tune_app import run_search
from tune_app.comparison.finalists import Collector
from tune_app.run import driver
from tune_app.run.placement import ensure_ray
from tune_app.tasks import loop
from tune_app.tasks.digits_mlp import DigitsMLP
from tune_app.tasks.loop import TrialSpec, train


def main() -> None:
    """Run the benchmark and print a table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=6)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument(
        "--without-sharing",
        action="store_true",
        help="also run each mode without the data store, checkpointing every epoch",
    )
    ap.add_argument(
        "--fresh-trial-actors",
        action="store_true",
        help="also run the Ray Train mode with a new trial process per trial",
    )
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="overhead-"))
    space = tmp / "space.yaml"
    space.write_text(
        json.dumps(
            {
                "task": "digits_mlp",
                "metric": "val_accuracy",
                "mode": "max",
                "max_epochs": args.epochs,
                "params": {
                    "lr": {"type": "loguniform", "low": 1e-3, "high": 0.1},
                    "hidden": {"type": "int", "low": 16, "high": 64},
                },
            }
        )
    )
    ensure_ray(num_cpus=args.cpus)
    budget = args.trials * args.epochs
    walls: dict[str, list[float]] = {
        "in-trial (num_workers=0)": [],
        "ray-train (num_workers=1)": [],
    }
    if args.without_sharing:
        walls["in-trial, before (0)"] = []
        walls["ray-train, before (1)"] = []
    if args.fresh_trial_actors:
        walls["ray-train, fresh actors (1)"] = []
    configs: list[dict[str, Any]] = []
    for rep in range(args.repeats):
        order = list(walls) if rep % 2 == 0 else list(reversed(walls))
        for label in order:
            with (
                _before(args.without_sharing and "before" in label),
                _fresh_actors("fresh" in label),
            ):
                start = time.perf_counter()
                result = run_search(
                    "random",
                    space,
                    budget_epochs=budget,
                    max_trials=args.trials,
                    seed=0,
                    num_workers=0 if "0)" in label else 1,
                    tracking_uri=f"sqlite:///{tmp}/m.db",
                    storage_path=tmp / "runs",
                    verbose=False,
                )
                walls[label].append(time.perf_counter() - start)
            configs = [
                {k[len("config.") :]: v for k, v in row.items() if k.startswith("config.")}
                for row in result.trials.to_dict("records")
            ]
    spec = TrialSpec(task=DigitsMLP(), seed=0, max_epochs=args.epochs, num_workers=0)
    start = time.perf_counter()
    for cfg in configs:
        train(cfg, spec, "bare", Collector())
    bare = (time.perf_counter() - start) / args.cpus  # ideal: trials spread over CPUs
    print(
        f"\n{args.trials} trials x {args.epochs} epochs, {args.cpus} CPUs, "
        f"{args.repeats} repeat(s), alternating order"
    )
    print(f"{'mode':<28}{'wall s (mean)':>14}{'s / trial':>11}{'wall / bare':>13}")
    print(
        f"{'bare compute / CPUs':<28}{bare:>14.1f}{bare * args.cpus / args.trials:>11.2f}"
        f"{1.0:>13.1f}"
    )
    means = {k: sum(v) / len(v) for k, v in walls.items()}
    for label, mean in means.items():
        print(f"{label:<28}{mean:>14.1f}{mean / args.trials:>11.2f}{mean / bare:>13.1f}")
    a, b = list(means.values())[:2]
    print(f"ratio ray-train / in-trial: {b / a:.2f}")
    if args.fresh_trial_actors:
        fresh = means["ray-train, fresh actors (1)"]
        print(f"ratio ray-train reused / fresh trial actors: {b / fresh:.2f}")
    if args.without_sharing:
        for label in ("in-trial", "ray-train"):
            now = next(v for k, v in means.items() if k.startswith(label + " ("))
            before = next(v for k, v in means.items() if k.startswith(label + ", before"))
            print(f"ratio {label} now / before: {now / before:.2f}")


@contextmanager
def _fresh_actors(active: bool) -> Iterator[None]:
    """While ``active``: Tune starts a new process for every trial."""
    reuse = driver.REUSE_TRIAL_ACTORS
    driver.REUSE_TRIAL_ACTORS = not active and reuse  # type: ignore[misc]
    try:
        yield
    finally:
        driver.REUSE_TRIAL_ACTORS = reuse  # type: ignore[misc]


@contextmanager
def _before(active: bool) -> Iterator[None]:
    """While ``active``: runs as before the data store and paced checkpoints (no
    store; every trial spec checkpoints every epoch)."""
    if not active:
        yield
        return
    store, spec = driver._data_store, loop.TrialSpec
    driver._data_store = lambda plan, held, placement: None  # type: ignore[assignment]
    loop.TrialSpec = lambda **kw: spec(**{**kw, "checkpoint_every_epoch": True})  # type: ignore[assignment, misc]
    try:
        yield
    finally:
        driver._data_store, loop.TrialSpec = store, spec  # type: ignore[misc]


if __name__ == "__main__":
    main()
