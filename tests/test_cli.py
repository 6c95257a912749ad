"""CLI: listings, and bad input -> one line on stderr, exit 2, nothing started."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import DIGITS
from tune_app.cli import main


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_strategies_lists_every_registered_name(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["strategies"], capsys)
    assert code == 0
    for name in ("grid", "random", "optuna", "hyperopt", "hyperband", "asha"):
        assert name in out


def test_spaces_lists_and_validates(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["spaces", "--dir", str(DIGITS.parent)], capsys)
    assert code == 0 and "digits_mlp.yaml: ok" in out
    code, out, _ = run(["spaces", str(DIGITS)], capsys)
    assert code == 0 and "grid of 8" in out


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["run", "--strategy", "bayes"], "invalid choice: 'bayes'"),
        (["run", "--strategy", "random", "--space", "nope.yaml"], "not found"),
        (["run", "--strategy", "random", "--budget-epochs", "0"], "must be an integer >= 1"),
        (["run", "--strategy", "random", "--budget-epochs", "2"], "smaller than one trial"),
        (["run", "--strategy", "grid", "--budget-epochs", "10"], "raise --budget-epochs to 24"),
        (["run", "--strategy", "optuna", "--opt", "bogus=1"], "unknown option(s) ['bogus']"),
        (["run", "--strategy", "optuna", "--opt", "novalue"], "--opt takes KEY=VALUE"),
        (["run", "--strategy", "random", "--scheduler", "median"], "unknown scheduler"),
        (["run", "--strategy", "random", "--scheduler-opt", "x=1"], "no scheduler"),
        (["run", "--strategy", "random", "--task", "nosuch:Task"], "cannot import task"),
        (["run", "--strategy", "random", "--experiment", "../etc"], "not allowed"),
        (["run", "--strategy", "random", "--experiment", "a/b"], "not allowed"),
        (
            ["run", "--strategy", "random", "--tracking-uri", "http://127.0.0.1:9"],
            "cannot reach the MLflow tracking server",
        ),
        (["run", "--strategy", "random", "--max-trials", "0"], "--max-trials"),
        (["run", "--strategy", "random", "--tracking-uri", "file:///tmp/x"], "file-system store"),
        (["run", "--strategy", "random", "--seed", "4294967296"], "0..4294967295"),
        (["run", "--strategy", "random", "--space", "/dev/null/x"], "not found"),
        (["compare", "--strategies", "random,nope"], "unknown strategy 'nope'"),
        (["compare", "--seeds", "0"], "--seeds must be >= 1"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    argv: list[str],
    needle: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    if "--space" not in argv and argv[0] in ("run", "compare"):
        argv = [*argv, "--space", str(DIGITS)]
    code, _out, err = run(argv, capsys)
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert needle in err
    assert not (tmp_path / "tune_runs").exists()  # nothing was started


def test_metric_the_task_never_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    space = tmp_path / "s.yaml"
    space.write_text(DIGITS.read_text().replace("metric: val_accuracy", "metric: f1"))
    code, _, err = run(["run", "--strategy", "random", "--space", str(space)], capsys)
    assert code == 2 and "metric 'f1' is never reported by task 'digits_mlp'" in err
