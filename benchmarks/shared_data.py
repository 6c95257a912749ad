"""What a fresh trial worker pays for its data: loading it itself against reading
the run's data store (:mod:`tune_app.tasks.shared_data`), side by side.

Each measurement is a Ray task in a new worker process (``max_calls=1``, as every
Ray Train worker of every trial is a new process): it imports the task's module
and gets the ``(train, validation)`` split, timed inside the process. ``own``
calls ``task.load_data``; ``store`` asks a data store actor that already holds
the split (loaded once before the measurements, as a run's first trial does) and
wraps the shared arrays without copying. The modes alternate. The data are the
tests' fixtures in the real on-disk formats (CIFAR-10 python batches, MNIST idx
files) at the full data sets' sizes, and the bundled digits.

    .venv/bin/python benchmarks/shared_data.py --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import tune_app  # noqa: E402  (before Ray: loopback only, token auth)

TASKS = ("digits_mlp", "cifar10_mlp", "mnist_cnn")


def fetch(name: str, config: dict[str, Any], store: Any) -> tuple[float, int]:
    """In a fresh process: import the task, get its split; seconds and train rows."""
    started = time.perf_counter()
    from tune_app import tasks
    from tune_app.tasks import shared_data

    task = tasks.resolve(name)
    train, _ = shared_data.load(store, task, config, 0)
    return time.perf_counter() - started, len(train)  # type: ignore[arg-type]


def main() -> int:
    """Run the benchmark and print one table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tasks", default=",".join(TASKS))
    args = ap.parse_args()
    names = [t for t in args.tasks.split(",") if t]

    import ray

    from tests.tasks.fixtures import write_cifar10, write_mnist
    from tune_app.run.placement import ensure_ray
    from tune_app.tasks.shared_data import start_store

    ensure_ray(None, num_cpus=2)
    remote = ray.remote(num_cpus=1, max_calls=1)(fetch)
    rows: dict[tuple[str, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_cifar10(root, per_batch=10_000)  # 50,000 images, as CIFAR-10's five batches
        write_mnist(root, n_train=60_000, n_test=100)
        store = start_store()
        for name in names:
            config = {"data_dir": str(root)}
            ray.get(store.ref.remote(tune_app.tasks.resolve(name), config, 0))  # the first load
            for rep in range(args.repeats):
                for mode in ("own", "store") if rep % 2 == 0 else ("store", "own"):
                    seconds, n = ray.get(
                        remote.remote(name, config, store if mode == "store" else None)
                    )
                    rows.setdefault((name, mode), []).append(seconds)
                    print(f"  {name:<12} {mode:<6} {n:>6} rows  {seconds:6.2f} s", flush=True)
        ray.kill(store)
    ray.shutdown()
    print(
        f"\nseconds in a fresh worker process: import the task, get its data ({args.repeats} each)"
    )
    print(f"{'task':<12} {'own load':>9} {'store':>9} {'store / own':>12}")
    for name in names:
        own, shared = statistics.mean(rows[(name, "own")]), statistics.mean(rows[(name, "store")])
        print(f"{name:<12} {own:>9.2f} {shared:>9.2f} {shared / own:>12.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
