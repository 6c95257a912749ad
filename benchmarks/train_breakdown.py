"""Where a Ray Train trial's fixed cost goes, side by side with an in-trial run.

    .venv/bin/python benchmarks/train_breakdown.py --repeats 3

One local Ray (2 CPUs, dashboard on for the State API). Alternating, ``--repeats``
times each:

* ``ray-train``: a ``TorchTrainer`` with one CPU worker whose loop reports
  ``--reports`` times (with a checkpoint each time, as tune_app's loop does, or
  without) and does nothing else, as tune_app's trials build it: its backend
  config (:class:`~tune_app.run.process_group.BoundTorchConfig`, torch-free, so
  Train's controller does not import torch) and without Train's idle
  ``DatasetManager`` (:func:`~tune_app.run.train_run.without_dataset_manager`).
  Each Ray actor it starts is timed from the State API (``list_workers``: when
  the process was launched, when it was ready) and the loop writes when it was
  entered; so the fixed cost splits into phases.
  Ray Train's own timers of the worker group's start-up (from its controller's
  log) are printed too, marked ``(Train's timer)``: they fall within those phases;
* ``ray-train, with Train's DatasetManager``: the same, the ``DatasetManager``
  actor left in (what every trial paid before that cut);
* ``ray-train, Ray's TorchConfig``: Ray's own ``TorchConfig``, whose module
  imports torch in the controller, and the ``DatasetManager``: the trainer as Ray
  builds it (what every trial paid before both cuts);
* ``in-trial``: the same loop as a Tune function trial (what ``--num-workers 0``
  runs): the cost of a trial without Ray Train.

It prints the mean seconds per phase and the ratios of the totals.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import re
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")

import tune_app  # noqa: F401  (before Ray: loopback only, token auth)


def _reports(config: dict[str, Any], report: Any, checkpoint: Any) -> None:
    """Report ``config["reports"]`` times (with a checkpoint each, if asked); write when
    the loop was entered and left."""
    entered = time.time()
    for i in range(config["reports"]):
        ckpt = None
        if config["checkpoint"]:
            folder = Path(tempfile.mkdtemp())
            (folder / "state.json").write_text(json.dumps({"epoch": i}))
            ckpt = checkpoint.from_directory(str(folder))
        report({"epoch": i}, checkpoint=ckpt)
    Path(config["out"]).write_text(json.dumps({"entered": entered, "left": time.time()}))


def loop(config: dict[str, Any]) -> None:
    """The measured loop on a Ray Train worker."""
    import ray.train

    _reports(config, ray.train.report, ray.train.Checkpoint)


def tune_loop(config: dict[str, Any]) -> None:
    """The same loop as a Tune function trial."""
    from ray import tune

    _reports(config, tune.report, tune.Checkpoint)


def _actor_processes(since: float) -> dict[str, tuple[float, float]]:
    """Per actor class started after ``since``: (process launched, process ready)."""
    import ray
    from ray.util.state import list_actors, list_workers

    this = ray.get_runtime_context().gcs_address  # not a guess: other Rays may run here
    actors = list_actors(address=this, detail=True, limit=10000)
    names = {a.get("pid"): a.get("class_name") for a in actors}
    out: dict[str, tuple[float, float]] = {}
    for w in list_workers(address=this, detail=True, limit=10000):
        launched = (w.get("worker_launch_time_ms") or 0) / 1000
        if since <= launched < since + 600 and names.get(w.get("pid")):
            ready = (w.get("start_time_ms") or 0) / 1000
            out[str(names[w.get("pid")])] = (launched - since, ready - since)
    return out


_TIMER = re.compile(r"\[Worker Group Initialization\] (.+?) in ([0-9.]+)s")


def _train_timers() -> dict[str, float]:
    """Ray Train's own per-phase timers from the newest controller's log: the worker
    group's start-up (placement group, worker actors, train context, callbacks)."""
    import ray

    node = ray._private.worker._global_node  # this driver's Ray node: its log directory
    if node is None:
        return {}
    logs = Path(node.get_logs_dir_path()) / "train"
    found = sorted(logs.glob("ray-train-sys-controller-*.log"), key=lambda p: p.stat().st_mtime)
    out: dict[str, float] = {}
    for line in found[-1].read_text().splitlines() if found else []:
        with contextlib.suppress(ValueError, AttributeError):
            match = _TIMER.search(json.loads(line).get("message", ""))
            if match:
                out[match.group(1)] = float(match.group(2))
    return out


def ray_train(
    tmp: Path,
    i: int,
    reports: int,
    checkpoint: bool,
    rays_config: bool = False,
    dataset_manager: bool = False,
) -> dict[str, float]:
    """One TorchTrainer run as tune_app builds it (or with Ray's ``TorchConfig``
    and/or Train's ``DatasetManager``); its phases in seconds."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from tune_app.run.process_group import BoundTorchConfig
    from tune_app.run.train_run import without_dataset_manager

    out = tmp / f"rt{i}{'r' if rays_config else ''}{'d' if dataset_manager else ''}.json"
    cfg = {"reports": reports, "checkpoint": checkpoint, "out": str(out)}
    start = time.time()
    trainer = TorchTrainer(
        loop,
        torch_config=TorchConfig() if rays_config else BoundTorchConfig(),  # type: ignore[arg-type]
        train_loop_config=cfg,
        scaling_config=ScalingConfig(num_workers=1, use_gpu=False),
        run_config=RunConfig(storage_path=str(tmp / "st"), name=out.stem),
    )
    (trainer if dataset_manager else without_dataset_manager(trainer)).fit()
    end = time.time()
    times = json.loads(out.read_text())
    time.sleep(1.0)  # the State API lags
    actors = _actor_processes(start)
    controller = actors.get("TrainController", (0.0, 0.0))
    worker = actors.get("RayTrainWorker", (0.0, 0.0))
    group = [v for k, v in actors.items() if k not in ("TrainController", "DatasetManager")]
    first_group = min((v[0] for v in group), default=controller[1])
    return {
        "controller process start": controller[1] - controller[0],
        "controller set-up (imports, placement group)": first_group - controller[1],
        "worker-group actors start (processes)": worker[1] - first_group,
        "worker set-up to the loop (process group, dataset manager)": times["entered"]
        - start
        - worker[1],
        "the loop (reports)": times["left"] - times["entered"],
        "teardown": end - times["left"],
        "total": end - start,
        **{f"(Train's timer) {k}": v for k, v in _train_timers().items()},
    }


def in_trial(tmp: Path, i: int, reports: int, checkpoint: bool) -> dict[str, float]:
    """One Tune function trial running the same loop; its phases in seconds."""
    from ray import tune

    out = tmp / f"it{i}.json"
    cfg = {"reports": reports, "checkpoint": checkpoint, "out": str(out)}
    start = time.time()
    tune.Tuner(
        tune_loop,
        param_space=cfg,
        run_config=tune.RunConfig(storage_path=str(tmp / "st"), name=f"it{i}", verbose=0),
    ).fit()
    end = time.time()
    times = json.loads(out.read_text())
    return {
        "trial start (actor, to the loop)": times["entered"] - start,
        "the loop (reports)": times["left"] - times["entered"],
        "teardown": end - times["left"],
        "total": end - start,
    }


def main() -> None:
    """Run both modes alternating; print mean seconds per phase."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--reports", type=int, default=3, help="reports per run (epochs)")
    ap.add_argument("--no-checkpoint", action="store_true", help="report without checkpoints")
    args = ap.parse_args()

    import ray

    from tune_app.run.placement import ensure_ray

    ensure_ray(num_cpus=2)  # as tune_app starts Ray: loopback, token auth, dashboard on
    tmp = Path(tempfile.mkdtemp(prefix="breakdown-"))
    phases: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    modes: list[tuple[str, Any]] = [
        ("ray-train", ray_train),
        (
            "ray-train, with Train's DatasetManager",
            functools.partial(ray_train, dataset_manager=True),
        ),
        (
            "ray-train, Ray's TorchConfig",
            functools.partial(ray_train, rays_config=True, dataset_manager=True),
        ),
        ("in-trial", in_trial),
    ]
    for i in range(args.repeats):
        for label, run in modes if i % 2 == 0 else modes[::-1]:
            for phase, seconds in run(tmp, i, args.reports, not args.no_checkpoint).items():
                phases[label][phase].append(seconds)
    ray.shutdown()
    ckpt = "no checkpoints" if args.no_checkpoint else "a checkpoint per report"
    print(f"\n{args.repeats} repeat(s), alternating; {args.reports} reports, {ckpt}; 2 CPUs")
    for label, rows in phases.items():
        print(f"\n{label:<62}{'mean s':>8}{'sd':>7}")
        for phase, values in rows.items():
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            print(f"  {phase:<60}{statistics.mean(values):>8.2f}{sd:>7.2f}")
    total = {label: statistics.mean(rows["total"]) for label, rows in phases.items()}
    print(f"\nray-train total / in-trial total: {total['ray-train'] / total['in-trial']:.2f}")
    manager = total["ray-train, with Train's DatasetManager"]
    print(f"ray-train total / with Train's DatasetManager: {total['ray-train'] / manager:.2f}")
    ray_cfg = total["ray-train, Ray's TorchConfig"]
    print(f"ray-train total / as Ray builds it: {total['ray-train'] / ray_cfg:.2f}")


if __name__ == "__main__":
    main()
