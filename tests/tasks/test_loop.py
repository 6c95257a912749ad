"""The training loop, driven in-process through a recording reporter (no Ray)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.user_tasks import Blobs, Exploding
from tune_app import tasks
from tune_app.errors import TaskError
from tune_app.tasks.digits_mlp import DigitsMLP
from tune_app.tasks.loop import STATE_FILE, TrialSpec, train


class Recorder:
    """A stand-in for Tune's reporter that keeps reports and checkpoints."""

    rank, world_size = 0, 1

    def __init__(self, tmp: Path, resume_from: Path | None = None) -> None:
        self.tmp, self.reports, self.resume_from = tmp, [], resume_from
        self.saved: list[Path] = []

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None) -> None:
        self.reports.append(metrics)
        if checkpoint_dir:
            dest = self.tmp / f"ckpt{len(self.saved)}"
            dest.mkdir()
            (dest / STATE_FILE).write_bytes((Path(checkpoint_dir) / STATE_FILE).read_bytes())
            self.saved.append(dest)

    def checkpoint_dir(self) -> Any:
        if self.resume_from is None:
            return None
        from ray.train import Checkpoint

        return Checkpoint.from_directory(str(self.resume_from))

    def broadcast(self, value: Any) -> Any:
        return value


def test_digits_learns_well_above_chance(tmp_path: Path) -> None:
    spec = TrialSpec(task=DigitsMLP(), seed=0, max_epochs=2, num_workers=0)
    rec = Recorder(tmp_path)
    train({"lr": 0.01, "hidden": 32}, spec, "t", rec)
    assert [r["epoch"] for r in rec.reports] == [1, 2]
    assert rec.reports[-1]["val_accuracy"] > 0.8  # chance is 0.1
    assert rec.reports[-1]["train_loss"] < rec.reports[0]["train_loss"]
    assert len(rec.saved) == 2


def test_resume_continues_from_the_checkpoint_epoch(tmp_path: Path) -> None:
    spec = TrialSpec(task=Blobs(), seed=0, max_epochs=3, num_workers=0)
    first = Recorder(tmp_path)
    train({"lr": 0.05}, spec, "t", first)
    resumed = Recorder(tmp_path / "r", resume_from=first.saved[0])
    (tmp_path / "r").mkdir()
    train({"lr": 0.05}, spec, "t", resumed)
    assert [r["epoch"] for r in resumed.reports] == [2, 3]


def test_diverging_trial_is_recorded_and_stopped(tmp_path: Path) -> None:
    spec = TrialSpec(task=Exploding(), seed=0, max_epochs=5, num_workers=0)
    rec = Recorder(tmp_path)
    train({"lr": 0.05}, spec, "t", rec)
    assert len(rec.reports) == 1
    assert rec.reports[0]["diverged"] == 1
    assert rec.reports[0]["val_accuracy"] != rec.reports[0]["val_accuracy"]  # NaN


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        ({"activation": "swish"}, "unknown activation 'swish'"),
        ({"layers": 0}, "at least one layer"),
        ({"dropout": -0.1}, r"dropout must be in \[0, 1\)"),
        ({"optimizer": "lbfgsx"}, "unknown optimizer"),
        ({"lr": 0.0}, "lr must be > 0"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"data_fraction": 0.0}, "data_fraction must be in"),
    ],
)
def test_bad_task_options_are_clear(tmp_path: Path, config: dict, needle: str) -> None:
    spec = TrialSpec(task=DigitsMLP(), seed=0, max_epochs=1, num_workers=0)
    with pytest.raises(TaskError, match=needle):
        train(config, spec, "t", Recorder(tmp_path))


def test_task_references_resolve() -> None:
    assert isinstance(tasks.resolve("digits_mlp"), DigitsMLP)
    assert isinstance(tasks.resolve("tests.user_tasks:Blobs"), Blobs)
    assert isinstance(tasks.resolve("tests.user_tasks:BLOBS"), Blobs)
    for bad, needle in [
        ("nope", "unknown task"),
        ("no_such_mod:X", "cannot import"),
        ("tests.user_tasks:Nope", "has no attribute"),
        ("tests.user_tasks:Dataset", "not a tune_app Task"),
    ]:
        with pytest.raises(TaskError, match=needle):
            tasks.resolve(bad)


def test_checkpoints_are_paced_by_their_cost_unless_every_epoch_is_needed(tmp_path: Path) -> None:
    from tune_app.tasks.loop import CheckpointPacer

    paced = CheckpointPacer(every_epoch=False, last_epoch=5)
    assert paced.due(1, 0.1)  # the first: its cost is not known yet
    paced.saved(1.0)
    assert not paced.due(2, 10.0)  # 10 s of training: a 1 s checkpoint would be 10%
    assert paced.due(3, 10.0)  # 20 s: 5%
    paced.saved(1.0)
    assert not paced.due(4, 1.0)
    assert paced.due(5, 1.0)  # the last epoch
    every = CheckpointPacer(every_epoch=True, last_epoch=5)
    every.saved(1.0)
    assert every.due(2, 0.0)
    # What a scheduler's trials get (the driver sets it when there is a scheduler).
    spec = TrialSpec(Blobs(), 0, 4, num_workers=0, checkpoint_every_epoch=True)
    rec = Recorder(tmp_path)
    train({"lr": 0.05}, spec, "t", rec)
    assert len(rec.saved) == 4
