"""SearchRequest: every run option declared once, checked before anything starts."""

from __future__ import annotations

import dataclasses

import pytest

from tune_app.cli import build_parser
from tune_app.errors import ConfigError
from tune_app.run.request import SearchRequest, cli_fields


def test_cli_flags_take_their_defaults_from_the_request() -> None:
    args = build_parser().parse_args(["run", "--strategy", "random"])
    for f in cli_fields():
        assert getattr(args, f.name) == f.default, f.name


def test_compare_has_no_seed_flag_but_every_other_request_flag() -> None:
    args = build_parser().parse_args(["compare"])
    names = {f.name for f in cli_fields()}
    assert not hasattr(args, "seed")
    assert names - {"seed"} <= set(vars(args))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"seed": -1}, "--seed"),
        ({"seed": 2**32}, "--seed"),
        ({"strategy": ["random"]}, "strategy must be a name"),
        ({"budget_epochs": "10"}, "--budget-epochs"),
        ({"space": {"params": {}}}, "space must be"),
        ({"experiment": ""}, "--experiment"),
        ({"max_failures": -1}, "--max-failures"),
    ],
)
def test_bad_values_are_one_line_errors(changes: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        SearchRequest.make(**changes)
    assert "\n" not in str(err.value)


def test_unknown_option_is_named() -> None:
    with pytest.raises(ConfigError, match="'bogus'"):
        SearchRequest.make(bogus=1)


def test_stored_request_round_trips() -> None:
    req = SearchRequest(strategy="optuna", seed=3, budget_epochs=9, strategy_options={"a": 1})
    again = SearchRequest.from_stored(req.stored(str(req.space), None), verbose=False)
    stored = {f.name for f in dataclasses.fields(req) if f.metadata["stored"]}
    assert all(getattr(again, k) == getattr(req, k) for k in stored)
