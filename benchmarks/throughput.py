"""Training throughput: a bare PyTorch loop against this project's Ray Train loop.

Same task, model, data (synthetic, in the real on-disk format, written to a temp
dir), hyperparameters, epochs and torch thread count; the two modes alternate
within one run (bare first on even repeats, Ray first on odd ones).

* bare: ``task.load_data`` + ``DataLoader`` + a plain train/validate loop.
* ray-train: the ``TorchTrainer`` every ``--num-workers 1`` trial runs
  (``tune_app.run.train_run.trainer``, 1 worker running
  ``tune_app.tasks.loop.train_loop_per_worker``: budget-less here, but with its
  per-epoch validation, report and paced checkpoints), on a local Ray started by
  ``tune_app.run.placement.ensure_ray``.

Two throughputs per mode:

* train pass: samples / seconds spent in the training passes (``train_time_s``,
  timed identically in both loops): what a worker's training costs, start-up and
  validation excluded;
* end to end: samples / wall time of the whole call, start-up included (the
  worker group, process group and data load for Ray; the data load for bare),
  plus validation and, for Ray, reports and checkpoints.

Run from the repository root::

    .venv/bin/python benchmarks/throughput.py [--tasks cifar10_mlp,mnist_cnn] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import tune_app  # noqa: E402, F401  (sets Ray's loopback-only default before Ray starts)

# isort: split
from ray.train import UserCallback  # noqa: E402

# Per task: hyperparameters, epochs, and the fixture size (training images).
SETUPS: dict[str, dict[str, Any]] = {
    "cifar10_mlp": {
        "hparams": {"lr": 0.1, "optimizer": "sgd", "batch_size": 64},
        "epochs": 5,
        "per_batch": 5000,  # x 5 batches = 25,000 images, 22,500 after the validation split
    },
    "mnist_cnn": {
        "hparams": {"lr": 1e-3, "optimizer": "adam", "batch_size": 64, "channels": 16},
        "epochs": 3,
        "n_train": 7000,  # 6,300 after the validation split
    },
}


def write_data(root: Path, tasks: list[str]) -> None:
    """Synthetic data in the real formats (the tests' fixture writers)."""
    from tests.tasks.fixtures import write_cifar10, write_mnist

    if "cifar10_mlp" in tasks:
        write_cifar10(root, per_batch=SETUPS["cifar10_mlp"]["per_batch"])
    if "mnist_cnn" in tasks:
        write_mnist(root, n_train=SETUPS["mnist_cnn"]["n_train"], n_test=100)


def bare(name: str, config: dict[str, Any], epochs: int, threads: int) -> dict[str, float]:
    """A plain PyTorch train/validate loop; returns samples, train seconds, wall seconds."""
    import torch
    from torch.utils.data import DataLoader

    from tune_app import tasks
    from tune_app.tasks.data import clear_cache
    from tune_app.tasks.loop import _optimizer

    started = time.perf_counter()
    torch.set_num_threads(threads)
    clear_cache()  # parse the files like a fresh worker does
    task = tasks.resolve(name)
    torch.manual_seed(0)
    train_ds, val_ds = task.load_data(config, 0)
    bs = int(config["batch_size"])
    loader = DataLoader(
        train_ds, batch_size=bs, shuffle=True, generator=torch.Generator().manual_seed(0)
    )
    val_loader = DataLoader(val_ds, batch_size=max(bs, 256))
    model = task.build_model(config)
    opt = _optimizer(model.parameters(), config)
    samples, train_s = 0, 0.0
    for _ in range(epochs):
        model.train()
        t0 = time.perf_counter()
        for x, y in loader:
            opt.zero_grad(set_to_none=True)
            loss = task.loss(model(x), y)
            loss.backward()
            opt.step()
            samples += len(y)
        train_s += time.perf_counter() - t0
        model.eval()
        with torch.no_grad():
            for x, y in val_loader:
                task.eval_sums(model(x), y)
    return {"samples": samples, "train_s": train_s, "wall_s": time.perf_counter() - started}


class _Reports(UserCallback):
    """A Train callback (on the controller) that appends every report's metrics to
    a file: ``metrics_dataframe`` holds only the checkpointed ones."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def after_report(
        self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any
    ) -> None:
        """Rank 0's metrics, one JSON line per report."""
        with self.path.open("a") as f:
            f.write(json.dumps({k: v for k, v in metrics[0].items() if k == "train_time_s"}) + "\n")


def ray_train(
    name: str, config: dict[str, Any], epochs: int, threads: int, storage: Path
) -> dict[str, float]:
    """The project's Ray Train loop in a 1-worker TorchTrainer, with the run's data
    store (started here and loading at once, as a search's driver starts it, so its
    one data load is in the wall time) and paced checkpoints, as a search's trials
    have them."""
    import ray

    from tune_app import tasks
    from tune_app.run import train_run
    from tune_app.tasks.loop import TrialSpec, train_loop_per_worker
    from tune_app.tasks.shared_data import start_store

    started = time.perf_counter()
    reports = storage / f"reports-{time.time_ns()}.jsonl"
    storage.mkdir(parents=True, exist_ok=True)
    callback = _Reports(reports)
    task, fixed = tasks.resolve(name), {"data_dir": config["data_dir"]}
    # The run's data store, loading as a search's driver has it load (from the start).
    store = start_store(prefetch=(task, fixed, 0))
    spec = TrialSpec(
        task=task,
        seed=0,
        max_epochs=epochs,
        fixed=fixed,
        num_workers=1,
        cpus_per_worker=threads,
        storage_path=str(storage),
        data=store,
    )
    hparams = {k: v for k, v in config.items() if k != "data_dir"}
    # The TorchTrainer every trial runs (its process group, checkpoint and failure
    # configs); Ray sets OMP_NUM_THREADS to the worker's CPUs (`threads`).
    run_name = f"bench-{name}-{time.time_ns()}"
    trainer = train_run.trainer(
        train_loop_per_worker, hparams, spec, "bench", None, run_name, [callback]
    )
    trainer.fit()
    wall = time.perf_counter() - started
    ray.kill(store)
    times = [json.loads(line)["train_time_s"] for line in reports.read_text().splitlines()]
    if len(times) != epochs:
        raise RuntimeError(f"expected {epochs} epoch reports, got {len(times)}")
    n_train = len(spec.task.load_data({**config}, 0)[0])  # type: ignore[arg-type]
    return {
        "samples": n_train * epochs,
        "train_s": float(sum(times)),
        "wall_s": wall,
    }


def main() -> int:
    """Run the benchmark and print one table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="cifar10_mlp,mnist_cnn")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads = worker CPUs")
    parser.add_argument(
        "--epochs", type=int, default=0, help="epochs per run (default: each task's own)"
    )
    args = parser.parse_args()
    names = [t for t in args.tasks.split(",") if t]
    unknown = set(names) - set(SETUPS)
    if unknown:
        parser.error(f"unknown task(s) {sorted(unknown)}; use {', '.join(SETUPS)}")

    import ray

    from tune_app.run.placement import ensure_ray

    os.environ.pop("RAY_ADDRESS", None)  # always a fresh local Ray on 127.0.0.1
    ensure_ray(None, num_cpus=max(2, args.threads))
    print(f"ray {ray.__version__}, local on 127.0.0.1, {args.threads} torch thread(s) per side")
    rows: dict[tuple[str, str], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_data(root / "data", names)
        for rep in range(args.repeats):
            for name in names:
                setup = SETUPS[name]
                config = {**setup["hparams"], "data_dir": str(root / "data")}
                epochs = args.epochs or setup["epochs"]
                order = ["bare", "ray-train"] if rep % 2 == 0 else ["ray-train", "bare"]
                for mode in order:
                    if mode == "bare":
                        r = bare(name, config, epochs, args.threads)
                    else:
                        r = ray_train(name, config, epochs, args.threads, root / "runs")
                    rows.setdefault((name, mode), []).append(r)
                    print(
                        f"  repeat {rep} {name:<12} {mode:<9} {r['samples']:>7.0f} samples "
                        f"train pass {r['train_s']:6.1f}s, wall {r['wall_s']:6.1f}s",
                        flush=True,
                    )
    ray.shutdown()

    def rate(runs: list[dict[str, float]], key: str) -> float:
        return statistics.mean(r["samples"] / r[key] for r in runs)

    print("\ntask         mode       train-pass samples/s  end-to-end samples/s (start-up incl.)")
    for name in names:
        for mode in ("bare", "ray-train"):
            runs = rows[(name, mode)]
            train, wall = rate(runs, "train_s"), rate(runs, "wall_s")
            print(f"{name:<12} {mode:<10} {train:>20.0f}  {wall:>20.0f}")
        b, r = rows[(name, "bare")], rows[(name, "ray-train")]
        print(
            f"{name:<12} ratio ray/bare: train pass {rate(r, 'train_s') / rate(b, 'train_s'):.3f}, "
            f"end to end {rate(r, 'wall_s') / rate(b, 'wall_s'):.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
