"""Build the tabular benchmark: train every grid config of digits_mlp once, store the curves.

    python benchmarks/build_tabular.py [--out tune_app/benchmarks/data/digits_mlp_tabular.parquet]

Trains each of the 360 grid points of :func:`tune_app.benchmarks.tabular.grid_space`
for 9 epochs with the project's own training loop (in-process, split seed 0,
torch seed 0) and writes one row per (config, epoch) as Parquet.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from tune_app.benchmarks.tabular import FIXED, MAX_EPOCHS, TABLE, grid_space
from tune_app.comparison.finalists import Collector
from tune_app.tasks.digits_mlp import DigitsMLP
from tune_app.tasks.loop import TrialSpec, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=TABLE)
    args = parser.parse_args()
    torch.set_num_threads(1)
    space = grid_space()
    spec = TrialSpec(task=DigitsMLP(), seed=0, max_epochs=MAX_EPOCHS, fixed=FIXED, num_workers=0)
    configs = list(space.grid())
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    for i, config in enumerate(configs, 1):
        t0 = time.perf_counter()
        rec = Collector()
        train(config, spec, f"grid{i}", rec)
        per_epoch = (time.perf_counter() - t0) / max(len(rec.rows), 1)
        for r in rec.rows:
            rows.append(
                {
                    **config,
                    "epoch": int(r["epoch"]),
                    "val_accuracy": float(r["val_accuracy"]),
                    "val_loss": float(r["val_loss"]),
                    "train_loss": float(r["train_loss"]),
                    "epoch_time_s": per_epoch,
                }
            )
        if i % 20 == 0 or i == len(configs):
            print(f"{i}/{len(configs)} configs, {time.perf_counter() - start:.0f} s", flush=True)
    frame = pd.DataFrame(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(args.out, index=False)
    best = frame.loc[frame["val_accuracy"].idxmax()]
    print(f"wrote {len(frame)} rows to {args.out}; best val_accuracy {best['val_accuracy']:.4f}")


if __name__ == "__main__":
    main()
