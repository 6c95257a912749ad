"""PB2's pieces without Tune: the GP's coordinates and the bandit's explore step."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import DIGITS
from tune_app import spaces, strategies
from tune_app.errors import ConfigError
from tune_app.strategies.pb2 import SeededPB2, bounds, from_unit, to_unit

SPACE = spaces.load(DIGITS)
CHOICES = spaces.SearchSpace.from_dict(
    {
        "task": "t",
        "metric": "m",
        "mode": "max",
        "max_epochs": 3,
        "params": {
            "opt": {"type": "choice", "values": ["adam", "sgd"]},
            "w": {"type": "int", "low": 1, "high": 9, "boxes": [1, 3, 9], "discrete": True},
        },
    }
)


@pytest.mark.parametrize(
    ("space", "name", "value", "unit"),
    [
        (SPACE, "lr", 0.01, -2.0),  # log10
        (SPACE, "dropout", 0.25, 0.25),  # linear
        (CHOICES, "w", 3, 1.0),  # a finite parameter: its box index
    ],
)
def test_the_gp_coordinates_round_trip_and_stay_inside(
    space: spaces.SearchSpace, name: str, value: Any, unit: float
) -> None:
    p = space.param(name)
    assert to_unit(p, value) == pytest.approx(unit)
    assert from_unit(p, to_unit(p, value)) == pytest.approx(value)
    low, high = bounds(p)
    assert space.contains({**_any(space), name: from_unit(p, low - 5)})
    assert space.contains({**_any(space), name: from_unit(p, high + 5)})


def _any(space: spaces.SearchSpace) -> dict[str, Any]:
    return {p.name: p.boxes[0] for p in space.params}


def test_choices_are_left_out_by_default_and_refused_by_name() -> None:
    sched = strategies.build_scheduler("pb2", CHOICES, "m", "max", 0)
    assert isinstance(sched, SeededPB2) and sched.mutate == ["w"]
    with pytest.raises(ConfigError, match="unordered choices"):
        strategies.build_scheduler("pb2", CHOICES, "m", "max", 0, {"mutate": "opt,w"})
    with pytest.raises(ConfigError, match="scheduler option"):
        strategies.build_searcher("pb2", CHOICES, "m", "max", 0, {"mutate": "w"})


class Member:
    """What PB2 reads of a Tune trial."""

    experiment_tag = ""

    def __init__(self, trial_id: str, config: dict[str, Any]) -> None:
        self.trial_id, self.config = trial_id, config

    def __str__(self) -> str:
        return self.trial_id


def _explored(seed: int) -> list[dict[str, Any]]:
    """Four members report 3 epochs each; then the bottom one explores from the top."""
    sched = strategies.build_scheduler("pb2", SPACE, "val_accuracy", "max", seed)
    assert isinstance(sched, SeededPB2) and sched.mutate == ["lr", "dropout"]
    configs = [
        {"lr": lr, "hidden": 64, "dropout": d}
        for lr, d in ((1e-3, 0.1), (1e-2, 0.2), (3e-2, 0.3), (1e-1, 0.4))
    ]
    trials = [Member(f"t{i}", c) for i, c in enumerate(configs)]
    for t in trials:
        sched.on_trial_add(None, t)
    for epoch in (1, 2):  # each epoch is a row of the bandit's data, before any exploit
        for i, t in enumerate(trials):  # the larger the lr, the faster it learns here
            value = 1 - (0.9 - 0.2 * i) ** epoch
            result = {"epoch": epoch, "val_accuracy": value}
            sched._record(t, epoch, value)
            sched._save_trial_state(sched._trial_state[t], epoch, result, t)
    out = []
    with sched._seeded():
        for child in trials[:2]:
            config, ops = sched._get_new_config(child, trials[3])
            assert set(ops) == {"lr", "dropout"}
            out.append(config)
    return out


def test_the_bandit_explores_inside_the_space_only_the_mutable_parameters_and_is_seeded() -> None:
    first = _explored(seed=5)
    parent = {"lr": 1e-1, "hidden": 64, "dropout": 0.4}
    for config in first:
        assert SPACE.contains(config)
        assert config["hidden"] == 64  # copied from the parent: its weights fit
        assert config != parent  # explored at the first exploit already
    assert first[0] != first[1]  # the second pick is pushed away from the first
    assert _explored(seed=5) == first
