"""Search-space parsing and validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import DIGITS
from tune_app import spaces
from tune_app.errors import SpaceError

BASE: dict[str, Any] = {
    "task": "digits_mlp",
    "metric": "val_accuracy",
    "mode": "max",
    "max_epochs": 3,
    "params": {"lr": {"type": "loguniform", "low": 1e-4, "high": 0.1, "boxes": 3}},
}


def write(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def with_param(**spec: Any) -> dict[str, Any]:
    return {**BASE, "params": {"p": spec}}


def test_shipped_space_loads() -> None:
    sp = spaces.load(DIGITS)
    assert sp.task == "digits_mlp" and sp.mode == "max" and sp.metric == "val_accuracy"
    assert sp.grid_size == 8
    assert all(sp.contains(c) for c in sp.grid())
    assert len(sp.digest) == 12


def test_boxes_from_count_are_log_spaced_and_inside() -> None:
    sp = spaces.SearchSpace.from_dict(BASE)
    boxes = sp.param("lr").boxes
    assert boxes[0] == pytest.approx(1e-4) and boxes[-1] == pytest.approx(0.1)
    assert boxes[1] == pytest.approx((1e-4 * 0.1) ** 0.5, rel=1e-4)


def test_int_boxes_are_unique_integers() -> None:
    sp = spaces.SearchSpace.from_dict(with_param(type="int", low=1, high=4, boxes=4))
    assert sp.param("p").boxes == (1, 2, 3, 4)


def test_yaml_exponent_without_dot_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(
        "task: digits_mlp\nmetric: val_accuracy\nmode: max\nmax_epochs: 2\n"
        "params:\n  lr: {type: loguniform, low: 1e-4, high: 1e-1}\n"
    )
    assert spaces.load(path).param("lr").low == pytest.approx(1e-4)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (with_param(type="normal", low=0, high=1), "unknown type 'normal'"),
        (with_param(type="uniform", low=1, high=0), "low (1) must be < high (0)"),
        (with_param(type="uniform", low=1, high=1), "must be < high"),
        (with_param(type="loguniform", low=0, high=1), "needs low > 0"),
        (with_param(type="int", low=-1, high=8, log=True), "needs low > 0"),
        (with_param(type="choice", values=[]), "non-empty list"),
        (with_param(type="uniform", low=0, high=1, boxes=[0.5, 2.0]), "fall outside"),
        (with_param(type="uniform", low=0, high=1, step=2), "unknown key(s) ['step']"),
        (with_param(type="uniform", low=0, high=1, boxes=1), "count must be >= 2"),
        (with_param(type="uniform", low="a", high=1), "must be a number"),
        (with_param(type="choice", values=[1, 1]), "duplicates"),
        (with_param(type="uniform", low=0, high=1, default=3), "default 3 is not a legal"),
        ({**BASE, "colour": "red"}, "unknown top-level key(s) ['colour']"),
        ({**BASE, "mode": "up"}, "'mode' must be 'min' or 'max'"),
        ({**BASE, "max_epochs": 0}, "'max_epochs'"),
        ({**BASE, "params": {}}, "'params' must be a non-empty mapping"),
        ({**BASE, "fixed": {"lr": 1}}, "both 'params' and 'fixed'"),
        ([1, 2], "expected a mapping"),
    ],
)
def test_malformed_spaces_name_file_param_and_fix(tmp_path: Path, data: Any, needle: str) -> None:
    path = write(tmp_path, data)
    with pytest.raises(SpaceError) as err:
        spaces.load(path)
    assert str(path) in str(err.value)
    assert needle in str(err.value)
    if isinstance(data, dict) and "p" in data.get("params", {}):
        assert "parameter 'p'" in str(err.value)


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(SpaceError, match="not found"):
        spaces.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("task: [unclosed\n")
    with pytest.raises(SpaceError, match="not valid YAML"):
        spaces.load(bad)


def test_contains_and_default_config() -> None:
    sp = spaces.load(DIGITS)
    cfg = sp.default_config()
    assert sp.contains(cfg)
    assert not sp.contains({**cfg, "lr": 10.0})
    assert not sp.contains({**cfg, "extra": 1})
    assert not sp.contains({**cfg, "hidden": 20.5})


def test_discrete_parameters_take_only_their_boxes() -> None:
    sp = spaces.SearchSpace.from_dict(
        {
            **BASE,
            "params": {
                "lr": {
                    "type": "loguniform",
                    "low": 1e-4,
                    "high": 0.1,
                    "boxes": 4,
                    "discrete": True,
                },
                "width": {
                    "type": "int",
                    "low": 8,
                    "high": 64,
                    "boxes": [8, 32, 64],
                    "discrete": True,
                },
                "drop": {"type": "uniform", "low": 0.0, "high": 0.5},
            },
        }
    )
    lr, width, drop = sp.params
    assert lr.discrete and lr.is_finite and not drop.is_finite and not sp.is_finite
    assert width.contains(32) and not width.contains(16) and not width.contains(32.5)
    assert lr.contains(lr.boxes[1]) and not lr.contains(lr.boxes[1] * 1.01)
    assert drop.contains(0.123)
    domain = sp.tune_param_space()
    assert list(domain["width"].categories) == [8, 32, 64]
    assert lr.nearest_box(lr.boxes[2] * 1.2) == 2 and width.nearest_box(40) == 1
    width_spec = {"type": "int", "low": 8, "high": 64, "boxes": [8, 32, 64], "discrete": True}
    finite = spaces.SearchSpace.from_dict({**BASE, "params": {"w": width_spec}})
    assert finite.is_finite and finite.cell({"w": 32}) == (1,) and sp.cell({}) is None


@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        (
            {"type": "int", "low": 1, "high": 4, "discrete": "yes"},
            "'discrete' must be true or false",
        ),
        ({"type": "choice", "values": [1, 2], "discrete": True}, "unknown key"),
        ({"type": "int", "low": 1, "high": 4, "boxes": [2], "discrete": True}, "at least 2 boxes"),
        (
            {
                "type": "int",
                "low": 1,
                "high": 9,
                "boxes": [1, 5, 9],
                "discrete": True,
                "default": 4,
            },
            "default 4 is not a legal value",
        ),
    ],
)
def test_bad_discrete_declarations_name_the_fix(spec: dict[str, Any], needle: str) -> None:
    with pytest.raises(SpaceError, match=needle):
        spaces.SearchSpace.from_dict(with_param(**spec))


ALIAS_BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{b}: &{b} [*{a}, *{a}, *{a}, *{a}, *{a}, *{a}, *{a}, *{a}, *{a}]\n"
    for a, b in zip("abcdefgh", "bcdefghi", strict=True)
)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (ALIAS_BOMB + "mode: *i\n", "aliases"),
        ("task: digits_mlp\nparams: {p: {type: int, low: 1, high: 9, boxes: *x}}\n", "aliases"),
        ("[" * 50_000 + "]" * 50_000, "not valid YAML"),
    ],
)
def test_hostile_yaml_is_refused_fast_in_one_line(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(SpaceError, match=needle) as err:
        spaces.load(path)
    assert "\n" not in str(err.value) and len(str(err.value)) < 1200


def test_oversized_and_binary_space_files_are_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("params:\n" + "  - {a: 1}\n" * 200_000)  # ~2 MB of small mappings
    with pytest.raises(SpaceError, match="too large for a search-space file"):
        spaces.load(big)
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(SpaceError, match=r"not a text \(UTF-8\) file"):
        spaces.load(binary)


def test_error_messages_are_capped() -> None:
    huge = {**BASE, "mode": "x" * 100_000}
    with pytest.raises(SpaceError) as err:
        spaces.SearchSpace.from_dict(huge)
    assert len(str(err.value)) < 1100 and "more characters" in str(err.value)
