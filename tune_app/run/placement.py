"""Ray start-up and trial placement: how many trials fit at once, and where.

Trial resources and worker-group resources are separate in Ray Train V2: a Tune
trial only *waits* on its ``TorchTrainer``, whose workers reserve the CPUs/GPUs.
So the trial itself reserves almost nothing, and the concurrency limit is
computed from the cluster's resources so that every running trial's worker group
fits; trials never wait forever for workers.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from tune_app.errors import ConfigError
from tune_app.run.train_run import TRAIN_ENV_DEFAULTS

# A trial that only supervises a worker group reserves 1 MiB of memory and no CPU.
SUPERVISOR_RESOURCES = {"memory": 1024.0**2}


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Connect to ``address`` (or ``$RAY_ADDRESS``), else start an embedded local Ray.

    A local start listens on 127.0.0.1 only (``tune_app/__init__.py`` sets
    ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` before Ray is imported) and keeps
    Ray's token authentication.
    """
    import ray

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        try:
            ray.init(address=address, log_to_driver=True)
        except ConnectionError as exc:
            raise ConfigError(
                f"cannot connect to Ray at {address!r} ({exc}); start the cluster or "
                f"omit --address to use an embedded local Ray"
            ) from None
        return
    ray.init(
        # "local": always a new embedded instance, never a stray `ray start` cluster
        # found on this machine (that one is used only when asked for by address).
        address="local",
        num_cpus=num_cpus or os.cpu_count() or 1,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        log_to_driver=False,
        runtime_env={"env_vars": dict(TRAIN_ENV_DEFAULTS)},
    )


@dataclass(frozen=True)
class Placement:
    """How trials are laid out on the cluster."""

    num_workers: int
    cpus_per_worker: float
    gpus_per_worker: float
    max_concurrent: int
    trial_resources: dict[str, float]

    def describe(self) -> str:
        """One line for the start of a run."""
        how = (
            "in-trial (no worker group)"
            if self.num_workers == 0
            else f"{self.num_workers} Ray Train worker(s) each"
        )
        return (
            f"{self.max_concurrent} trial(s) at once, {how}, "
            f"{self.cpus_per_worker:g} CPU(s) and {self.gpus_per_worker:g} GPU(s) per worker"
        )


def plan(
    resources: dict[str, Any],
    num_workers: int = 1,
    gpus_per_worker: float | None = None,
    cpus_per_worker: float = 1.0,
    max_concurrent: int | None = None,
) -> Placement:
    """Size trials from the cluster's total ``resources`` (``ray.cluster_resources()``).

    ``gpus_per_worker=None`` means one GPU per worker when the cluster has GPUs,
    none otherwise. ``num_workers=0`` runs the loop inside the trial process.
    """
    if num_workers < 0:
        raise ConfigError(f"--num-workers must be >= 0, got {num_workers}")
    if cpus_per_worker <= 0:
        raise ConfigError(f"--cpus-per-worker must be > 0, got {cpus_per_worker}")
    total_cpu = float(resources.get("CPU", 0))
    total_gpu = float(resources.get("GPU", 0))
    if gpus_per_worker is None:
        gpus_per_worker = 1.0 if total_gpu >= 1 else 0.0
    if gpus_per_worker < 0:
        raise ConfigError(f"--gpus-per-worker must be >= 0, got {gpus_per_worker}")
    if gpus_per_worker > 1 and gpus_per_worker != int(gpus_per_worker):
        raise ConfigError("--gpus-per-worker above 1 must be a whole number")
    workers = max(num_workers, 1)
    need_cpu, need_gpu = workers * cpus_per_worker, workers * gpus_per_worker
    if need_cpu > total_cpu + 1e-9:
        raise ConfigError(
            f"one trial needs {need_cpu:g} CPU(s) ({workers} worker(s) x {cpus_per_worker:g}) "
            f"but the cluster has {total_cpu:g}; lower --num-workers or --cpus-per-worker"
        )
    if need_gpu > total_gpu + 1e-9:
        raise ConfigError(
            f"one trial needs {need_gpu:g} GPU(s) but the cluster has {total_gpu:g}; "
            f"lower --gpus-per-worker (0 for CPU) or --num-workers"
        )
    fits = math.floor(total_cpu / need_cpu + 1e-9)
    if need_gpu > 0:
        fits = min(fits, math.floor(total_gpu / need_gpu + 1e-9))
    if max_concurrent is not None:
        if max_concurrent < 1:
            raise ConfigError(f"--max-concurrent must be >= 1, got {max_concurrent}")
        fits = min(fits, max_concurrent)
    if num_workers == 0:
        trial = {"CPU": cpus_per_worker, "GPU": gpus_per_worker}
    else:
        trial = dict(SUPERVISOR_RESOURCES)
    return Placement(num_workers, cpus_per_worker, gpus_per_worker, max(fits, 1), trial)


# Every state but REMOVED: a group still PREPARED (two-phase commit) when a search ends
# becomes CREATED a moment later, and held a CPU for good when it was skipped here.
_LIVE_PG_STATES = ("PENDING", "PREPARED", "CREATED", "RESCHEDULING")


def live_placement_groups() -> set[str]:
    """Ids of this driver's job's placement groups that still hold or wait for resources."""
    import ray
    from ray.util.placement_group import placement_group_table

    job = ray.get_runtime_context().get_job_id()
    return {
        pg_id
        for pg_id, info in placement_group_table().items()
        if info.get("state") in _LIVE_PG_STATES and pg_id.endswith(job)
    }


def release_leaked_groups(before: set[str]) -> set[str]:
    """Remove this job's placement groups created since ``before`` that outlived their trials.

    Called when a search has ended, so no trial of it needs resources any more. Ray
    Train's own cleaner removes a worker group's placement group when its
    controller dies, but after injected faults (killed workers, failing trials) we
    saw reservations survive and starve every later trial on the cluster; a
    placement group id ends with its job id, so only this driver's are touched.
    """
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    leaked = live_placement_groups() - before
    for pg_id in leaked:
        try:
            remove_placement_group(PlacementGroup(PlacementGroupID(bytes.fromhex(pg_id))))
        except Exception:
            continue
    return leaked
