"""GPU check: trials on a real GPU over Ray Train workers, side by side with bare PyTorch.

    .venv/bin/python benchmarks/gpu_check.py            # sized for < 8 min on a GPU (unmeasured)
    .venv/bin/python benchmarks/gpu_check.py --quick    # the smoke test `make test` runs

Without a GPU it prints one line saying so and exits 0. With one it checks, in order:

1. the environment: the driver, CUDA, and that torch sees the GPU;
2. a ``cifar10_mlp`` and a ``mnist_cnn`` trial on the GPU over one Ray Train worker
   (``--num-workers 1 --gpus-per-worker 1``), GPU utilisation sampled by
   ``nvidia-smi`` every 0.5 s while each runs;
3. four concurrent ``cifar10_mlp`` trials at 0.25 GPU each (fractional GPUs);
4. the same training as step 2 in bare PyTorch in this process on the same GPU:
   throughput of the Ray Train trial end to end (start-up included) against bare
   PyTorch, and the per-trial fixed cost (trial wall time minus bare time).

The data are synthetic CIFAR-10 and MNIST files written in the real on-disk formats
(no downloads). It prints one summary table; record it in docs/results.md with the
date and the GPU model.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.tasks.fixtures: the real-format data writers


def gpu_line() -> str | None:
    """``None`` when this machine has a usable GPU, else why not (one line)."""
    if shutil.which("nvidia-smi") is None:
        return "nvidia-smi not found"
    import torch

    if not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA device"
    return None


def _smi(query: str) -> list[str]:
    """``nvidia-smi --query-gpu`` lines (none without nvidia-smi)."""
    if shutil.which("nvidia-smi") is None:
        return []
    out = subprocess.run(
        ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader,nounits"],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


@dataclass
class Sampler:
    """GPU utilisation of device 0, sampled every ``every`` seconds in a thread."""

    every: float = 0.5
    samples: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            values = _smi("utilization.gpu")
            if values:
                self.samples.append(float(values[0]))

    def summary(self) -> str:
        """Mean and peak utilisation over the samples taken while busy (> 0 %)."""
        busy = [s for s in self.samples if s > 0]
        if not busy:
            return "n/a"
        return f"{sum(busy) / len(busy):.0f}% (peak {max(busy):.0f}%)"


def environment() -> list[tuple[str, str]]:
    """Driver, CUDA and what torch sees."""
    import torch

    name, driver, memory = (_smi("name,driver_version,memory.total") or ["?, ?, ?"])[0].split(", ")
    return [
        ("GPU", f"{name} ({memory} MiB)"),
        ("driver / CUDA (torch)", f"{driver} / {torch.version.cuda}"),
        ("torch sees", f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"),
    ]


def write_data(root: Path, quick: bool) -> Path:
    """Synthetic CIFAR-10 and MNIST in their real on-disk formats."""
    from tests.tasks.fixtures import write_cifar10, write_mnist

    write_cifar10(root, per_batch=1000 if quick else 10000)
    write_mnist(root, n_train=5000 if quick else 60000, n_test=1000 if quick else 10000)
    return root


def space(task: str, batch_size: int, epochs: int, configs: int, tmp: Path) -> Path:
    """A space of ``configs`` fixed learning rates for ``task`` (grid order)."""
    import json

    lrs = [0.1, 0.05, 0.02, 0.01][:configs]
    fixed: dict[str, Any] = {"batch_size": batch_size}
    if task == "cifar10_mlp":
        fixed.update(hidden=[100, 50], activation="sigmoid", optimizer="sgd")
    path = tmp / f"{task}-{configs}.yaml"
    params = {"lr": {"type": "choice", "values": lrs}}
    doc = {"task": task, "metric": "val_accuracy", "mode": "max", "max_epochs": epochs}
    path.write_text(json.dumps({**doc, "params": params, "fixed": fixed}))
    return path


@dataclass(frozen=True)
class Measured:
    label: str
    wall_s: float
    utilisation: str
    trials: int


def search(label: str, path: Path, epochs: int, configs: int, gpus: float, data: Path) -> Any:
    """Grid over ``configs`` configs, one Ray Train worker each with ``gpus`` GPUs."""
    from tune_app import run_search

    with Sampler() as sampler:
        start = time.perf_counter()
        result = run_search(
            "grid",
            path,
            budget_epochs=epochs * configs,
            num_workers=1,
            gpus_per_worker=gpus,
            cpus_per_worker=1 if gpus else 0.5,
            data_dir=str(data),
            tracking_uri=f"sqlite:///{data.parent / 'mlflow.db'}",
            storage_path=data.parent / "runs",
            verbose=False,
        )
        wall = time.perf_counter() - start
    return result, Measured(label, wall, sampler.summary(), len(result.trials))


def bare(task: str, path: Path, epochs: int, data: Path, gpus: float) -> float:
    """Seconds to train the same config in plain PyTorch on the GPU, in this process."""
    from tune_app import spaces, tasks
    from tune_app.comparison.finalists import Collector
    from tune_app.tasks.loop import TrialSpec, train

    sp = spaces.load(path)
    fixed = tasks.with_data_dir(sp.fixed, str(data), True)
    objective = tasks.resolve(task)
    spec = TrialSpec(objective, 0, epochs, fixed, num_workers=0, gpus_per_worker=gpus)
    start = time.perf_counter()
    train({"lr": sp.params[0].values[0]}, spec, "bare", Collector())
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    """Run the check; print one table. Exit 0 without a GPU (and say so)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smoke test: small data, 1 epoch")
    ap.add_argument(
        "--allow-cpu",
        action="store_true",
        help="without a GPU, run the same steps on the CPU (checks this script, not a GPU)",
    )
    args = ap.parse_args(argv)
    why = gpu_line()
    gpu = 0.0 if why is not None and args.allow_cpu else 1.0
    if why is not None and not args.allow_cpu:
        print(f"gpu_check: skipped, no GPU on this machine ({why})")
        return 0
    from tune_app.run.placement import ensure_ray

    epochs = 1 if args.quick else 3
    tmp = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    rows = environment() if gpu else [("GPU", f"none, steps run on the CPU ({why})")]
    data = write_data(tmp / "data", args.quick)
    ensure_ray()
    for task, batch in (("cifar10_mlp", 512), ("mnist_cnn", 256)):
        path = space(task, batch, epochs, 1, tmp)
        _, m = search(f"{task}, 1 worker x 1 GPU", path, epochs, 1, gpu, data)
        seconds = bare(task, path, epochs, data, gpu)
        rows += [
            (f"{task}: search of 1 trial / bare PyTorch", f"{m.wall_s:.1f} s / {seconds:.1f} s"),
            (f"{task}: throughput, Ray Train / bare", f"{seconds / m.wall_s:.2f}"),
            (f"{task}: fixed cost (search - bare)", f"{m.wall_s - seconds:.1f} s"),
            (f"{task}: GPU utilisation while busy", m.utilisation),
        ]
    path = space("cifar10_mlp", 512, epochs, 4, tmp)
    _, m = search("4 x cifar10_mlp at 0.25 GPU", path, epochs, 4, gpu / 4, data)
    rows.append(("4 trials at 0.25 GPU: trials / wall", f"{m.trials} / {m.wall_s:.1f} s"))
    rows.append(("4 trials at 0.25 GPU: GPU utilisation", m.utilisation))
    width = max(len(k) for k, _ in rows)
    print(f"\ngpu_check ({time.strftime('%Y-%m-%d')}{', quick' if args.quick else ''})")
    print(f"| {'check':<{width}} | result |\n|{'-' * (width + 2)}|--------|")
    for key, value in rows:
        print(f"| {key:<{width}} | {value} |")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
