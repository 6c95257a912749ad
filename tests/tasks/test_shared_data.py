"""A run's data store: one object-store entry per distinct load, zero-copy reads."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from tests.conftest import LocalCluster
from tests.user_tasks import Blobs
from tune_app.errors import TaskError
from tune_app.tasks import shared_data


class SplitBlobs(Blobs):
    """Blobs whose split reads the config's ``val_fraction`` (a data key)."""

    name = "split_blobs"

    def load_data(self, config: Mapping[str, Any], seed: int) -> tuple[Dataset, Dataset]:
        train, val = super().load_data(config, seed)
        n_val = round(400 * float(config.get("val_fraction", 0.25)))
        x = torch.cat([train.tensors[0], val.tensors[0]])  # type: ignore[attr-defined]
        y = torch.cat([train.tensors[1], val.tensors[1]])  # type: ignore[attr-defined]
        return TensorDataset(x[n_val:], y[n_val:]), TensorDataset(x[:n_val], y[:n_val])


class SubsetBlobs(Blobs):
    """A dataset type the store does not share."""

    name = "subset_blobs"

    def load_data(self, config: Mapping[str, Any], seed: int) -> tuple[Dataset, Dataset]:
        train, val = super().load_data(config, seed)
        return Subset(train, list(range(10))), val


class Missing(Blobs):
    """A task whose data is not there."""

    name = "missing"

    def load_data(self, config: Mapping[str, Any], seed: int) -> tuple[Dataset, Dataset]:
        raise TaskError("no blobs under /nowhere; fetch them first")


def test_one_entry_per_distinct_load_shared_zero_copy(ray_session: LocalCluster) -> None:
    import ray

    store = shared_data.start_store()
    try:
        task = SplitBlobs()
        a = shared_data.load(store, task, {"lr": 0.1, "hidden": 4}, 0)
        b = shared_data.load(store, task, {"lr": 0.5, "hidden": 16}, 0)  # hparams only
        assert ray.get(store.size.remote()) == 1
        direct = task.load_data({}, 0)
        for got in (a, b):
            for part, want in zip(got, direct, strict=True):
                for t, w in zip(part.tensors, want.tensors, strict=True):  # type: ignore[attr-defined]
                    assert torch.equal(t, w)
        # The entry is the store's read-only memory, not a copy per reader.
        (ref,) = ray.get(store.ref.remote(task, {"lr": 1.0}, 0))
        assert not ray.get(ref)["train"][0].flags.writeable
        c = shared_data.load(store, task, {"lr": 0.1, "val_fraction": 0.5}, 0)  # a data key
        d = shared_data.load(store, task, {"lr": 0.1}, 1)  # another seed
        assert ray.get(store.size.remote()) == 3
        assert len(c[1]) == 200 and len(a[1]) == 100  # type: ignore[arg-type]
        assert not torch.equal(d[0].tensors[0], a[0].tensors[0])  # type: ignore[attr-defined]
    finally:
        ray.kill(store)


def test_unshareable_or_failing_loads_fall_back_to_the_trial(ray_session: LocalCluster) -> None:
    import ray

    store = shared_data.start_store()
    try:
        assert ray.get(store.ref.remote(SubsetBlobs(), {}, 0)) is None
        train, _ = shared_data.load(store, SubsetBlobs(), {}, 0)  # loaded by the caller
        assert isinstance(train, Subset) and len(train) == 10
        with pytest.raises(TaskError, match="no blobs under /nowhere"):
            shared_data.load(store, Missing(), {}, 0)  # the task's own error, in the trial
        assert ray.get(store.size.remote()) == 0
    finally:
        ray.kill(store)


def test_the_recorded_keys_include_lookups_of_missing_keys() -> None:
    reads = shared_data._Reads({"a": 1})
    assert reads.get("a") == 1 and reads.get("b", 2) == 2 and "c" not in reads
    assert reads.read == {"a": 1, "b": shared_data._MISSING, "c": shared_data._MISSING}
    assert shared_data._matches(reads.read, {"a": 1, "z": 9})
    assert not shared_data._matches(reads.read, {"a": 1, "b": 3})
