"""PBT's pieces without Tune: the first generation, exploration in the space's
geometry, and weight inheritance in the training loop."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.conftest import DIGITS
from tests.tasks.test_loop import Recorder
from tune_app import spaces, strategies
from tune_app.benchmarks import get
from tune_app.errors import TaskError
from tune_app.strategies.pbt import PopulationSearcher, SeededPBT, mutable, perturb
from tune_app.tasks.digits_mlp import DigitsMLP
from tune_app.tasks.loop import META, TrialSpec, _optimizer, _restore, look_up, train

SPACE = spaces.load(DIGITS)


def test_the_first_generation_is_the_population_then_finished() -> None:
    opts = strategies.budget_defaults("pbt", SPACE, 24)
    assert opts == {"population": 8}  # budget 24 / 3 epochs per trial
    searcher = strategies.build_searcher("pbt", SPACE, "val_accuracy", "max", 3, opts)
    assert isinstance(searcher, PopulationSearcher)
    assert searcher.set_max_concurrency(2)  # the whole population, time-sliced
    configs = [searcher.suggest(f"t{i}") for i in range(9)]
    assert all(SPACE.contains(c) for c in configs[:8])  # type: ignore[arg-type]
    assert configs[8] == "FINISHED"
    again = strategies.build_searcher("pbt", SPACE, "val_accuracy", "max", 3, opts)
    assert [again.suggest(f"t{i}") for i in range(8)] == configs[:8]


def test_exploration_moves_each_kind_of_parameter_and_stays_in_range() -> None:
    rng = random.Random(0)
    lr, hidden = SPACE.param("lr"), SPACE.param("hidden")
    for _ in range(100):
        value, op = perturb(lr, 0.01, rng, resample=0.0)
        assert value in (pytest.approx(0.008), pytest.approx(0.012)) and op in ("* 0.8", "* 1.2")
        value, _ = perturb(hidden, 128, rng, resample=0.0)  # linear int: +-20% of the range
        assert isinstance(value, int) and hidden.low <= value <= hidden.high
        value, op = perturb(lr, 0.01, rng, resample=1.0)
        assert op == "resample" and lr.low <= value <= lr.high
    finite = spaces.SearchSpace.from_dict(
        {
            "task": "t",
            "metric": "m",
            "mode": "max",
            "max_epochs": 3,
            "params": {
                "w": {"type": "int", "low": 1, "high": 9, "boxes": [1, 3, 9], "discrete": True}
            },
        }
    )
    moved = {perturb(finite.param("w"), 3, rng, resample=0.0)[0] for _ in range(50)}
    assert moved == {1, 9}  # one box left or right


def test_by_default_only_continuous_parameters_are_perturbed() -> None:
    assert mutable(SPACE, None) == ["lr", "dropout"]  # 'hidden' shapes the weights
    assert mutable(SPACE, "lr") == ["lr"]
    sched = strategies.build_scheduler("pbt", SPACE, "val_accuracy", "max", 0)
    assert isinstance(sched, SeededPBT)
    assert sched.mutate == ["lr", "dropout"] and sched._perturbation_interval == 1


@pytest.fixture(scope="module")
def parent(tmp_path_factory: pytest.TempPathFactory) -> Recorder:
    """A trial trained for 2 epochs (lr 0.01), with its checkpoints."""
    spec = TrialSpec(task=DigitsMLP(), seed=0, max_epochs=2, num_workers=0)
    rec = Recorder(tmp_path_factory.mktemp("parent"))
    train({"lr": 0.01, "hidden": 32}, spec, "parent", rec)
    return rec


def test_an_exploited_trial_continues_from_its_parents_weights(
    parent: Recorder, tmp_path: Path
) -> None:
    """The child (a much smaller lr, which alone learns slowly) reports, in its first
    epoch after the exploit, about its parent's accuracy, not a fresh model's."""
    inherited = parent.reports[-1]["val_accuracy"]
    spec = TrialSpec(task=DigitsMLP(), seed=1, max_epochs=4, num_workers=0)
    child = Recorder(tmp_path / "child", resume_from=parent.saved[-1])
    (tmp_path / "child").mkdir()
    train({"lr": 1e-4, "hidden": 32}, spec, "child", child)
    first = child.reports[0]
    assert first["epoch"] == 3  # continues the parent's epoch count
    assert (first["inherited_from"], first["inherited_epoch"]) == ("parent", 2)
    fresh = Recorder(tmp_path / "fresh")
    (tmp_path / "fresh").mkdir()
    train({"lr": 1e-4, "hidden": 32}, TrialSpec(DigitsMLP(), 1, 1, num_workers=0), "fresh", fresh)
    assert abs(first["val_accuracy"] - inherited) < 0.05
    assert first["val_accuracy"] - fresh.reports[0]["val_accuracy"] > 0.3
    assert "inherited_from" not in child.reports[-1]  # only the first report names it


def test_the_optimiser_state_is_inherited_its_hyperparameters_are_the_childs(
    parent: Recorder, tmp_path: Path
) -> None:
    config = {"lr": 3e-4, "hidden": 32}
    model = DigitsMLP().build_model(config)
    optimizer = _optimizer(model.parameters(), config)
    epoch, origin = _restore(Recorder(tmp_path, parent.saved[-1]), model, optimizer, config, "c")
    assert (epoch, origin) == (2, "parent")
    assert optimizer.param_groups[0]["lr"] == 3e-4  # not the parent's 0.01
    assert optimizer.state  # Adam's moments came along
    state = torch.load(parent.saved[-1] / "state.pt", weights_only=True)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state["model"][name])


def test_a_child_whose_shape_differs_is_a_clear_error(parent: Recorder, tmp_path: Path) -> None:
    spec = TrialSpec(task=DigitsMLP(), seed=0, max_epochs=3, num_workers=0)
    child = Recorder(tmp_path / "c", resume_from=parent.saved[-1])
    (tmp_path / "c").mkdir()
    with pytest.raises(TaskError, match=r"cannot take trial parent's weights.*mutate=lr"):
        train({"lr": 0.01, "hidden": 64}, spec, "child", child)


class _LookupReporter:
    rank, world_size = 0, 1

    def __init__(self, resume_from: Path) -> None:
        self.resume_from, self.reports, self.states = resume_from, [], []

    def report(self, metrics: dict, checkpoint_dir: str | None) -> None:
        self.reports.append(metrics)
        self.states.append(json.loads((Path(checkpoint_dir or "") / META).read_text()))

    def checkpoint_dir(self) -> Any:
        from ray.train import Checkpoint

        return Checkpoint.from_directory(str(self.resume_from))

    def broadcast(self, value: Any) -> Any:
        return value


def test_a_lookup_trial_continues_its_parents_epoch_with_its_own_config(tmp_path: Path) -> None:
    bench = get("branin_mf")
    (tmp_path / META).write_text(json.dumps({"epoch": 6, "trial_id": "parent"}))
    rec = _LookupReporter(tmp_path)
    spec = TrialSpec(task=bench, seed=0, max_epochs=bench.max_epochs, num_workers=0)
    look_up({"x1": 3.0, "x2": 2.0}, bench, spec, "child", rec)
    assert [r["epoch"] for r in rec.reports] == [7, 8, 9]
    assert rec.reports[0]["value"] == bench.evaluate({"x1": 3.0, "x2": 2.0}, 7)
    assert (rec.reports[0]["inherited_from"], rec.reports[0]["inherited_epoch"]) == ("parent", 6)
    assert rec.states[-1] == {"epoch": 9, "trial_id": "child"}  # its own checkpoints now
