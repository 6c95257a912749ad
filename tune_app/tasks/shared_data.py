"""A task's data, loaded once per run and shared through Ray's object store.

Without it every trial (every Ray Train worker of every trial) parses the task's
files again in a fresh process. A run's :class:`DataStore` actor (zero CPUs,
started by the driver) loads a task's ``(train, validation)`` split on the first
request and puts it into the object store as NumPy arrays; trials then get a
reference and read the arrays zero-copy from their node's store (Ray copies an
object to another node once, when a worker there first reads it).

Which trials can share an entry: :meth:`Task.load_data` may read any of the
config's keys (``data_dir``, ``resolution``, ``val_fraction``, a user task's own
options). The store records the keys a load read (and their values, a missing
key included) and serves that entry to every later request from the same task
and seed whose config has the same values for those keys: a deterministic
``load_data`` that reads the same values returns the same data.

Only :class:`~torch.utils.data.TensorDataset` pairs are shared (every built-in
task's); for any other dataset type, or when a load fails, the store answers
``None`` and the trial loads the data itself, as before (so a missing file still
gives the task's own one-line error, from the trial).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

MAX_ENTRIES = 8  # distinct splits kept (e.g. one per image resolution); oldest dropped
_MISSING = "<missing>"  # the value recorded for a key the config does not have


class _Reads(Mapping[str, Any]):
    """A read-only view of a config that records every key looked up."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self._config = config
        self.read: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Any:
        self.read[key] = self._config.get(key, _MISSING)
        return self._config[key]

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.read[key] = self._config.get(key, _MISSING)
        return key in self._config

    def __iter__(self) -> Iterator[str]:  # iterating reads every key
        for key in self._config:
            self.read[key] = self._config[key]
        return iter(self._config)

    def __len__(self) -> int:
        return len(self._config)


def _matches(read: Mapping[str, Any], config: Mapping[str, Any]) -> bool:
    return all(config.get(k, _MISSING) == v for k, v in read.items())


def _arrays(ds: Dataset) -> list[np.ndarray] | None:
    if not isinstance(ds, TensorDataset):
        return None
    return [t.detach().cpu().contiguous().numpy() for t in ds.tensors]


class DataStore:
    """The run's data actor: one object-store entry per distinct load."""

    def __init__(self) -> None:
        self._entries: list[tuple[str, int, dict[str, Any], Any]] = []
        self._unshareable: set[str] = set()

    def ref(self, task: Any, config: Mapping[str, Any], seed: int) -> list[Any] | None:
        """``[ref]`` to ``{"train": arrays, "val": arrays}`` for this
        split (loading it now if no entry matches), or None: load it yourself."""
        import ray

        if task.name in self._unshareable:
            return None
        for name, s, read, ref in self._entries:
            if name == task.name and s == seed and _matches(read, config):
                return [ref]
        reads = _Reads(config)
        try:
            train, val = task.load_data(reads, seed)
        except Exception:  # the trial loads it again and reports the task's own error
            return None
        parts = (_arrays(train), _arrays(val))
        if parts[0] is None or parts[1] is None:
            self._unshareable.add(task.name)
            return None
        value = {"train": parts[0], "val": parts[1]}
        ref = ray.put(value)
        self._entries.append((task.name, seed, reads.read, ref))
        del self._entries[:-MAX_ENTRIES]
        return [ref]

    def size(self) -> int:
        """Entries held (for tests)."""
        return len(self._entries)


def start_store(prefetch: tuple[Any, Mapping[str, Any], int] | None = None) -> Any:
    """Start a run's :class:`DataStore` actor (zero CPUs). ``prefetch`` (task, config,
    seed): start loading that split now, so the load overlaps the first trial's
    start-up (a run passes its space's fixed config: most trials read the same keys)."""
    import ray

    store: Any = ray.remote(num_cpus=0)(DataStore).remote()
    if prefetch is not None:
        task, config, seed = prefetch
        store.ref.remote(task, dict(config), seed)
    return store


def load(store: Any, task: Any, config: Mapping[str, Any], seed: int) -> tuple[Dataset, Dataset]:
    """``task``'s split from ``store`` (zero-copy tensors over the shared arrays), or
    loaded here when there is no store or it cannot share this task's data."""
    if store is not None:
        import ray

        refs = ray.get(store.ref.remote(task, dict(config), seed))
        if refs is not None:
            value = ray.get(refs[0])
            return _tensors(value["train"]), _tensors(value["val"])
    return task.load_data(config, seed)


def _tensors(arrays: list[np.ndarray]) -> TensorDataset:
    with warnings.catch_warnings():  # read-only store memory: the loop never writes it
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return TensorDataset(*(torch.from_numpy(a) for a in arrays))
