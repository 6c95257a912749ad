"""Property test: generated malformed command lines are all rejected cleanly.

Every argument set below has at least one bad value. ``tune_app.cli.main`` must
exit with status 2 and print exactly one line on stderr, with no traceback, and
must not start anything (no Ray, no MLflow store, no run directory).
"""

from __future__ import annotations

import os
import string
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import DIGITS
from tune_app import spaces, strategies
from tune_app.cli import main
from tune_app.run import placement


class Started(AssertionError):
    """Raised if a malformed command line got as far as starting Ray."""


NAMES = st.text(string.ascii_letters + string.digits + "_-", min_size=1, max_size=12)
NOT_INT = st.one_of(
    st.sampled_from(["", "x", "1.5", "1e3", "--", "nan", "0x10", "one"]),
    NAMES.filter(lambda s: not s.lstrip("-").isdigit()),
)
NOT_POS_INT = st.integers(-(10**6), 0).map(str)
NOT_POS_FLOAT = st.one_of(
    st.floats(max_value=0.0, allow_nan=False).map(repr),
    st.sampled_from(["nan", "inf", "-inf", "abc", ""]),
)
NEGATIVE = st.integers(-1000, -1).map(str)
BUILTIN = set(spaces.builtin())


def bad_option(draw: Any) -> list[str]:
    """One malformed option, drawn from every kind the CLI validates."""
    kind = draw(st.integers(0, 16))
    if kind == 0:
        return ["--budget-epochs", draw(st.one_of(NOT_INT, NOT_POS_INT))]
    if kind == 1:
        return ["--max-trials", draw(st.one_of(NOT_INT, NOT_POS_INT))]
    if kind == 2:
        return ["--time-budget-s", draw(NOT_POS_FLOAT)]
    if kind == 3:
        return ["--scheduler", draw(NAMES.filter(lambda s: s not in strategies.REGISTRY))]
    if kind == 4:
        return ["--opt", draw(NAMES)]  # no '='
    if kind == 5:
        return ["--opt", f"zz_{draw(NAMES)}=1"]  # an option no strategy has
    if kind == 6:
        sep = draw(st.sampled_from(["/", "..", "\\", "../", "/etc/"]))
        return ["--experiment", draw(NAMES) + sep + draw(NAMES)]
    if kind == 7:  # neither an existing file nor a built-in space's name
        path = NAMES.map(lambda s: f"no-such-dir/{s}.yaml")
        return ["--space", draw(st.one_of(path, NAMES.filter(lambda s: s not in BUILTIN)))]
    if kind == 8:
        return ["--num-workers", draw(st.one_of(NEGATIVE, NOT_INT))]
    if kind == 9:
        return ["--cpus-per-worker", draw(NOT_POS_FLOAT)]
    if kind == 10:
        return ["--gpus-per-worker", draw(st.one_of(NEGATIVE, st.sampled_from(["nan", "inf"])))]
    if kind == 11:
        return ["--max-concurrent", draw(st.one_of(NOT_POS_INT, NOT_INT))]
    if kind == 12:
        return ["--max-failures", draw(st.one_of(NEGATIVE, NOT_INT))]
    if kind == 13:
        return ["--scheduler-opt", f"{draw(NAMES)}=1"]  # no scheduler given
    if kind == 14:
        return ["--seed", draw(NOT_INT)]
    if kind == 15:
        return [f"--{draw(NAMES).lower()}-zz"]  # unknown flag
    return ["--task", f"no_such_module_{draw(NAMES)}:Task"]


@st.composite
def bad_command(draw: Any) -> list[str]:
    """A command line with 1-3 malformed options, or a malformed subcommand."""
    which = draw(st.sampled_from(["run", "run", "run", "compare", "resume", "sync", "other"]))
    if which == "resume":
        return ["resume", draw(NAMES.map(lambda s: f"not-a-run-{s}"))]
    if which == "sync":
        return ["sync", f"missing-{draw(NAMES)}"]
    if which == "other":
        return [draw(NAMES.filter(lambda s: s not in ("run", "compare", "resume", "sync")))]
    argv = [which, "--space", str(DIGITS)]
    if which == "run":
        if draw(st.booleans()):
            argv += ["--strategy", draw(st.sampled_from(strategies.names()))]
        else:
            argv += ["--strategy", draw(NAMES.filter(lambda s: s not in strategies.REGISTRY))]
            return argv
    else:
        argv += ["--strategies", "random"]
        if draw(st.booleans()):
            argv += ["--seeds", draw(st.one_of(NOT_POS_INT, NOT_INT))]
            return argv
    for _ in range(draw(st.integers(1, 3))):
        argv += bad_option(draw)
    return argv


@pytest.fixture()
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise Started("a malformed command line started Ray")

    monkeypatch.setattr(placement, "ensure_ray", refuse)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TUNE_APP_HOME")  # home = the cwd, as outside the tests
    return tmp_path


@settings(
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(argv=bad_command())
def test_malformed_command_lines_exit_2_with_one_line(
    argv: list[str], sandbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    here = Path(tempfile.mkdtemp(dir=sandbox))  # a fresh working directory per example
    os.chdir(here)
    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        os.chdir(sandbox)
    out, err = capsys.readouterr()
    assert code == 2, (argv, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, (argv, err)
    assert "error" in lines[0] and "Traceback" not in err
    # Nothing started: no MLflow store, no run directory.
    assert not os.listdir(here), (argv, os.listdir(here))
