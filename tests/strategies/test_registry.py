"""Registry resolution, composition and option validation."""

from __future__ import annotations

import pytest

from tests.conftest import DIGITS
from tune_app import spaces, strategies
from tune_app.errors import ConfigError

SPACE = spaces.load(DIGITS)


def test_presets_resolve() -> None:
    assert strategies.resolve("asha") == strategies.Strategy("random", "asha")
    assert strategies.resolve("optuna", "asha").label == "optuna+asha"
    assert strategies.resolve("grid").scheduler is None
    assert set(strategies.REGISTRY) >= {"grid", "random", "optuna", "hyperopt", "hyperband", "asha"}


@pytest.mark.parametrize(
    ("strategy", "scheduler", "needle"),
    [
        ("bayes", None, "unknown strategy 'bayes'; valid: grid, random"),
        ("optuna", "median", "unknown scheduler 'median'"),
        ("optuna", "grid", "is a searcher, not a scheduler"),
        ("asha", "hyperband", "already a scheduler preset"),
    ],
)
def test_bad_names_list_valid_ones(strategy: str, scheduler: str | None, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        strategies.resolve(strategy, scheduler)


# The fewest epochs a trial costs: stopped after one (halving), after lce's
# min_epochs (3 here: the whole trial), never stopped (pbt copies, it does not stop).
FEWEST = {
    "hyperband": 1,
    "asha": 1,
    "bohb": 1,
    "lce": 3,
    "pbt": SPACE.max_epochs,
    "pb2": SPACE.max_epochs,
}


@pytest.mark.parametrize("name", strategies.names("scheduler"))
def test_schedulers_build_on_the_epoch_axis(name: str) -> None:
    sched = strategies.build_scheduler(name, SPACE, "val_accuracy", "max", 0)
    assert sched.metric == "val_accuracy"
    assert strategies.min_trial_epochs(strategies.resolve(name), SPACE) == FEWEST[name]


def test_schedulers_with_their_own_searcher_compose_with_no_other() -> None:
    assert strategies.resolve("bohb") == strategies.Strategy("bohb", "bohb")
    assert strategies.resolve("bohb").label == "bohb"
    assert strategies.resolve("pbt").label == "pbt"
    assert strategies.resolve("optuna", "lce").label == "optuna+lce"  # lce composes
    for name in ("bohb", "pbt", "pb2"):
        with pytest.raises(ConfigError, match=f"run it as --strategy {name}"):
            strategies.resolve("optuna", name)
    assert "bohb" not in strategies.names("searcher")  # not in the searcher contract


def test_only_schedulers_that_copy_trials_ask_train_for_every_checkpoint() -> None:
    # Handing Tune each Ray Train checkpoint costs two queue actors per trial.
    copying = [n for n in strategies.names("scheduler") if strategies.plugin(n).copies_trials]
    assert copying == ["pbt", "pb2"]


@pytest.mark.parametrize(
    ("kind", "name", "options", "needle"),
    [
        ("searcher", "bohb", {"reduction_factor": 2}, "pass it as --scheduler-opt"),
        ("scheduler", "bohb", {"top_n_percent": 10}, "pass it as --opt top_n_percent"),
        ("searcher", "pbt", {"quantile_fraction": 0.3}, "pass it as --scheduler-opt"),
        ("scheduler", "pbt", {"population": 4}, "pass it as --opt population"),
        ("scheduler", "pbt", {"mutate": "lr,width"}, r"'mutate' names \['width'\]"),
        ("scheduler", "pbt", {"perturbation_interval": 3}, "leaves no exploit before"),
        ("scheduler", "pb2", {"resample_probability": 0.5}, "unknown option"),
        ("scheduler", "pb2", {"quantile_fraction": 0.9}, r"pb2: 'quantile_fraction'"),
        ("scheduler", "lce", {"threshold": 1.5}, "'threshold' must be a probability"),
        ("scheduler", "lce", {"min_epochs": 2}, "'min_epochs' must be an integer >= 3"),
        ("searcher", "evolution", {"tournament": 9}, "'tournament' must be an integer in 1"),
        ("searcher", "evolution", {"population": 1}, "'population' must be an integer >= 2"),
    ],
)
def test_bad_options_of_the_new_strategies(kind: str, name: str, options: dict, needle: str):
    build = strategies.build_searcher if kind == "searcher" else strategies.build_scheduler
    with pytest.raises(ConfigError, match=needle) as info:
        build(name, SPACE, "val_accuracy", "max", 0, options)
    assert "\n" not in str(info.value)  # one line


@pytest.mark.parametrize(
    ("name", "options", "needle"),
    [
        ("optuna", {"n_startup": 3}, r"unknown option\(s\) \['n_startup'\]; valid options: "),
        ("optuna", {"n_startup_trials": -1}, "must be an integer >= 0"),
        ("hyperopt", {"gamma": 2.0}, "'gamma' must be in"),
        ("random", {"x": 1}, r"valid options: \(none\)"),
        ("grid", {"shuffle": "yes"}, "'shuffle' must be true or false"),
    ],
)
def test_unknown_or_bad_options_are_errors(name: str, options: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        strategies.build_searcher(name, SPACE, "val_accuracy", "max", 0, options)


def test_bad_scheduler_options() -> None:
    with pytest.raises(ConfigError, match="grace_period"):
        strategies.build_scheduler("asha", SPACE, "val_accuracy", "max", 0, {"grace_period": 0})
    with pytest.raises(ConfigError, match="unknown option"):
        strategies.build_scheduler("hyperband", SPACE, "val_accuracy", "max", 0, {"eta": 3})


def test_hyperband_has_hyperbands_bracket_count() -> None:
    sched = strategies.build_scheduler("hyperband", SPACE, "val_accuracy", "max", 0)
    # max_epochs 3, eta 3: brackets with grace periods 1 and 3.
    assert len(sched._brackets) == 2  # type: ignore[attr-defined]
