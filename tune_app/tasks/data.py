"""Where task data lives, how to fetch it, and a per-process cache of parsed data.

The data directory of a trial is, in order: the config key ``data_dir`` (set from
``--data-dir`` / ``run_search(data_dir=...)`` or a space file's ``fixed``, made
absolute on the driver and shipped to every worker in the trial spec),
``$TUNE_APP_DATA``, then ``~/.cache/tune_app/data``. Workers on a cluster do not
inherit the driver's environment, which is why the driver resolves the path.

Layout under the data directory (the formats the real loaders read)::

    MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte   torchvision's MNIST
    cifar-10-batches-py/data_batch_{1..5}, test_batch, batches.meta   CIFAR-10 python
    covertype/covtype.data[.gz]      UCI Covertype CSV (or scikit_learn_data/: fetch_covtype)
    keypoints/keypoints.csv + keypoints/images/*.png   hand key points

Nothing downloads during a trial. Fetch once, where the network allows::

    python -m tune_app.tasks.data fetch mnist|cifar10|covertype|keypoints [--data-dir DIR]

(``keypoints`` writes the *synthetic* set of :mod:`tune_app.tasks.keypoints_synth`:
no hand data ships with tune_app.)
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast

from tune_app.errors import TaskError

ENV_VAR = "TUNE_APP_DATA"
DEFAULT_DATA_DIR = Path("~/.cache/tune_app/data")
DATASETS = ("mnist", "cifar10", "covertype", "keypoints")
_CACHE_SIZE = 4

T = TypeVar("T")
_cache: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
_lock = threading.Lock()


def _default_dir() -> str:
    return os.environ.get(ENV_VAR) or str(DEFAULT_DATA_DIR)


def data_root(config: Mapping[str, Any]) -> Path:
    """The data directory for a trial's config (see the module docstring)."""
    return Path(str(config.get("data_dir") or _default_dir())).expanduser()


def resolve_data_dir(data_dir: str | os.PathLike[str] | None, fixed: Mapping[str, Any]) -> str:
    """Driver side: the absolute data directory to put in every trial's config.

    ``data_dir`` (the ``--data-dir`` flag) wins over the space file's
    ``fixed.data_dir``, which wins over ``$TUNE_APP_DATA`` and the default.
    """
    raw = data_dir or fixed.get("data_dir") or _default_dir()
    return str(Path(str(raw)).expanduser().resolve())


def with_data_dir(
    fixed: Mapping[str, Any], data_dir: str | os.PathLike[str] | None, uses_data_dir: bool
) -> dict[str, Any]:
    """``fixed`` plus the resolved ``data_dir`` when the task or the user names one.

    Resolved on the driver: workers on other nodes do not share its env or cwd.
    """
    out = dict(fixed)
    if data_dir is not None or "data_dir" in out or uses_data_dir:
        out["data_dir"] = resolve_data_dir(data_dir, out)
    return out


def fetch_hint(dataset: str, root: Path) -> str:
    """The command that fetches ``dataset`` into ``root``."""
    return f"python -m tune_app.tasks.data fetch {dataset} --data-dir {root}"


def missing(dataset: str, root: Path, expected: str, detail: str = "") -> TaskError:
    """A :class:`TaskError` that says where the data should be and how to get it."""
    extra = f" ({detail})" if detail else ""
    return TaskError(
        f"{dataset} data not found under {root}: expected {expected}{extra}; fetch it with "
        f"`{fetch_hint(dataset, root)}` (needs network) or copy the files there, and point "
        f"--data-dir (or ${ENV_VAR}) at the directory"
    )


def _stamp(paths: Sequence[Path]) -> tuple[Any, ...]:
    out: list[Any] = []
    for p in paths:
        st = p.stat()
        out += [str(p), st.st_mtime_ns, st.st_size]
    return tuple(out)


def cached(kind: str, files: Sequence[Path], load: Callable[[], T], *extra: Any) -> T:
    """``load()`` once per process for these files (keyed by path, mtime and size).

    In-trial runs reuse the trial process across trials, and a Ray Train worker
    loads once per trial, never once per epoch; this keeps the parsed arrays of
    the last few data sets so the next trial skips parsing.
    """
    key = (kind, *_stamp(files), *extra)
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return cast(T, _cache[key])
    value = load()
    with _lock:
        _cache[key] = value
        while len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)
    return value


def clear_cache() -> None:
    """Forget every cached data set (tests, benchmarks)."""
    with _lock:
        _cache.clear()


def fetch(dataset: str, root: Path) -> str:
    """Download (or, for ``keypoints``, generate) ``dataset`` into ``root``; return a summary."""
    root.mkdir(parents=True, exist_ok=True)
    if dataset == "mnist":
        from torchvision.datasets import MNIST

        for train in (True, False):
            MNIST(str(root), train=train, download=True)
        return f"MNIST in {root / 'MNIST' / 'raw'}"
    if dataset == "cifar10":
        from torchvision.datasets import CIFAR10

        CIFAR10(str(root), train=True, download=True)
        return f"CIFAR-10 in {root / 'cifar-10-batches-py'}"
    if dataset == "covertype":
        from sklearn.datasets import fetch_covtype

        home = root / "scikit_learn_data"
        fetch_covtype(data_home=str(home), download_if_missing=True)
        return f"Covertype in scikit-learn's cache {home}"
    if dataset == "keypoints":
        from tune_app.tasks.keypoints_synth import generate

        out = root / "keypoints"
        n = generate(out, n=4000, seed=0)
        return f"{n} SYNTHETIC hand key-point images in {out} (procedural, not real hands)"
    raise TaskError(f"unknown data set {dataset!r}; use one of {', '.join(DATASETS)}")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tune_app.tasks.data fetch NAME [--data-dir DIR]``."""
    parser = argparse.ArgumentParser(prog="python -m tune_app.tasks.data")
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fetch", help="download a data set into the data directory")
    f.add_argument("dataset", choices=DATASETS)
    f.add_argument("--data-dir", help=f"default: ${ENV_VAR} or {DEFAULT_DATA_DIR}")
    args = parser.parse_args(argv)
    root = Path(resolve_data_dir(args.data_dir, {}))
    try:
        print(fetch(args.dataset, root))
    except TaskError as exc:
        print(f"fetch: error: {exc}", file=sys.stderr)
        return 2
    except (OSError, RuntimeError) as exc:  # no network (torchvision: RuntimeError), disk
        print(f"fetch: error: could not fetch {args.dataset} into {root}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
