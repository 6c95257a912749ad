"""A trial's Ray Train run: the ``TorchTrainer``, and what runs on Train's controller.

Torch-free on purpose. Train's controller unpickles the trainer's backend config,
its ``train_loop_config`` and its run callbacks, so whatever their modules import,
every trial's controller process imports too (torch: about 2 s of import time here, on the
trial's critical path). So the backend config is :mod:`tune_app.run.process_group`'s,
the callbacks live here, and the trial itself (hyperparameters, the
:class:`~tune_app.tasks.loop.TrialSpec` with its task) reaches the workers as an
object-store reference that the controller passes on without reading.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Callable
from typing import Any

from ray.train import UserCallback

# Train V2 polls its workers every 2 s by default, which dominates short trials;
# these apply in the trial process and are propagated to Train's controller.
TRAIN_ENV_DEFAULTS = {
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
    "RAY_TRAIN_ENABLE_STATE_ACTOR_RECONCILIATION": "0",
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
}
TRIAL_KEY = "trial"  # train_loop_config's one key: the reference to the trial's payload


def loop_config(config: dict[str, Any], spec: Any, trial_id: str, initial: Any) -> dict[str, Any]:
    """The trainer's ``train_loop_config``: a reference to the trial's payload, which
    the workers get (:func:`payload`) and the controller never reads."""
    import ray

    trial = {"hparams": config, "spec": spec, "trial_id": trial_id, "initial": initial}
    return {TRIAL_KEY: ray.put(trial)}


def payload(loop_cfg: dict[str, Any]) -> dict[str, Any]:
    """On a worker: the trial's payload from :func:`loop_config`'s reference."""
    import ray

    return dict(ray.get(loop_cfg[TRIAL_KEY]))


def trainer(
    train_fn: Callable[[dict[str, Any]], None],
    config: dict[str, Any],
    spec: Any,
    trial_id: str,
    initial: Any,
    name: str,
    callbacks: list[Any],
) -> Any:
    """The trial's ``TorchTrainer``, whose workers run ``train_fn`` (the loop's
    ``train_loop_per_worker``): its Train run ``name`` under the run's storage.

    Named after the trial, restarting a paused trial re-attaches to its run and Train
    resumes from its own latest checkpoint; ``initial`` is a Tune checkpoint the
    workers start from when Train has none of its own.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from tune_app.run.process_group import BoundTorchConfig

    use_gpu = spec.gpus_per_worker > 0
    resources = {"CPU": spec.cpus_per_worker}
    if use_gpu:
        resources["GPU"] = spec.gpus_per_worker
    return without_dataset_manager(
        TorchTrainer(
            train_fn,
            # The process group's rendezvous store on the node's address, not on *.
            torch_config=BoundTorchConfig(),  # type: ignore[arg-type]
            train_loop_config=loop_config(config, spec, trial_id, initial),
            scaling_config=ScalingConfig(
                num_workers=spec.num_workers, use_gpu=use_gpu, resources_per_worker=resources
            ),
            run_config=RunConfig(
                name=name,
                storage_path=spec.storage_path,
                callbacks=callbacks,
                failure_config=FailureConfig(max_failures=spec.max_failures),
                checkpoint_config=CheckpointConfig(num_to_keep=1),
            ),
        )
    )


def without_dataset_manager(trainer: Any) -> Any:
    """``trainer`` without Train's datasets callback when it has no Ray Data datasets.

    Train V2 (2.60) starts a ``DatasetManager`` actor, a process of its own, for every
    run, datasets or not (its ``DatasetsCallback``); tune_app's trials pass none
    (workers read the run's object-store data). Dropping the callback cuts that
    process from every trial's start-up (0.2 to 0.7 s of a run's 7.3-7.5 s here:
    ``benchmarks/train_breakdown.py`` and a paired probe, docs/results.md). It is Train's
    private hook, so a Ray without it leaves the trainer as it is, and the suite
    checks that no ``DatasetManager`` starts.
    """
    if trainer.datasets:
        return trainer
    try:
        from ray.train.v2._internal.callbacks.datasets import DatasetsCallback

        create = trainer._create_default_callbacks
    except (ImportError, AttributeError):
        return trainer

    def callbacks() -> list[Any]:
        return [cb for cb in create() if not isinstance(cb, DatasetsCallback)]

    trainer._create_default_callbacks = callbacks
    return trainer


def fit(
    train_fn: Callable[[dict[str, Any]], None], config: dict[str, Any], spec: Any, trial_id: str
) -> None:
    """Run the trial's Train run (workers run ``train_fn``), its reports going to Tune
    (with their checkpoints when ``spec.checkpoints_to_tune``)."""
    for key, value in TRAIN_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    if spec.checkpoints_to_tune:
        _fit_reporting_checkpoints(train_fn, config, spec, trial_id)
        return
    from ray.tune.integration.ray_train import TuneReportCallback

    name = f"train-{trial_id}"
    trainer(train_fn, config, spec, trial_id, None, name, [TuneReportCallback()]).fit()


def _fit_reporting_checkpoints(
    train_fn: Callable[[dict[str, Any]], None], config: dict[str, Any], spec: Any, trial_id: str
) -> None:
    """Run the Train run and hand Tune each report *with its checkpoint*.

    Train V2's ``TuneReportCallback`` hands Tune the metrics only, never the
    checkpoint, so Tune cannot let PBT copy a trial. Here :class:`ToTune` queues
    each report with its checkpoint, and this thread reports both to Tune. A trial
    Tune restores from a checkpoint (its own after a pause, or a PBT parent's)
    starts a Train run named after that checkpoint, whose workers load it. Two
    queue actors per trial cost about a second, so only schedulers that copy
    trials ask for this (``TrialSpec.checkpoints_to_tune``).
    """
    from ray import tune
    from ray.util.queue import Empty, Queue

    initial = tune.get_checkpoint()
    name = f"train-{trial_id}"
    if initial is not None:
        name += "-" + hashlib.sha256(initial.path.encode()).hexdigest()[:10]
    reports: Queue = Queue(1, actor_options={"num_cpus": 0})
    taken: Queue = Queue(1, actor_options={"num_cpus": 0})
    run = trainer(train_fn, config, spec, trial_id, initial, name, [ToTune(reports, taken)])
    failed: list[BaseException] = []

    def fit_run() -> None:
        try:
            run.fit()
        except BaseException as exc:  # re-raised in the trial's thread below
            failed.append(exc)
        finally:
            reports.put(None)

    thread = threading.Thread(target=fit_run, name=f"fit-{trial_id}", daemon=True)
    thread.start()
    controller = None
    try:
        while True:
            try:
                item = reports.get(timeout=0.1)
            except Empty:
                if _stopping():  # Tune pauses or stops the trial
                    return
                continue
            if item is None:
                break
            metrics, checkpoint, controller = item
            ckpt = tune.Checkpoint(checkpoint.path, checkpoint.filesystem) if checkpoint else None
            tune.report(metrics, checkpoint=ckpt)  # copies the checkpoint into Tune's storage
            taken.put(True)
    finally:
        if controller is not None and thread.is_alive():
            _abort(controller)
    thread.join()
    if failed:
        raise failed[0]


def _stopping() -> bool:
    """Whether Tune is stopping this trial (paused by a scheduler, or ended)."""
    from ray.train._internal.session import get_session

    session = get_session()
    event = getattr(session, "stop_event", None)
    return bool(event is not None and event.is_set())


def _abort(controller: Any) -> None:
    """End the trial's Train run now, so its workers' reservation is released before
    the trial resumes (Train's own cleaner only notices a dead controller later)."""
    import ray

    with contextlib.suppress(Exception):
        ray.get(controller.abort.remote(), timeout=30)


class ToTune(UserCallback):
    """On Train's controller: queue rank 0's metrics with the checkpoint, and wait
    until the trial has reported them to Tune (Train deletes its older checkpoint
    once a newer one is registered)."""

    def __init__(self, reports: Any, taken: Any) -> None:
        self.reports, self.taken = reports, taken

    def after_report(
        self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any
    ) -> None:
        """Hand the report (and this controller, to abort it) to the trial's thread;
        return once Tune has it."""
        import ray

        self.reports.put((dict(metrics[0]), checkpoint, ray.get_runtime_context().current_actor))
        self.taken.get()
