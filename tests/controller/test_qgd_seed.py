"""The seed's own experiment: its net on real and CIFAR-10-format data, and the
benchmark that plays every controller on it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import REPO
from tests.controller.inner_policies import random_policy
from tests.tasks.fixtures import write_cifar10
from tune_app.controller import qgd_eval
from tune_app.controller.qgd import QGDEnv
from tune_app.controller.qgd_seed import load_data, seed_problems
from tune_app.errors import ConfigError


def test_bundled_data_split_apart_and_the_nets_drawn_per_seed() -> None:
    """wine: pool, validation and test rows disjoint and standardised; a seed gives
    the same rows and initial weights, another seed others; the net is the seed's
    inputs-100-50-classes with sigmoid hidden layers."""
    data = load_data("wine")
    sizes = (len(data.y_pool), len(data.y_val), len(data.y_test))
    assert sum(sizes) == 178 and min(sizes) >= 44 and data.classes == 3
    assert abs(float(data.x_pool.mean())) < 1e-4
    make = seed_problems(data, n_train=50)
    a, b, c = (make(np.random.default_rng(s)) for s in (1, 1, 2))
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.init(), b.init())
    assert not torch.equal(a.init(), c.init()) and len(a.y_train) == 50
    shapes = [tuple(m.weight.shape) for m in a.model if isinstance(m, torch.nn.Linear)]
    assert shapes == [(100, 13), (50, 100), (3, 50)]
    assert sum(isinstance(m, torch.nn.Sigmoid) for m in a.model) == 2
    with pytest.raises(ConfigError, match="choose one of"):
        load_data("iris")


def test_cifar10_format_batches_feed_a_3072_input_net_and_plain_descent_learns(
    tmp_path: Path,
) -> None:
    """The project's CIFAR-10 reader on batches in the real format; 30 accepted
    steps lower the training loss, and the episode reports test accuracy."""
    with pytest.raises(ConfigError, match="data directory"):
        load_data("cifar10")
    data = load_data("cifar10", write_cifar10(tmp_path, per_batch=40))
    assert data.x_pool.shape[1] == 3072 and data.classes == 10
    env = QGDEnv("lr", steps=30, memory=3, problems=seed_problems(data, n_train=100))
    first = float(env.reset(seed=0)[1]["anchor_value"])
    out = qgd_eval.episode(env, qgd_eval.plain, seed=0)
    assert out["loss"] < first and 0.0 <= out["test_accuracy"] <= 1.0
    assert out["evaluations"] == 30 + 3 + 1  # steps, memory - 1 warm-up, anchor, first


def test_pixel_inputs_keep_the_images_scale(tmp_path: Path) -> None:
    """``inputs="pixels"``: digits / 16 and CIFAR-10 / 255, in [0, 1], the same rows
    as standardised; a data set without pixels, or an unknown scaling: one-line errors."""
    pixels, standard = load_data("digits", inputs="pixels"), load_data("digits")
    assert float(pixels.x_pool.min()) == 0.0 and float(pixels.x_pool.max()) == 1.0
    assert float(pixels.x_test.max()) <= 1.0 and torch.equal(pixels.y_pool, standard.y_pool)
    raw = load_data("cifar10", write_cifar10(tmp_path, per_batch=40), inputs="pixels")
    assert float(raw.x_pool.min()) >= 0.0 and float(raw.x_pool.max()) <= 1.0
    with pytest.raises(ConfigError, match="use inputs='standardised'") as err:
        load_data("wine", inputs="pixels")
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="inputs must be one of standardised, pixels"):
        load_data("digits", inputs="raw")


def _policy(folder: Path, control: str) -> Path:
    random_policy(folder, control)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["settings"] = {"memory": 3, "steps": 10, "alpha_c": 1.0, "lambda_c": 1e-3}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


def test_the_seed_benchmark_plays_every_controller_on_the_seed_net(tmp_path: Path) -> None:
    """benchmarks/qgd_seed.py with lr and l2 policies on wine: one row per controller,
    and the seed's figures."""
    args = ["--data", "wine", "--seeds", "3", "--grid", "0.3,1", "--lambda-grid", "0.001,0.1"]
    args += ["--plot", str(tmp_path / "figures")]
    args += ["--lr-policy", str(_policy(tmp_path / "lr", "lr"))]
    args += ["--l2-policy", str(_policy(tmp_path / "l2", "l2"))]
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "qgd_seed.py"), *args],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line.split("|")[1].strip() for line in proc.stdout.splitlines() if line[:2] == "| "]
    assert rows == [
        *("controller", "qgd", "plain", "armijo", "best fixed rate"),
        *("controller", "qgd", "fixed lambda_c", "lower every step", "best fixed lambda"),
    ]
    assert "wine (real, bundled with scikit-learn), net 13-100-50-3" in proc.stdout
    assert "lower every step vs fixed lambda_c: val_error " in proc.stdout
    figures = sorted(p.name for p in (tmp_path / "figures").iterdir())
    assert figures == ["qgd_seed_l2_wine.png", "qgd_seed_lr_wine.png"]


def test_an_episode_trace_has_the_anchor_after_every_step() -> None:
    """qgd_eval's trace: one entry per step, the final one the episode's result."""
    from tune_app.controller import qgd_eval
    from tune_app.controller.qgd_seed import load_data, seed_problems

    env = {"control": "lr", "steps": 12, "memory": 3, "alpha_c": 1.0}
    env["problems"] = seed_problems(load_data("wine", None), 60)
    traces: qgd_eval.Traces = {}
    runs = qgd_eval.compare({"armijo": qgd_eval.armijo}, 2, env, 0, False, traces)
    assert [len(t) for t in traces["armijo"]] == [12, 12]
    for result, trace in zip(runs["armijo"], traces["armijo"], strict=True):
        assert trace[-1]["loss"] == result["loss"]
        assert trace[-1]["test_accuracy"] == result["test_accuracy"]
        assert all(t["hyper"] <= 1.0 for t in trace)
        assert trace[-1]["loss"] < trace[0]["loss"]
