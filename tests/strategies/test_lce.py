"""Learning-curve extrapolation: the curve ensemble and the stopping rule."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from tests.conftest import DIGITS
from tune_app import spaces, strategies
from tune_app.strategies.lce import LearningCurveScheduler, p_beats, predict

SPACE = spaces.load(DIGITS)


@pytest.mark.parametrize(
    "curve",
    [
        lambda t: 0.95 - 0.5 * t**-0.8,  # power law
        lambda t: 0.9 - 0.6 * np.exp(-0.5 * t),  # exponential saturation
    ],
)
def test_the_ensemble_extrapolates_saturating_curves(curve) -> None:  # type: ignore[no-untyped-def]
    t = np.arange(1, 6)
    preds = predict(t, curve(t), horizon=20)
    assert {name for name, *_ in preds} >= {"pow3", "exp3"}
    assert sum(w for *_, w in preds) == pytest.approx(1.0)
    truth = float(curve(20))
    mixture = sum(w * mu for _, mu, _, w in preds)
    assert abs(mixture - truth) < 0.1
    assert p_beats(preds, truth + 0.5) < 0.05  # far above: hopeless
    assert p_beats(preds, truth - 0.5) > 0.95  # far below: beaten


def test_two_points_fit_nothing_and_decide_nothing() -> None:
    assert predict([1, 2], [0.3, 0.5], 9) == []
    assert p_beats([], 0.9) == 1.0


def _feed(sched: LearningCurveScheduler, tid: str, values: list[float]) -> list[str]:
    trial = SimpleNamespace(trial_id=tid)
    return [
        sched.on_trial_result(None, trial, {"val_accuracy": v, "epoch": e})
        for e, v in enumerate(values, start=1)
    ]


def test_a_hopeless_trial_is_stopped_a_promising_one_continues() -> None:
    sched = LearningCurveScheduler("val_accuracy", "max", max_t=9, min_epochs=3, threshold=0.05)
    good = [0.5, 0.7, 0.8, 0.85, 0.88, 0.9, 0.91, 0.92, 0.925]
    # Nothing is stopped before some trial reached the last epoch (no incumbent yet).
    assert _feed(sched, "first", [0.1, 0.12, 0.13, 0.135]) == ["CONTINUE"] * 4
    assert _feed(sched, "good", good) == ["CONTINUE"] * 9
    assert sched.incumbent == pytest.approx(0.925)
    decisions = _feed(sched, "flat", [0.1, 0.11, 0.115, 0.117])
    assert decisions[:2] == ["CONTINUE"] * 2  # before min_epochs
    assert "STOP" in decisions[2:]
    assert _feed(sched, "rising", [0.6, 0.78, 0.87, 0.91]) == ["CONTINUE"] * 4


def test_min_mode_compares_the_negated_curve() -> None:
    sched = LearningCurveScheduler("loss", "min", max_t=6, min_epochs=3, threshold=0.05)
    trial = SimpleNamespace(trial_id="a")
    for e, v in enumerate([2.0, 1.0, 0.6, 0.45, 0.4, 0.38], start=1):
        sched.on_trial_result(None, trial, {"loss": v, "epoch": e})
    assert sched.incumbent == pytest.approx(-0.38)
    bad = SimpleNamespace(trial_id="b")
    out = [
        sched.on_trial_result(None, bad, {"loss": v, "epoch": e})
        for e, v in enumerate([5.0, 4.9, 4.85, 4.83], start=1)
    ]
    assert "STOP" in out


def test_lce_composes_with_any_searcher_and_builds_from_the_registry() -> None:
    assert strategies.resolve("evolution", "lce").label == "evolution+lce"
    sched = strategies.build_scheduler("lce", SPACE, "val_accuracy", "max", 0, {"threshold": 0.1})
    assert isinstance(sched, LearningCurveScheduler)
    assert (sched.max_t, sched.min_epochs, sched.threshold) == (SPACE.max_epochs, 3, 0.1)


def test_a_restored_scheduler_decides_as_the_saved_one(tmp_path) -> None:  # type: ignore[no-untyped-def]
    sched = LearningCurveScheduler("val_accuracy", "max", max_t=9, min_epochs=3, threshold=0.05)
    _feed(sched, "good", [0.5, 0.7, 0.8, 0.85, 0.88, 0.9, 0.91, 0.92, 0.925])
    _feed(sched, "flat", [0.1, 0.11])
    sched.save(str(tmp_path / "lce.json"))
    back = LearningCurveScheduler("val_accuracy", "max", max_t=9, min_epochs=3, threshold=0.05)
    back.restore(str(tmp_path / "lce.json"))
    assert (back.incumbent, back.curves) == (sched.incumbent, sched.curves)
    trial = SimpleNamespace(trial_id="flat")
    result = {"val_accuracy": 0.115, "epoch": 3}
    assert back.on_trial_result(None, trial, result) == sched.on_trial_result(None, trial, result)
