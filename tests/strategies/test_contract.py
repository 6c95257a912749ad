"""The contract every registered searcher passes (new ones are tested automatically)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from ray.tune.search import Searcher

from tests.conftest import DIGITS
from tune_app import spaces, strategies
from tune_app.strategies.base import GuardedSearcher

SEARCHERS = strategies.names("searcher")
SPACE = spaces.load(DIGITS)


def objective(config: dict[str, Any]) -> float:
    """A smooth deterministic stand-in for validation accuracy."""
    return 1.0 - (math.log10(config["lr"]) + 2.0) ** 2 / 10 - config["dropout"] / 4


def make(name: str, seed: int = 0) -> Searcher:
    return strategies.build_searcher(name, SPACE, "val_accuracy", "max", seed)


def drive(searcher: Searcher, n: int, start: int = 0, results: Any = None) -> list[dict]:
    """Suggest/complete ``n`` trials in sequence; return the suggestions."""
    out = []
    for i in range(start, start + n):
        tid = f"t{i}"
        cfg = searcher.suggest(tid)
        if cfg is None or cfg == Searcher.FINISHED:
            break
        out.append(cfg)
        value = results(i, cfg) if results else objective(cfg)
        searcher.on_trial_complete(tid, {"val_accuracy": value, "epoch": 3})
    return out


@pytest.mark.parametrize("name", SEARCHERS)
def test_suggestions_stay_inside_the_space(name: str) -> None:
    configs = drive(make(name), 8)
    assert len(configs) == 8
    for cfg in configs:
        assert SPACE.contains(cfg), cfg


@pytest.mark.parametrize("name", SEARCHERS)
def test_same_seed_same_configs(name: str) -> None:
    assert drive(make(name, seed=3), 7) == drive(make(name, seed=3), 7)


@pytest.mark.parametrize("name", [n for n in SEARCHERS if n != "grid"])
def test_different_seeds_differ(name: str) -> None:
    assert drive(make(name, seed=1), 3) != drive(make(name, seed=2), 3)


@pytest.mark.parametrize("name", SEARCHERS)
def test_nan_inf_missing_and_failed_results_do_not_crash(name: str) -> None:
    guarded = GuardedSearcher(make(name))
    bad: list[Any] = [float("nan"), float("inf"), -float("inf"), None, "oops"]

    def results(i: int, cfg: dict[str, Any]) -> Any:
        return bad[i] if i < len(bad) else objective(cfg)

    configs = drive(guarded, 8, results=results)
    guarded.suggest("failed")
    guarded.on_trial_complete("failed", None, error=True)
    configs += drive(guarded, 2, start=20)
    assert len(configs) == (SPACE.grid_size if name == "grid" else 10)
    assert all(SPACE.contains(c) for c in configs)


@pytest.mark.parametrize("name", SEARCHERS)
def test_save_restore_round_trip(name: str, tmp_path: Path) -> None:
    original = make(name, seed=5)
    drive(original, 4)
    pending = original.suggest("pending")  # a trial still running at save time
    path = str(tmp_path / "state")
    original.save(path)
    restored = make(name, seed=5)
    restored.restore(path)
    nxt_original, nxt_restored = original.suggest("next"), restored.suggest("next")
    assert nxt_restored == nxt_original
    assert nxt_restored != pending or name != "grid"


def test_grid_visits_every_box_once_then_finishes() -> None:
    searcher = make("grid")
    configs = drive(searcher, 100)
    assert len(configs) == SPACE.grid_size
    assert {tuple(sorted(c.items())) for c in configs} == {
        tuple(sorted(c.items())) for c in SPACE.grid()
    }
    assert searcher.suggest("after") == Searcher.FINISHED


DISCRETE = spaces.SearchSpace.from_dict(
    {
        "task": "digits_mlp",
        "metric": "val_accuracy",
        "mode": "max",
        "max_epochs": 3,
        "params": {
            "lr": {"type": "loguniform", "low": 1e-4, "high": 0.3, "boxes": 6, "discrete": True},
            "hidden": {
                "type": "int",
                "low": 8,
                "high": 128,
                "boxes": [8, 32, 128],
                "discrete": True,
            },
            "dropout": {"type": "uniform", "low": 0.0, "high": 0.5, "discrete": True},
        },
    }
)


@pytest.mark.parametrize("name", SEARCHERS)
def test_discrete_parameters_get_only_box_values(name: str) -> None:
    searcher = strategies.build_searcher(name, DISCRETE, "val_accuracy", "max", 0)
    configs = drive(searcher, 14)
    assert len(configs) == 14
    for cfg in configs:
        for p in DISCRETE.params:
            assert cfg[p.name] in p.boxes, (p.name, cfg[p.name], p.boxes)
