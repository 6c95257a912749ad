"""BOHB's searcher (hpbandster's KDE through Ray's TuneBOHB) and its Hyperband."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.tune.schedulers import HyperBandForBOHB

from tune_app import strategies
from tune_app.benchmarks import get
from tune_app.strategies.base import GuardedSearcher
from tune_app.strategies.bohb import min_epochs

BENCH = get("branin_mf")
SPACE = BENCH.space


def make(seed: int = 0) -> Any:
    return strategies.build_searcher("bohb", SPACE, "value", "min", seed)


def drive(searcher: Any, n: int, start: int = 0) -> list[dict[str, Any]]:
    """Suggest, report at the full budget as HyperBandForBOHB would, complete."""
    out = []
    for i in range(start, start + n):
        cfg = searcher.suggest(f"t{i}")
        out.append(cfg)
        value = BENCH.evaluate(cfg, SPACE.max_epochs)
        result = {"value": value, "epoch": 9, "hyperband_info": {"budget": SPACE.max_epochs}}
        searcher.on_trial_result(f"t{i}", result)
        searcher.on_trial_complete(f"t{i}", result)
    return out


def test_seeded_plain_python_values_inside_the_space() -> None:
    first, again, other = drive(make(1), 6), drive(make(1), 6), drive(make(2), 6)
    assert first == again and first != other
    for cfg in first:
        assert SPACE.contains(cfg)
        assert all(type(v) is float for v in cfg.values())  # not numpy scalars


def test_the_model_proposes_once_a_budget_has_enough_results() -> None:
    searcher = make(0)
    drive(searcher, 12)  # > min_points_in_model (parameters + 1) at budget 9
    assert 9 in searcher.bohber.kde_models
    tags = [searcher.trial_tags(f"n{i}") for i in range(12) if searcher.suggest(f"n{i}")]
    assert {"bohb.model_based": "true"} in tags  # most proposals come from the KDE
    assert {"bohb.model_based": "false"} in tags  # a random_fraction stays random


def test_save_restore_continues_identically(tmp_path: Path) -> None:
    original = make(5)
    drive(original, 10)
    original.save(str(tmp_path / "bohb"))
    restored = make(5)
    restored.restore(str(tmp_path / "bohb"))
    assert drive(restored, 4, start=10) == drive(original, 4, start=10)


def test_pauses_reach_the_searcher_through_the_guard() -> None:
    guarded = GuardedSearcher(make(0))
    guarded.suggest("a")
    guarded.on_pause("a")
    assert guarded.searcher.paused == {"a"} and "a" not in guarded.searcher.running  # type: ignore[attr-defined]
    guarded.on_unpause("a")
    assert guarded.searcher.running == {"a"}  # type: ignore[attr-defined]
    guarded.on_trial_complete("unknown-trial", None, error=True)  # ignored, no KeyError


def test_the_scheduler_is_rays_hyperband_for_bohb() -> None:
    sched = strategies.build_scheduler("bohb", SPACE, "value", "min", 0, {"reduction_factor": 3})
    assert isinstance(sched, HyperBandForBOHB)
    assert min_epochs(SPACE, None) == 1  # brackets start at 1, 3 and 9 epochs
    assert min_epochs(SPACE, {"reduction_factor": 9}) == 1
