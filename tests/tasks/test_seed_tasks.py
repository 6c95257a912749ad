"""The seed tasks on small fixtures in their real on-disk formats, through the real loaders."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader

from tests.tasks import fixtures
from tests.tasks.test_loop import Recorder
from tune_app import tasks
from tune_app.errors import TaskError
from tune_app.tasks.data import clear_cache
from tune_app.tasks.keypoints_synth import generate
from tune_app.tasks.loop import TrialSpec, _validate, train

REPO = Path(__file__).resolve().parents[2]

# name -> (hyperparameters, metric, mode, chance-level value of the metric)
CASES: dict[str, tuple[dict[str, Any], str, str]] = {
    "mnist_cnn": ({"lr": 3e-3, "channels": 8, "batch_size": 32}, "val_accuracy", "max"),
    "cifar10_mlp": (
        {"lr": 0.5, "optimizer": "sgd", "batch_size": 32, "weight_decay": 1e-5},
        "val_accuracy",
        "max",
    ),
    "covertype_mlp": (
        {"lr": 3e-3, "layers": 2, "hidden": 64, "batch_size": 64, "dropout": 0.1},
        "val_accuracy",
        "max",
    ),
    "keypoints_cnn": ({"lr": 3e-3, "channels": 8, "batch_size": 16}, "val_mae", "min"),
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every fixture data set, written once under one data directory."""
    root = tmp_path_factory.mktemp("data")
    fixtures.write_mnist(root)
    fixtures.write_cifar10(root)
    fixtures.write_covertype(root)
    generate(root / "keypoints", n=500, size=32, seed=0)
    clear_cache()
    return root


def _untrained(name: str, config: dict[str, Any], seed: int) -> dict[str, float]:
    """The metric of the freshly initialised model (same seed as the trained one)."""
    task = tasks.resolve(name)
    torch.manual_seed(seed)
    _, val = task.load_data(config, seed)
    model = task.build_model(config)
    return _validate(task, model, DataLoader(val, batch_size=256), torch.device("cpu"), 1)


@pytest.mark.parametrize("name", sorted(CASES))
def test_task_trains_and_beats_its_untrained_model(
    name: str, data_dir: Path, tmp_path: Path
) -> None:
    hparams, metric, mode = CASES[name]
    task = tasks.resolve(name)
    assert metric in task.metrics
    spec = TrialSpec(
        task=task, seed=0, max_epochs=2, fixed={"data_dir": str(data_dir)}, num_workers=0
    )
    rec = Recorder(tmp_path)
    train(hparams, spec, "t", rec)
    assert [r["epoch"] for r in rec.reports] == [1, 2]
    assert all(r["diverged"] == 0 for r in rec.reports)
    final = rec.reports[-1][metric]
    before = _untrained(name, {**spec.fixed, **hparams}, 0)[metric]
    assert math.isfinite(final) and math.isfinite(before)
    if mode == "max":
        assert final > before + 0.3, (before, final)
    else:
        assert final < 0.7 * before, (before, final)
    assert rec.reports[-1]["train_loss"] < rec.reports[0]["train_loss"]


def test_mnist_reads_gzipped_idx_through_torchvision(data_dir: Path) -> None:
    from tune_app.tasks.mnist_cnn import load_mnist

    x, y = load_mnist(data_dir)
    assert x.shape == (1200, 1, 28, 28) and x.dtype == torch.uint8
    assert y.min() >= 0 and y.max() <= 9
    assert (data_dir / "MNIST" / "raw" / "train-images-idx3-ubyte").exists()  # unpacked


def test_cifar_batches_read_through_torchvision(data_dir: Path) -> None:
    from tune_app.tasks.cifar10_mlp import load_cifar10

    x, _ = load_cifar10(data_dir)
    assert x.shape == (1000, 3, 32, 32) and x.dtype == torch.uint8
    x_test, _ = load_cifar10(data_dir, train=False)
    assert len(x_test) == 200


def test_covertype_reads_the_uci_csv_and_standardises_continuous_columns(
    data_dir: Path, tmp_path: Path
) -> None:
    from tune_app.tasks.covertype_mlp import load_covertype

    x, y = load_covertype(data_dir)
    assert x.shape == (2000, 54) and set(y.tolist()) <= set(range(7))
    train_ds, _ = tasks.resolve("covertype_mlp").load_data({"data_dir": str(data_dir)}, 0)
    feats = train_ds.tensors[0]  # type: ignore[attr-defined]
    assert feats[:, :10].mean(0).abs().max() < 1e-4
    assert ((feats[:, 10:] == 0) | (feats[:, 10:] == 1)).all()  # booleans untouched
    gz_root = fixtures.write_covertype(tmp_path, n=50, gz=True)
    assert load_covertype(gz_root)[0].shape == (50, 54)
    (tmp_path / "covertype" / "covtype.data.gz").write_text("1,2,3\n")
    with pytest.raises(TaskError, match=r"55 comma-separated integers|expected 55 columns"):
        load_covertype(gz_root)


def test_covertype_builds_arbitrary_architectures() -> None:
    task = tasks.resolve("covertype_mlp")
    model = task.build_model(
        {"hidden_sizes": [300, 200, 100, 50], "activation": "tanh", "input_dropout": 0.2}
    )
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in linear] == [300, 200, 100, 50, 7]
    assert isinstance(next(iter(model.children())), torch.nn.Dropout)
    funnel = task.build_model({"layers": 3, "hidden": 256, "shrink": 0.5, "width_mult": 0.5})
    assert [m.out_features for m in funnel.modules() if isinstance(m, torch.nn.Linear)] == [
        128,
        64,
        32,
        7,
    ]


def test_keypoint_folder_format_and_labels(data_dir: Path) -> None:
    import csv

    from PIL import Image

    from tune_app.tasks.keypoints_cnn import load_keypoints

    folder = data_dir / "keypoints"
    with open(folder / "keypoints.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 500 and list(rows[0])[:3] == ["image", "wrist_x", "wrist_y"]
    with Image.open(folder / rows[0]["image"]) as im:
        assert im.size == (32, 32) and im.mode == "L"
    x, y = load_keypoints(data_dir)
    assert x.shape == (500, 1, 32, 32) and y.shape == (500, 8)
    assert float(y.min()) >= -0.5 and float(y.max()) <= 31.5  # inside the image
    # the thumb-index aperture varies (the tapping motion): a real regression target
    gap = (y[:, 4:6] - y[:, 6:8]).norm(dim=1)
    assert float(gap.std()) > 1.0


def test_cifar_net_is_the_reports_3072_100_50_10_sigmoid_mlp() -> None:
    model = tasks.resolve("cifar10_mlp").build_model({})
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(3072, 100), (100, 50), (50, 10)]
    assert sum(isinstance(m, torch.nn.Sigmoid) for m in model.modules()) == 2


@pytest.mark.parametrize(
    ("name", "config", "shape"),
    [
        ("mnist_cnn", {"resolution": 14}, (1, 14, 14)),
        ("cifar10_mlp", {"resolution": 16}, (3, 16, 16)),
        ("keypoints_cnn", {"resolution": 16}, (1, 16, 16)),
    ],
)
def test_resolution_fidelity_shrinks_inputs_and_model(
    name: str, config: dict[str, Any], shape: tuple[int, ...], data_dir: Path
) -> None:
    task = tasks.resolve(name)
    full = {"data_dir": str(data_dir)}
    low = {**full, **config, "width_mult": 0.5}
    train_ds, _ = task.load_data(low, 0)
    assert tuple(train_ds[0][0].shape) == shape

    def size(m: torch.nn.Module) -> int:
        return sum(p.numel() for p in m.parameters())

    assert size(task.build_model(low)) < size(task.build_model(full)) / 2
    out = task.build_model(low)(train_ds[0][0][None])
    assert out.shape == (1, 10 if name != "keypoints_cnn" else 8)


@pytest.mark.parametrize(
    ("name", "config", "needle"),
    [
        ("mnist_cnn", {"activation": "swish"}, "unknown activation 'swish'"),
        ("mnist_cnn", {"blocks": 0}, "blocks must be in 1..4"),
        ("mnist_cnn", {"dropout": -0.1}, r"dropout must be in \[0, 1\)"),
        ("mnist_cnn", {"resolution": 40}, r"resolution must be in \[4, 28\]"),
        ("mnist_cnn", {"width_mult": 0}, r"width_mult must be in \(0, 1\]"),
        ("cifar10_mlp", {"activation": "swish"}, "unknown activation 'swish'"),
        ("cifar10_mlp", {"hidden": []}, "at least one layer"),
        ("cifar10_mlp", {"hidden": [100, 0]}, "hidden must be >= 1"),
        ("cifar10_mlp", {"dropout": -0.5}, r"dropout must be in \[0, 1\)"),
        ("covertype_mlp", {"activation": "swish"}, "unknown activation 'swish'"),
        ("covertype_mlp", {"layers": 0}, "at least one hidden layer"),
        ("covertype_mlp", {"hidden_sizes": []}, "at least one layer"),
        ("covertype_mlp", {"dropout": -0.1}, r"dropout must be in \[0, 1\)"),
        ("covertype_mlp", {"input_dropout": 1.0}, r"input_dropout must be in \[0, 1\)"),
        ("covertype_mlp", {"shrink": 0}, r"shrink must be in \(0, 1\]"),
        ("keypoints_cnn", {"activation": "swish"}, "unknown activation 'swish'"),
        ("keypoints_cnn", {"blocks": 0}, "blocks must be in 1..5"),
        ("keypoints_cnn", {"dropout": -0.2}, r"dropout must be in \[0, 1\)"),
        ("keypoints_cnn", {"resolution": 64}, r"resolution must be in \[4, 32\]"),
    ],
)
def test_bad_options_are_clear_task_errors(
    name: str, config: dict[str, Any], needle: str, data_dir: Path, tmp_path: Path
) -> None:
    spec = TrialSpec(
        task=tasks.resolve(name), seed=0, max_epochs=1, fixed={"data_dir": str(data_dir)}
    )
    with pytest.raises(TaskError, match=needle):
        train(config, spec, "t", Recorder(tmp_path))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("mnist_cnn", "MNIST/raw"),
        ("cifar10_mlp", "cifar-10-batches-py"),
        ("covertype_mlp", "covertype/covtype.data"),
        ("keypoints_cnn", "keypoints/keypoints.csv"),
    ],
)
def test_missing_data_says_where_and_how_to_fetch(name: str, expected: str, tmp_path: Path) -> None:
    task = tasks.resolve(name)
    config = {"data_dir": str(tmp_path / "empty")}
    with pytest.raises(TaskError, match=expected) as info:
        task.check_data(config)
    assert f"python -m tune_app.tasks.data fetch {name.split('_')[0]}" in str(info.value)
    with pytest.raises(TaskError, match="not found under"):
        train({}, TrialSpec(task=task, seed=0, max_epochs=1, fixed=config), "t", Recorder(tmp_path))
    with pytest.raises(TaskError, match="not found under"):
        task.load_data(config, 0)


def test_space_files_name_their_tasks() -> None:
    from tune_app import spaces

    for name in CASES:
        sp = spaces.load(REPO / "tune_app" / "search_spaces" / f"{name}.yaml")
        assert sp.task == name
        assert sp.metric in tasks.resolve(name).metrics
        assert tasks.resolve(name).uses_data_dir


@pytest.mark.slow
def test_mnist_search_over_ray_train_workers_with_data_dir(
    ray_session: Any, tracking_uri: str, data_dir: Path, tmp_path: Path
) -> None:
    """A real search: --data-dir reaches a TorchTrainer worker through the trial spec."""
    from tune_app import run_search, spaces

    full = spaces.load(REPO / "tune_app" / "search_spaces" / "mnist_cnn.yaml")
    one_config = {
        "task": "mnist_cnn",
        "metric": "val_accuracy",
        "mode": "max",
        "max_epochs": 2,
        "params": {"lr": {"type": "loguniform", "low": 1e-4, "high": 0.1, "boxes": [3e-3]}},
        "fixed": {**full.fixed, "channels": 8, "batch_size": 32},
    }
    result = run_search(
        "grid",
        spaces.SearchSpace.from_dict(one_config),
        budget_epochs=2,
        max_trials=1,
        num_workers=1,
        data_dir=data_dir,
        tracking_uri=tracking_uri,
        storage_path=tmp_path,
        verbose=False,
    )
    assert result.epochs_spent == 2
    assert result.trials["status"].tolist() == ["FINISHED"]
    assert result.best_metric > 0.5  # chance is 0.1


def test_run_search_refuses_missing_data_before_starting(tmp_path: Path) -> None:
    from tune_app import run_search

    with pytest.raises(TaskError, match="mnist data not found under"):
        run_search(
            "random",
            REPO / "tune_app" / "search_spaces" / "mnist_cnn.yaml",
            data_dir=tmp_path / "nothing",
            tracking_uri=f"sqlite:///{tmp_path / 'm.db'}",
            verbose=False,
        )


def test_cli_passes_data_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tune_app.cli import main

    code = main(
        [
            "run",
            "--strategy",
            "random",
            "--space",
            str(REPO / "tune_app" / "search_spaces" / "cifar10_mlp.yaml"),
            "--data-dir",
            str(tmp_path / "nothing"),
            "--tracking-uri",
            f"sqlite:///{tmp_path / 'm.db'}",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(tmp_path / "nothing" / "cifar-10-batches-py") in err
