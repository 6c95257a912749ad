"""Tasks (objectives) and their registry.

``TASKS`` is the one list of built-in task names; :func:`resolve` also accepts a
:class:`Task` object or a ``"module:attr"`` reference to a user's own task.
"""

from __future__ import annotations

import importlib
from typing import Any

from tune_app.benchmarks.registry import BENCHMARKS
from tune_app.errors import TaskError
from tune_app.tasks.base import ClassificationTask, LookupObjective, Objective, Task
from tune_app.tasks.data import resolve_data_dir, with_data_dir

__all__ = [
    "TASKS",
    "ClassificationTask",
    "LookupObjective",
    "Objective",
    "Task",
    "resolve",
    "resolve_data_dir",
    "with_data_dir",
]

# name -> "module:attr" (imported lazily so listing tasks imports nothing heavy)
MODEL_TASKS: dict[str, str] = {
    "digits_mlp": "tune_app.tasks.digits_mlp:DigitsMLP",
    "mnist_cnn": "tune_app.tasks.mnist_cnn:MNISTCNN",
    "cifar10_mlp": "tune_app.tasks.cifar10_mlp:CIFAR10MLP",
    "covertype_mlp": "tune_app.tasks.covertype_mlp:CovertypeMLP",
    "keypoints_cnn": "tune_app.tasks.keypoints_cnn:KeypointsCNN",
}
# Every objective by name: the model tasks, then the known-optimum benchmarks
# (their one list is tune_app.benchmarks.BENCHMARKS).
TASKS: dict[str, str] = {**MODEL_TASKS, **BENCHMARKS}


def resolve(ref: Any) -> Objective:
    """Turn an objective, built-in name or ``"module:attr"`` into an :class:`Objective`."""
    if isinstance(ref, Objective):
        return ref
    if isinstance(ref, type) and issubclass(ref, Objective):
        return ref()
    if not isinstance(ref, str) or not ref:
        raise TaskError(f"task must be a Task, a built-in name or 'module:attr', got {ref!r}")
    if ref in BENCHMARKS:
        from tune_app import benchmarks

        return benchmarks.get(ref)
    target = TASKS.get(ref, ref)
    if ":" not in target:
        raise TaskError(
            f"unknown task {ref!r}; use one of {', '.join(TASKS)} or a 'module:attr' reference"
        )
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise TaskError(
            f"cannot import task module {module_name!r} ({exc}); check the name and "
            f"that it is on PYTHONPATH"
        ) from None
    obj = getattr(module, attr, None)
    if obj is None:
        raise TaskError(f"module {module_name!r} has no attribute {attr!r}")
    if isinstance(obj, type) and issubclass(obj, Objective):
        return obj()
    if isinstance(obj, Objective):
        return obj
    raise TaskError(
        f"{target!r} is a {type(obj).__name__}, not a tune_app Task; subclass "
        f"tune_app.tasks.ClassificationTask (see README, 'Your own task')"
    )
