"""CLI: listings, and bad input -> one line on stderr, exit 2, nothing started."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import DIGITS
from tune_app import spaces, strategies
from tune_app.cli import build_parser, main
from tune_app.strategies.options import specs

HEAVY = ("ray", "torch", "mlflow", "optuna")


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_strategies_lists_every_name_with_its_options(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(["strategies"], capsys)
    assert code == 0
    lines = out.splitlines()
    for name, info in strategies.REGISTRY.items():
        # the listed options are the ones the plugin validates --opt against
        assert strategies.plugin(name).options is info.options, name
        assert any(line.split()[:2] == [name, info.kind] for line in lines), name
        for o in specs(info.options):
            assert o.help, f"{name}: option {o.name} has no help"
            row = [line for line in lines if line.split()[:1] == [o.name] and o.help in line]
            assert row and o.type in row[0], f"{name}: option {o.name} is not listed"
    assert "--opt KEY=VALUE" in out and "--scheduler-opt KEY=VALUE" in out


def _probe(code: str) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter; what it prints last is JSON."""
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    result: dict[str, object] = json.loads(proc.stdout.splitlines()[-1])
    return result


def test_parser_help_and_listings_import_no_heavy_library() -> None:
    """`--help` (every subcommand's), `strategies` and `spaces` answer at once: none
    of Ray, torch, MLflow or Optuna is imported (each costs seconds)."""
    found = _probe(
        "import contextlib, io, json, sys\n"
        "from tune_app.cli import main\n"
        "argvs = [['--help'], ['strategies'], ['spaces'], ['spaces', 'digits_mlp']]\n"
        "argvs += [[c, '--help'] for c in ('run', 'compare', 'report', 'resume', 'sync',"
        " 'strategies', 'controller', 'spaces')] + [['controller', 'train', '--help']]\n"
        "codes = []\n"
        "for argv in argvs:\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try:\n"
        "            codes.append(main(argv))\n"
        "        except SystemExit as exc:\n"
        "            codes.append(exc.code)\n"
        f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})\n"
        "print(json.dumps({'codes': codes, 'heavy': heavy}))\n"
    )
    assert set(found["codes"]) == {0}, found["codes"]  # type: ignore[arg-type]
    assert found["heavy"] == [], f"imported by the CLI's listings: {found['heavy']}"


def _options(
    parser: argparse.ArgumentParser, path: str = "tune-app"
) -> Iterator[tuple[str, argparse.Action]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:  # the subcommands' own help
                yield f"{path} {choice.dest}", choice
            for name, sub in action.choices.items():
                yield from _options(sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction):
            yield path, action


def test_every_flag_and_subcommand_has_help() -> None:
    missing = [
        f"{path}: {'/'.join(a.option_strings) or a.dest}"
        for path, a in _options(build_parser())
        if not (a.help or "").strip()
    ]
    assert not missing, f"no help text: {missing}"


def test_num_workers_help_explains_in_trial_training() -> None:
    flags = {
        f: a for p, a in _options(build_parser()) if p == "tune-app run" for f in a.option_strings
    }
    action = flags["--num-workers"]
    assert action.help is not None
    assert "0: train inside the Tune trial" in action.help
    assert "N Ray Train workers per trial" in action.help


def test_spaces_lists_the_built_in_ones_by_name(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["spaces"], capsys)
    assert code == 0
    listed = [line.split(":")[0] for line in out.splitlines() if ": ok" in line]
    assert listed == list(spaces.builtin())
    assert {"digits_mlp", "benchmarks/hpobench_kc1"} <= set(listed)


def test_spaces_lists_a_folder_and_validates(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["spaces", "--dir", str(DIGITS.parent)], capsys)
    assert code == 0 and "digits_mlp.yaml: ok" in out
    code, out, _ = run(["spaces", str(DIGITS)], capsys)
    assert code == 0 and "grid of 8" in out
    code, out, _ = run(["spaces", "digits_mlp"], capsys)
    assert code == 0 and out.startswith("digits_mlp: ok") and "grid of 8" in out


def test_space_by_name_or_path_and_a_path_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert spaces.load("digits_mlp").source == str(DIGITS)
    assert spaces.load("benchmarks/hpobench_kc1").task == "hpobench_kc1"
    assert spaces.load("digits_mlp.yaml").name == "digits_mlp"
    assert spaces.locate("/old/checkout/search_spaces/digits_mlp.yaml") == DIGITS  # moved
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TUNE_APP_HOME")  # home = the cwd, as outside the tests
    (tmp_path / "digits_mlp").write_text(
        DIGITS.read_text().replace("max_epochs: 3", "max_epochs: 2")
    )
    assert spaces.load("digits_mlp").max_epochs == 2  # the existing file, not the built-in


def test_report_prints_progress_on_stderr_and_a_summary(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.test_report import _study
    from tune_app.comparison import report

    study = _study({"random": [4.0, 2.0], "good": [1.0, 1.0]})
    monkeypatch.setattr(report, "from_mlflow", lambda ref, uri, optimum=None: (study, "r123"))
    out_dir, store = tmp_path / "rep", tmp_path / "m.db"
    store.touch()
    argv = ["report", "r123", "--out", str(out_dir), "--tracking-uri", f"sqlite:///{store}"]
    code, out, err = run(argv, capsys)
    assert code == 0, err
    assert "reading comparison r123 from MLflow" in err and f"wrote report to {out_dir}" in err
    assert "good" in out and "random" in out and str(out_dir / "report.html") in out
    assert "Verdict: best: good" in out and "Paired vs random" in out
    assert "#" not in out and len(out.splitlines()) < 12  # the table, not the Markdown


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
        (
            ["run", "--strategy", "random", "--space", "nope"],
            "built-in name: cifar10_mlp, covertype_mlp, digits_mlp",
        ),
        (["run", "--strategy", "grid", "--space", "digits_mlp", "--budget-epochs", "10"], "to 24"),
        (["spaces", "nope"], "built-in name: cifar10_mlp, covertype_mlp, digits_mlp"),
        (["spaces", "--dir", "."], "no *.yaml search spaces in ."),
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
    monkeypatch.delenv("TUNE_APP_HOME")  # home = the cwd, as outside the tests
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
