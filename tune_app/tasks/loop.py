"""The training loop every trial runs, on Ray Train workers or inside the trial.

``run_trial`` is the Tune function trainable. With ``num_workers >= 1`` it starts
a Ray Train (V2) ``TorchTrainer`` (:mod:`tune_app.run.train_run`, torch-free so
Train's controller starts without torch) whose workers run :func:`train_loop_per_worker`
(DDP model, data sharded per worker) and forward each epoch's report to Tune
through ``TuneReportCallback`` (with its checkpoint too, for schedulers that copy
one trial's state into another: ``TrialSpec.checkpoints_to_tune``). With
``num_workers == 0`` (Ray Train's own convention for local mode) the same loop
runs in the trial's process and reports to Tune directly: no worker group to
start, for small single-process trials.

Each epoch: ask the budget ledger for the epoch (rank 0, broadcast), train, run
validation (sums all-reduced across workers), report the task's metrics plus
``train_loss``, ``epoch``, ``diverged`` and ``node_id``, and save a checkpoint
(model + optimiser, tensors only, and the id of the trial that trained it) so
paused or failed trials resume. Lookup objectives checkpoint their epoch too.

A trial restored from a checkpoint another trial saved (population-based
training's *exploit*) continues from that trial's weights and epoch with its own
hyperparameters: the optimiser's state is inherited, its ``lr``,
``weight_decay`` and ``momentum`` are re-applied from this trial's config, and
the first report after the restore names the parent (``inherited_from``,
``inherited_epoch``), which the tracking callback records on the child run.
"""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from tune_app.errors import TaskError
from tune_app.run import train_run
from tune_app.run.budget import wait_for_epoch
from tune_app.tasks import shared_data
from tune_app.tasks.base import LookupObjective, Objective, Task, check_reported

if TYPE_CHECKING:
    from tune_app.controller.inner import InnerController, InnerSpec

STATE_FILE = "state.pt"
META = "epoch.json"  # in every checkpoint: its epoch and the trial that trained it
# (all of a lookup objective's checkpoint; beside STATE_FILE for a trained model)
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
CHECKPOINT_SHARE = 0.05  # paced checkpoints cost at most this share of the time between


class CheckpointPacer:
    """When a trial saves a checkpoint: its first and last epoch, and otherwise once
    the time since the last checkpoint reaches its cost / :data:`CHECKPOINT_SHARE`.

    A checkpoint (``torch.save`` plus Train persisting it) costs about 0.1 s over
    Ray Train here, more than a small model's epoch; paced, checkpoints cost at most
    5% of the training, and a crash retrains at most the time since the last one
    (about 20 checkpoint costs). ``every_epoch`` (schedulers that pause or copy
    trials) saves after every epoch.
    """

    def __init__(self, every_epoch: bool, last_epoch: int) -> None:
        self.every_epoch, self.last_epoch = every_epoch, last_epoch
        self.cost: float | None = None
        self.since = 0.0

    def due(self, epoch: int, elapsed: float) -> bool:
        """Whether to save after ``epoch``, which took ``elapsed`` seconds."""
        self.since += elapsed
        if self.every_epoch or self.cost is None or epoch >= self.last_epoch:
            return True
        return self.since * CHECKPOINT_SHARE >= self.cost

    def saved(self, cost: float) -> None:
        """A checkpoint was saved and reported in ``cost`` seconds."""
        self.cost, self.since = cost, 0.0


@dataclass(frozen=True)
class TrialSpec:
    """Everything a trial needs besides its hyperparameters."""

    task: Objective
    seed: int
    max_epochs: int
    fixed: Mapping[str, Any] = field(default_factory=dict)
    num_workers: int = 1
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    storage_path: str = ""
    max_failures: int = 1
    ledger: Any = None
    # Over Ray Train: hand Tune every checkpoint, for schedulers that copy trials
    # (PBT); otherwise Train keeps them and Tune gets the metrics only.
    checkpoints_to_tune: bool = False
    tune_dir: str = ""  # the run's Tune experiment directory (orphans' checkpoints)
    data: Any = None  # the run's DataStore actor (tune_app.tasks.shared_data), if any
    # A scheduler may pause or copy a trial after any epoch: it needs every epoch's
    # state. Otherwise checkpoints are paced by their cost (CheckpointPacer).
    checkpoint_every_epoch: bool = False
    inner: InnerSpec | None = None  # --inner-controller (tune_app.controller.inner)


class _Reporter(Protocol):
    rank: int
    world_size: int

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None: ...

    def checkpoint_dir(self) -> Any: ...

    def broadcast(self, value: Any) -> Any: ...


class _TuneReporter:
    """In-trial execution (``num_workers == 0``): report straight to Tune."""

    rank = 0
    world_size = 1

    def __init__(self, initial: Any = None) -> None:
        self.initial = initial  # after a resume: a checkpoint newer than Tune's

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        from ray import tune

        ckpt = tune.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        tune.report(metrics, checkpoint=ckpt)

    def checkpoint_dir(self) -> Any:
        from ray import tune

        return self.initial or tune.get_checkpoint()

    def broadcast(self, value: Any) -> Any:
        return value


class _TrainReporter:
    """A Ray Train worker: every rank reports; rank 0's metrics reach Tune."""

    def __init__(self, initial: Any = None) -> None:
        import ray.train

        ctx = ray.train.get_context()
        self.rank = ctx.get_world_rank()
        self.world_size = ctx.get_world_size()
        self.initial = initial  # the Tune checkpoint the trial (re)started from

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        import ray.train

        ckpt = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=ckpt)

    def checkpoint_dir(self) -> Any:
        import ray.train

        # This Train run's own latest (a worker group restarted after a failure),
        # else the one Tune restored the trial from (paused, or a PBT parent's).
        return ray.train.get_checkpoint() or self.initial

    def broadcast(self, value: Any) -> Any:
        from ray.train.collective import broadcast_from_rank_zero

        return broadcast_from_rank_zero(value)


def run_trial(config: dict[str, Any], spec: TrialSpec) -> None:
    """Tune function trainable: one configuration, trained for up to ``max_epochs``."""
    from ray import tune

    # After a resume, a trial may continue one the dead driver started (an orphan):
    # it then trains under that trial's id, from that trial's last checkpoint.
    lineage, recorded, final = _start(spec, tune.get_context().get_trial_id() or "trial")
    if final is not None:  # Tune restored a trial that ended after its snapshot
        tune.report(final)
        return
    trial_id = lineage[0]
    if isinstance(spec.task, LookupObjective):  # nothing to train, no workers needed
        initial = _resume_point(spec, lineage, recorded)
        look_up(config, spec.task, spec, trial_id, _TuneReporter(initial))
        return
    if spec.num_workers == 0:
        train(config, spec, trial_id, _TuneReporter(_resume_point(spec, lineage, recorded)))
        return

    train_run.fit(train_loop_per_worker, config, spec, trial_id)


def _start(spec: TrialSpec, trial_id: str) -> tuple[list[str], int, dict[str, float] | None]:
    """The ledger's :meth:`~tune_app.run.ledger.EpochLedger.start` (no ledger: a
    fresh trial)."""
    if spec.ledger is None:
        return [trial_id], 0, None
    import ray

    lineage, recorded, final = ray.get(spec.ledger.start.remote(trial_id))
    return [str(t) for t in lineage], int(recorded), final


def _resume_point(spec: TrialSpec, lineage: list[str], recorded: int) -> Any:
    """After a resume (``recorded`` epochs of this trial in the journal): the
    checkpoint of the latest epoch, at most ``recorded``, that Tune saved for any
    trial of ``lineage`` under the run's ``tune_dir``, or None.

    Tune restores a trial from the checkpoint its last snapshot knew, which may be
    older than the journal (or none); a trial continuing one a dead driver started
    (an *orphan*) has its checkpoints in trial directories the resumed Tune does
    not know. Both continue from the newest one instead of retraining. A checkpoint
    saved after the last result the journal holds is skipped: that epoch is trained
    again, so its result is recorded.
    """
    from ray import tune

    if not spec.tune_dir or recorded < 1:
        return None
    own = tune.get_checkpoint()  # Tune's, or one of this trial from this driver
    best: tuple[int, str] | None = (_epoch(own), "") if own is not None else None
    for tid in lineage:
        for path in Path(spec.tune_dir).glob(f"*_{tid}_*/checkpoint_*/{META}"):
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                found = (int(json.loads(path.read_text())["epoch"]), str(path.parent))
                if found[0] <= recorded and (best is None or found[0] > best[0]):
                    best = found
    if best is None or not best[1]:  # none, or Tune's own is the newest
        return None
    return tune.Checkpoint.from_directory(best[1])


def _epoch(checkpoint: Any) -> int:
    """The epoch a checkpoint was saved at (0: unknown)."""
    with (
        contextlib.suppress(OSError, ValueError, KeyError, TypeError),
        checkpoint.as_directory() as d,
    ):
        return int(json.loads((Path(d) / META).read_text())["epoch"])
    return 0


def look_up(
    hparams: Mapping[str, Any],
    objective: LookupObjective,
    spec: TrialSpec,
    trial_id: str,
    reporter: _Reporter,
) -> None:
    """Report a lookup objective's stored/computed curve epoch by epoch, under the budget."""
    import ray

    config = {**spec.fixed, **hparams}
    start, parent = 0, None
    ckpt = reporter.checkpoint_dir()
    if ckpt is not None:  # paused, resumed or (PBT) exploited: continue from its epoch
        with ckpt.as_directory() as d:
            path = Path(d) / META
            if path.exists():
                state = json.loads(path.read_text())
                start, parent = int(state["epoch"]), str(state.get("trial_id", trial_id))
    node_id = ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
    for epoch in range(start + 1, spec.max_epochs + 1):
        if spec.ledger is not None and not wait_for_epoch(spec.ledger, trial_id, epoch):
            return
        metrics = objective.lookup(config, epoch)
        check_reported(objective, metrics)
        diverged = not all(math.isfinite(v) for v in metrics.values())
        report = {**metrics, "epoch": epoch, "diverged": int(diverged), "node_id": node_id}
        if epoch == start + 1:
            report.update(_inherited(parent, trial_id, start))
        with tempfile.TemporaryDirectory() as tmp:
            state = {"epoch": epoch, "trial_id": trial_id}
            (Path(tmp) / META).write_text(json.dumps(state))
            reporter.report(report, tmp)
        if diverged:
            return


def _inherited(parent: str | None, trial_id: str, epoch: int) -> dict[str, Any]:
    """What the first report after a restore says about a parent other than itself."""
    if parent is None or parent == trial_id:
        return {}
    return {"inherited_from": parent, "inherited_epoch": epoch}


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train entry point on every worker (``loop_config``: :func:`train_run.loop_config`)."""
    trial = train_run.payload(loop_config)
    reporter = _TrainReporter(trial["initial"])
    train(trial["hparams"], trial["spec"], trial["trial_id"], reporter)


def _device(spec: TrialSpec, reporter: _Reporter) -> torch.device:
    if spec.gpus_per_worker > 0 and torch.cuda.is_available():
        if isinstance(reporter, _TrainReporter):
            import ray.train.torch

            return ray.train.torch.get_device()
        return torch.device("cuda")
    return torch.device("cpu")


def _optimizer(params: Any, config: Mapping[str, Any]) -> torch.optim.Optimizer:
    name = str(config.get("optimizer", "adam")).lower()
    lr = float(config.get("lr", 1e-3))
    wd = float(config.get("weight_decay", 0.0))
    if not lr > 0:
        raise TaskError(f"lr must be > 0, got {lr}")
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if name == "sgd":
        return torch.optim.SGD(
            params, lr=lr, weight_decay=wd, momentum=float(config.get("momentum", 0.0))
        )
    if name == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr, weight_decay=wd)
    raise TaskError(f"unknown optimizer {name!r}; use one of {', '.join(OPTIMIZERS)}")


def _subset(ds: Dataset, fraction: float, seed: int) -> Dataset:
    """A seeded random fraction of ``ds`` (the data-subset fidelity knob)."""
    if not 0.0 < fraction <= 1.0:
        raise TaskError(f"data_fraction must be in (0, 1], got {fraction}")
    if fraction == 1.0:
        return ds
    n = len(ds)  # type: ignore[arg-type]
    keep = max(1, round(n * fraction))
    idx = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:keep]
    return Subset(ds, idx.tolist())


def train(hparams: Mapping[str, Any], spec: TrialSpec, trial_id: str, reporter: _Reporter) -> None:
    """Train one configuration; report once per epoch until done, refused or diverged."""
    import ray

    config = {**spec.fixed, **hparams}
    task = spec.task
    if not isinstance(task, Task):
        raise TaskError(f"{task.name} is a lookup objective: it has no model to train")
    task.validate_config(config)
    torch.manual_seed(spec.seed)
    device = _device(spec, reporter)

    loading = time.perf_counter()
    train_ds, val_ds = shared_data.load(spec.data, task, config, spec.seed)
    data_s = time.perf_counter() - loading
    train_ds = _subset(train_ds, float(config.get("data_fraction", 1.0)), spec.seed)
    rank, world = reporter.rank, reporter.world_size
    sampler: DistributedSampler = DistributedSampler(
        train_ds, num_replicas=world, rank=rank, shuffle=True, seed=spec.seed
    )
    batch_size = int(config.get("batch_size", 64))
    if batch_size < 1:
        raise TaskError(f"batch_size must be >= 1, got {batch_size}")
    train_loader = DataLoader(train_ds, batch_size=batch_size, sampler=sampler)
    val_idx = list(range(rank, len(val_ds), world))  # type: ignore[arg-type]
    val_loader = DataLoader(Subset(val_ds, val_idx), batch_size=max(batch_size, 256))

    model = task.build_model(config).to(device)
    optimizer = _optimizer(model.parameters(), config)
    inner: InnerController | None = None
    if spec.inner is not None:
        from tune_app.controller.inner import InnerController

        inner = InnerController(spec.inner, model, optimizer, world, rank, device)
    start_epoch, parent = _restore(reporter, model, optimizer, config, trial_id, inner)
    net: nn.Module = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    node_id = ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
    pacer = CheckpointPacer(spec.checkpoint_every_epoch, spec.max_epochs)
    for epoch in range(start_epoch + 1, spec.max_epochs + 1):
        granted = True
        if rank == 0 and spec.ledger is not None:
            granted = wait_for_epoch(spec.ledger, trial_id, epoch)
        if world > 1:
            granted = bool(reporter.broadcast(granted))
        if not granted:
            return
        sampler.set_epoch(epoch)
        net.train()
        loss_sum, seen, diverged = 0.0, 0, False
        started = time.perf_counter()
        for x, y in train_loader:
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad(set_to_none=True)
            loss = task.loss(net(x), y)
            if not torch.isfinite(loss):
                diverged = True
                break
            loss.backward()
            optimizer.step()
            if inner is not None:
                inner.after_step(loss)  # every K steps: keep or undo the block, set lr/wd
            loss_sum += loss.item() * len(y)
            seen += len(y)
        train_time_s = time.perf_counter() - started  # the training pass only
        metrics = _validate(task, net, val_loader, device, world)
        check_reported(task, metrics)  # a clear TaskError, not a TypeError below
        stats = torch.tensor([loss_sum, float(seen), float(diverged)], dtype=torch.float64)
        if world > 1:
            stats = _all_reduce(stats, device)
        diverged = bool(stats[2] > 0)
        if diverged or not all(math.isfinite(v) for v in metrics.values()):
            # Recorded as non-finite; the searcher treats it as the worst result.
            metrics = {k: float("nan") for k in metrics}
            diverged = True
        report: dict[str, Any] = {
            **metrics,
            "train_loss": float(stats[0]) / max(float(stats[1]), 1.0)
            if not diverged
            else float("nan"),
            "epoch": epoch,
            "diverged": int(diverged),
            "node_id": node_id,
            "train_time_s": train_time_s,
        }
        if epoch == start_epoch + 1:
            report.update(_inherited(parent, trial_id, start_epoch), data_s=data_s)
        if inner is not None:
            report.update(inner.report())
        save = pacer.due(epoch, time.perf_counter() - started)
        saving = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            ckpt = None
            if rank == 0 and save and not diverged:
                torch.save(
                    {
                        "model": model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "epoch": epoch,
                        "trial_id": trial_id,
                        **({"inner": inner.state_dict()} if inner is not None else {}),
                    },
                    Path(tmp) / STATE_FILE,
                )
                (Path(tmp) / META).write_text(json.dumps({"epoch": epoch, "trial_id": trial_id}))
                ckpt = tmp
            reporter.report(report, ckpt)
        if save:
            pacer.saved(time.perf_counter() - saving)
        if diverged:
            return


def _validate(
    task: Task, net: nn.Module, loader: DataLoader, device: torch.device, world: int
) -> dict[str, float]:
    net.eval()
    sums: dict[str, float] = {}
    count = 0
    with torch.no_grad():
        for x, y in loader:
            out = net(x.to(device))
            for k, v in task.eval_sums(out, y.to(device)).items():
                sums[k] = sums.get(k, 0.0) + v
            count += len(y)
    if world > 1:
        keys = sorted(sums)
        t = torch.tensor([sums[k] for k in keys] + [float(count)], dtype=torch.float64)
        t = _all_reduce(t, device)
        sums = dict(zip(keys, t[:-1].tolist(), strict=True))
        count = int(t[-1])
    return task.eval_metrics(sums, count)


def _all_reduce(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Sum ``t`` over workers (NCCL needs the tensor on the worker's GPU)."""
    t = t.to(device)
    torch.distributed.all_reduce(t)
    return t.cpu()


def _restore(
    reporter: _Reporter,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    config: Mapping[str, Any],
    trial_id: str,
    inner: InnerController | None = None,
) -> tuple[int, str | None]:
    """Load the latest checkpoint if the trial is resuming (or, under PBT, continues
    another trial's), with the inner controller's state; return its epoch and the
    trial that saved it."""
    ckpt = reporter.checkpoint_dir()
    if ckpt is None:
        return 0, None
    with ckpt.as_directory() as d:
        path = Path(d) / STATE_FILE
        if not path.exists():
            return 0, None
        # Tensors only: never unpickle arbitrary objects from storage.
        state = torch.load(path, map_location="cpu", weights_only=True)
    parent = str(state.get("trial_id", trial_id))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        if parent == trial_id:
            raise
        first = str(exc).strip().splitlines()[-1].strip()
        raise TaskError(
            f"trial {trial_id} cannot take trial {parent}'s weights: its configuration "
            f"changes the model's shape ({first}); let pbt perturb only parameters that "
            f"keep the shape, e.g. --scheduler-opt mutate=lr"
        ) from None
    optimizer.load_state_dict(state["optimizer"])
    # The optimiser's state is inherited; its hyperparameters are this trial's own.
    fresh = _optimizer([torch.zeros(1, requires_grad=True)], config).param_groups[0]
    for group in optimizer.param_groups:
        for key in ("lr", "weight_decay", "momentum"):
            if key in group and key in fresh:
                group[key] = fresh[key]
    if inner is not None:  # after the reset: its values scale this trial's own
        inner.load_state_dict(state.get("inner"))
    return int(state["epoch"]), parent
