"""Regularized evolution: random first generation, tournaments, one-box mutations,
the oldest member dies (the shared contract is in test_contract.py)."""

from __future__ import annotations

import math
import random
from typing import Any

from tests.conftest import DIGITS
from tune_app import spaces, strategies
from tune_app.benchmarks import get
from tune_app.strategies.evolution import RegularizedEvolution, mutate

SPACE = spaces.load(DIGITS)
TABLE = get("digits_tabular").space  # every parameter discrete


def _moved(space: spaces.SearchSpace, a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    return [p.name for p in space.params if a[p.name] != b[p.name]]


def test_first_generation_is_random_then_children_are_one_box_mutations() -> None:
    evo = RegularizedEvolution(TABLE, "val_accuracy", "max", seed=1, population=4, tournament=2)
    bench = get("digits_tabular")
    configs = []
    for i in range(12):
        cfg = evo.suggest(f"t{i}")
        assert cfg is not None and TABLE.contains(cfg)
        configs.append(cfg)
        evo.on_trial_complete(f"t{i}", {"val_accuracy": bench.evaluate({**TABLE.fixed, **cfg}, 9)})
    for i in range(4):
        assert evo.trial_tags(f"t{i}") == {"evolution.origin": "random"}
    for i in range(4, 12):
        tags = evo.trial_tags(f"t{i}")
        assert tags["evolution.origin"] == "mutation"
        parent = configs[int(tags["evolution.parent"][1:])]
        child = configs[i]
        assert _moved(TABLE, parent, child) == [tags["evolution.mutated"]]  # one parameter
        p = TABLE.param(tags["evolution.mutated"])
        assert abs(p.box_index(child[p.name]) - p.box_index(parent[p.name])) == 1  # one box
    assert len({tuple(sorted(c.items())) for c in configs}) == 12  # no config twice


def test_continuous_parameters_move_about_one_box_width_and_stay_in_range() -> None:
    lr = SPACE.param("lr")  # loguniform, 4 boxes: one box = a third of the log range
    width = (math.log(lr.high) - math.log(lr.low)) / 3
    rng = random.Random(0)
    for _ in range(200):
        x = math.exp(rng.uniform(math.log(lr.low), math.log(lr.high)))
        y = mutate(lr, x, rng)
        assert lr.low <= y <= lr.high
        assert 0 < abs(math.log(y) - math.log(x)) <= 1.5 * width + 1e-9
    hidden = SPACE.param("hidden")  # int
    assert all(isinstance(mutate(hidden, 64, rng), int) for _ in range(20))


def test_the_oldest_member_dies_not_the_worst() -> None:
    evo = RegularizedEvolution(SPACE, "val_accuracy", "max", seed=0, population=3, tournament=3)
    for i in range(5):
        evo.suggest(f"t{i}")
    # Completion order differs from birth order; the best member is the oldest.
    for i, value in [(0, 0.99), (2, 0.1), (1, 0.2), (3, 0.3), (4, 0.4)]:
        evo.on_trial_complete(f"t{i}", {"val_accuracy": value})
    assert sorted(m["trial"] for m in evo.members) == ["t2", "t3", "t4"]


def test_tournament_picks_the_best_of_the_drawn_and_failures_are_worst() -> None:
    evo = RegularizedEvolution(SPACE, "val_accuracy", "min", seed=0, population=2, tournament=2)
    evo.suggest("a"), evo.suggest("b")
    evo.on_trial_complete("a", {"val_accuracy": 0.5})
    evo.on_trial_complete("b", None, error=True)
    for i in range(10):  # every tournament that draws 'a' must pick it
        evo.suggest(f"c{i}")
        assert evo.trial_tags(f"c{i}").get("evolution.parent") in (None, "a")


def test_a_scheduler_stopped_trial_counts_with_its_last_value() -> None:
    evo = strategies.build_searcher("evolution", SPACE, "val_accuracy", "max", 0)
    evo.suggest("t0")
    evo.on_trial_result("t0", {"val_accuracy": 0.7, "epoch": 1})
    evo.on_trial_complete("t0", {"epoch": 1})  # stopped early: no metric in the last result
    assert evo.members[0]["value"] == 0.7  # type: ignore[attr-defined]
