"""Property-based: malformed search spaces are rejected with SpaceError, never a traceback."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tune_app.errors import SpaceError
from tune_app.spaces import SearchSpace

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "a", "1e-3", "nan", "relu", "-1"]),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=4),
    st.dictionaries(st.text(max_size=3), scalars, max_size=2),
)
numbers = st.one_of(st.integers(-3, 100), st.floats(-1e3, 1e3), scalars)
param_specs = st.one_of(
    st.dictionaries(st.sampled_from(["type", "low", "high", "values", "step"]), values, max_size=4),
    st.fixed_dictionaries(
        {"type": st.sampled_from(["uniform", "loguniform", "int", "choice", "normal"])},
        optional={
            "low": numbers,
            "high": numbers,
            "boxes": st.one_of(numbers, st.lists(numbers, max_size=4)),
            "values": st.one_of(st.lists(scalars, max_size=4), scalars),
            "log": st.one_of(st.booleans(), scalars),
            "default": numbers,
            "step": numbers,
        },
    ),
)
spaces_ = st.fixed_dictionaries(
    {},
    optional={
        "task": st.one_of(st.just("digits_mlp"), scalars),
        "metric": st.one_of(st.just("val_accuracy"), scalars),
        "mode": st.one_of(st.sampled_from(["min", "max"]), scalars),
        "max_epochs": st.one_of(st.integers(-2, 5), scalars),
        "params": st.one_of(
            st.dictionaries(st.sampled_from(["lr", "x", "1bad", "a b"]), param_specs, max_size=3),
            values,
        ),
        "fixed": st.one_of(st.dictionaries(st.sampled_from(["lr", "batch_size"]), scalars), values),
    },
)
# Valid study keys with malformed parameters: reaches the per-parameter checks.
bad_params = st.fixed_dictionaries(
    {
        "task": st.just("digits_mlp"),
        "metric": st.just("val_accuracy"),
        "mode": st.just("max"),
        "max_epochs": st.just(2),
        "params": st.dictionaries(
            st.sampled_from(["lr", "x", "1bad"]), param_specs, min_size=1, max_size=3
        ),
    },
    optional={"fixed": st.dictionaries(st.sampled_from(["lr", "batch_size"]), scalars)},
)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.one_of(bad_params, bad_params, spaces_, values))
def test_any_input_parses_or_raises_space_error(data: Any) -> None:
    try:
        space = SearchSpace.from_dict(data, source="gen.yaml")
    except SpaceError as err:
        message = str(err)
        assert message.startswith("gen.yaml: ") and "\n" not in message
        return
    # Whatever parses is usable: its grid and defaults lie inside the space.
    assert space.params and space.max_epochs >= 1
    assert space.contains(space.default_config())
    assert all(space.contains(c) for _, c in zip(range(20), space.grid(), strict=False))
