"""Search spaces: YAML file -> validated :class:`SearchSpace`.

A space file names its default task, metric, mode and per-trial epoch cap, and
lists parameters. Every parameter has a type and a discretisation into *value
boxes*: grid search and the RL controller walk the boxes, while random search,
TPE, GP and CMA-ES sample the continuous ranges. A numeric parameter marked
``discrete: true`` takes *only* its box values: every strategy then proposes
only those (categorical distributions for Optuna, HyperOpt and random search;
CMA-ES, which has no categorical distribution, searches the box index).

Example file::

    task: digits_mlp
    metric: val_accuracy
    mode: max
    max_epochs: 4
    params:
      lr: {type: loguniform, low: 1.0e-4, high: 0.3, boxes: 4}
      hidden: {type: int, low: 16, high: 128, boxes: [16, 32, 64, 128], discrete: true}
      activation: {type: choice, values: [relu, tanh]}
    fixed:
      batch_size: 64

All validation happens in :func:`load` / :meth:`SearchSpace.from_dict`, before any
cluster work; errors name the file, the parameter and the fix. The built-in spaces
ship in ``tune_app/search_spaces/`` and load by name (``digits_mlp``,
``benchmarks/hpobench_kc1``: :func:`builtin`, :func:`locate`).
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from tune_app.errors import SpaceError

PARAM_TYPES = ("uniform", "loguniform", "int", "choice")
_TOP_KEYS = {"name", "task", "metric", "mode", "max_epochs", "params", "fixed", "description"}
_PARAM_KEYS: dict[str, set[str]] = {
    "uniform": {"type", "low", "high", "boxes", "discrete", "default"},
    "loguniform": {"type", "low", "high", "boxes", "discrete", "default"},
    "int": {"type", "low", "high", "boxes", "log", "discrete", "default"},
    "choice": {"type", "values", "default"},
}
MODES = ("min", "max")
MAX_FILE_BYTES = 1 << 20  # a space file is a few KiB; refuse anything near this
BUILTIN_DIR = Path(__file__).parent / "search_spaces"  # shipped in the wheel


class _PlainLoader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases: a ``*ref`` can expand a few bytes into
    gigabytes (the "billion laughs"), and a space file never needs one."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed; write the value out", mark
            )
        return super().compose_node(parent, index)


def parse_yaml(text: str) -> Any:
    """Parse YAML safely and boundedly: no tags beyond plain data, no aliases.

    Raises ``yaml.YAMLError`` for malformed or aliased input (nesting so deep that
    it exhausts the parser counts as malformed).
    """
    try:
        return yaml.load(text, Loader=_PlainLoader)
    except RecursionError:
        raise yaml.YAMLError("nested too deeply") from None


@dataclass(frozen=True)
class Param:
    """One hyperparameter: its type, range or values, and its value boxes."""

    name: str
    type: str
    low: float | None = None
    high: float | None = None
    values: tuple[Any, ...] = ()
    boxes: tuple[Any, ...] = ()
    log: bool = False
    discrete: bool = False
    default: Any = None

    @property
    def is_finite(self) -> bool:
        """Whether the parameter takes only finitely many values (choice or discrete)."""
        return self.type == "choice" or self.discrete

    def box_index(self, value: Any) -> int | None:
        """The index of the box equal to ``value`` (floats: to 9 significant digits)."""
        for i, box in enumerate(self.boxes):
            if box == value or (
                isinstance(box, float)
                and isinstance(value, int | float)
                and not isinstance(value, bool)
                and math.isclose(box, value, rel_tol=1e-9, abs_tol=1e-12)
            ):
                return i
        return None

    def nearest_box(self, value: Any) -> int:
        """The index of the box nearest to ``value`` (by log distance on a log scale)."""
        exact = self.box_index(value)
        if exact is not None:
            return exact
        if self.type == "choice" or isinstance(value, bool) or not isinstance(value, int | float):
            raise SpaceError(f"parameter {self.name!r}: {value!r} is not one of its values")
        if self.is_log and value > 0:
            return min(
                range(len(self.boxes)),
                key=lambda i: abs(math.log(self.boxes[i]) - math.log(value)),
            )
        return min(range(len(self.boxes)), key=lambda i: abs(self.boxes[i] - value))

    @property
    def is_log(self) -> bool:
        """Whether the range is searched on a log scale."""
        return self.type == "loguniform" or (self.type == "int" and self.log)

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is a legal value of this parameter."""
        if self.type == "choice":
            return value in self.values
        if self.discrete:
            return self.box_index(value) is not None
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.type == "int" and int(value) != value:
            return False
        assert self.low is not None and self.high is not None
        return self.low <= value <= self.high

    def tune_domain(self) -> Any:
        """The Ray Tune sampling domain: the continuous range, or the boxes if finite."""
        from ray import tune

        if self.is_finite:
            return tune.choice(list(self.boxes))
        assert self.low is not None and self.high is not None
        if self.type == "uniform":
            return tune.uniform(self.low, self.high)
        if self.type == "loguniform":
            return tune.loguniform(self.low, self.high)
        # Tune's integer upper bounds are exclusive.
        if self.log:
            return tune.lograndint(int(self.low), int(self.high) + 1)
        return tune.randint(int(self.low), int(self.high) + 1)


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space plus the study defaults its file names."""

    params: tuple[Param, ...]
    task: str
    metric: str
    mode: str
    max_epochs: int
    fixed: Mapping[str, Any] = field(default_factory=dict)
    name: str = "space"
    source: str = "<dict>"
    digest: str = ""

    @classmethod
    def from_dict(cls, data: Any, source: str = "<dict>") -> SearchSpace:
        """Validate a parsed space file; raise :class:`SpaceError` naming the fix."""
        return _parse(data, source)

    @property
    def names(self) -> list[str]:
        """Parameter names in file order."""
        return [p.name for p in self.params]

    def param(self, name: str) -> Param:
        """The parameter called ``name``."""
        for p in self.params:
            if p.name == name:
                return p
        raise SpaceError(f"{self.source}: no parameter {name!r}; known: {', '.join(self.names)}")

    @property
    def grid_size(self) -> int:
        """Number of configurations in the full grid of value boxes."""
        return math.prod(len(p.boxes) for p in self.params)

    def grid(self) -> Iterator[dict[str, Any]]:
        """Every combination of value boxes, in a fixed (lexicographic) order."""
        for combo in itertools.product(*(p.boxes for p in self.params)):
            yield dict(zip(self.names, combo, strict=True))

    @property
    def is_finite(self) -> bool:
        """Whether every parameter is choice or discrete (the grid is the whole space)."""
        return all(p.is_finite for p in self.params)

    def cell(self, config: Mapping[str, Any]) -> tuple[int, ...] | None:
        """The grid cell ``config`` lies in: each parameter's nearest box index (a
        continuous value snaps to its nearest box); None if the space is not finite."""
        if not self.is_finite:
            return None
        return tuple(p.nearest_box(config[p.name]) for p in self.params)

    def tune_param_space(self) -> dict[str, Any]:
        """The Ray Tune ``param_space``: continuous ranges, and finite parameters' boxes."""
        return {p.name: p.tune_domain() for p in self.params}

    def contains(self, config: Mapping[str, Any]) -> bool:
        """Whether ``config`` sets every parameter, and only those, to legal values."""
        return set(config) == set(self.names) and all(
            p.contains(config[p.name]) for p in self.params
        )

    def default_config(self) -> dict[str, Any]:
        """Each parameter's ``default`` or, failing that, its middle box."""
        return {
            p.name: p.default if p.default is not None else p.boxes[len(p.boxes) // 2]
            for p in self.params
        }


def builtin() -> dict[str, Path]:
    """The built-in spaces by name: the file's path under ``tune_app/search_spaces``
    without ``.yaml`` (``digits_mlp``, ``benchmarks/hpobench_kc1``)."""
    return {
        p.relative_to(BUILTIN_DIR).with_suffix("").as_posix(): p
        for p in sorted(BUILTIN_DIR.rglob("*.yaml"), key=lambda p: (p.parent != BUILTIN_DIR, p))
    }


def locate(ref: str | Path) -> Path:
    """The file of ``ref``: an existing file wins, else the built-in space of that
    name (``.yaml`` optional); anything else is a :class:`SpaceError` listing the names."""
    path = Path(ref)
    if path.is_file():
        return path
    known = builtin()
    # Paths under the checkout's old search_spaces/ folder (older commands and run
    # manifests) name the built-in space that moved into the package.
    name = Path(ref).as_posix().removesuffix(".yaml").rpartition("search_spaces/")[2]
    found = known.get(name)
    if found is None:
        raise SpaceError(
            f"{ref}: search-space file not found, nor a built-in space; pass a YAML file "
            f"or a built-in name: {', '.join(known)}"
        )
    return found


def load(path: str | Path) -> SearchSpace:
    """Read and validate a search-space YAML file, or a built-in space by name."""
    path = locate(path)
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise SpaceError(
            f"{path}: {size:,} bytes is too large for a search-space file (limit "
            f"{MAX_FILE_BYTES:,}); pass the space's YAML file"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise SpaceError(f"{path}: not a text (UTF-8) file; pass the space's YAML file") from None
    try:
        data = parse_yaml(text)
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "parse error"
        raise SpaceError(f"{path}: not valid YAML ({first}); fix the syntax") from None
    space = _parse(data, str(path))
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return replace(space, name=str(data.get("name") or path.stem), digest=digest)


def _number(src: str, where: str, key: str, value: Any) -> float:
    # YAML 1.1 reads "1e-4" (no dot) as a string: accept numeric strings.
    if isinstance(value, bool):
        raise SpaceError(f"{src}: {where}: '{key}' must be a number, got {value!r}")
    if isinstance(value, int | float):
        out = float(value)
    else:
        try:
            out = float(str(value))
        except ValueError:
            raise SpaceError(f"{src}: {where}: '{key}' must be a number, got {value!r}") from None
    if not math.isfinite(out):
        raise SpaceError(f"{src}: {where}: '{key}' must be finite, got {value!r}")
    return out


def _parse(data: Any, src: str) -> SearchSpace:
    if not isinstance(data, dict):
        raise SpaceError(
            f"{src}: expected a mapping with 'task', 'metric', 'mode', 'max_epochs' "
            f"and 'params', got {type(data).__name__}"
        )
    unknown = set(map(str, data)) - _TOP_KEYS
    if unknown:
        raise SpaceError(
            f"{src}: unknown top-level key(s) {sorted(unknown)}; allowed: {sorted(_TOP_KEYS)}"
        )
    for key in ("task", "metric"):
        if not isinstance(data.get(key), str) or not data[key]:
            raise SpaceError(f"{src}: '{key}' must be a non-empty string (e.g. {key}: ...)")
    mode = data.get("mode")
    if mode not in MODES:
        raise SpaceError(f"{src}: 'mode' must be 'min' or 'max', got {mode!r}")
    max_epochs = data.get("max_epochs")
    if isinstance(max_epochs, bool) or not isinstance(max_epochs, int) or max_epochs < 1:
        raise SpaceError(
            f"{src}: 'max_epochs' (per-trial epoch cap) must be an integer >= 1, got {max_epochs!r}"
        )
    fixed = data.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise SpaceError(f"{src}: 'fixed' must be a mapping of name: value")
    raw_params = data.get("params")
    if not isinstance(raw_params, dict) or not raw_params:
        raise SpaceError(f"{src}: 'params' must be a non-empty mapping of name: {{type: ...}}")
    params = tuple(_parse_param(src, str(n), spec) for n, spec in raw_params.items())
    clash = set(map(str, fixed)) & {p.name for p in params}
    if clash:
        raise SpaceError(
            f"{src}: {sorted(clash)} appear in both 'params' and 'fixed'; keep each in one"
        )
    return SearchSpace(
        params=params,
        task=data["task"],
        metric=data["metric"],
        mode=mode,
        max_epochs=max_epochs,
        fixed={str(k): v for k, v in fixed.items()},
        name=str(data.get("name") or "space"),
        source=src,
    )


def _parse_param(src: str, name: str, spec: Any) -> Param:
    where = f"parameter {name!r}"
    if not name.isidentifier():
        raise SpaceError(f"{src}: {where}: name must be a Python identifier (letters, _, digits)")
    if not isinstance(spec, dict):
        raise SpaceError(f"{src}: {where}: expected a mapping like {{type: uniform, ...}}")
    ptype = spec.get("type")
    if ptype not in PARAM_TYPES:
        raise SpaceError(
            f"{src}: {where}: unknown type {ptype!r}; use one of {', '.join(PARAM_TYPES)}"
        )
    unknown = set(map(str, spec)) - _PARAM_KEYS[ptype]
    if unknown:
        raise SpaceError(
            f"{src}: {where}: unknown key(s) {sorted(unknown)} for type {ptype}; "
            f"allowed: {sorted(_PARAM_KEYS[ptype])}"
        )
    if ptype == "choice":
        values = spec.get("values")
        if not isinstance(values, list) or not values:
            raise SpaceError(f"{src}: {where}: 'values' must be a non-empty list")
        if len({repr(v) for v in values}) != len(values):
            raise SpaceError(f"{src}: {where}: 'values' has duplicates; list each once")
        for v in values:
            if not isinstance(v, str | int | float | bool) or v is None:
                raise SpaceError(
                    f"{src}: {where}: choice values must be strings, numbers or booleans, got {v!r}"
                )
        p = Param(name=name, type=ptype, values=tuple(values), boxes=tuple(values))
        return _with_default(src, where, p, spec)

    for key in ("low", "high"):
        if key not in spec:
            raise SpaceError(f"{src}: {where}: missing '{key}' (type {ptype} needs low and high)")
    low = _number(src, where, "low", spec["low"])
    high = _number(src, where, "high", spec["high"])
    is_int = ptype == "int"
    if is_int and (low != int(low) or high != int(high)):
        raise SpaceError(f"{src}: {where}: int bounds must be integers, got {low}..{high}")
    if low >= high:
        raise SpaceError(
            f"{src}: {where}: low ({low:g}) must be < high ({high:g}); swap or widen the range"
        )
    log = ptype == "loguniform" or bool(spec.get("log", False))
    if log and low <= 0:
        raise SpaceError(
            f"{src}: {where}: a log range needs low > 0, got low={low:g}; "
            f"use a positive lower bound or type uniform"
        )
    discrete = spec.get("discrete", False)
    if not isinstance(discrete, bool):
        raise SpaceError(f"{src}: {where}: 'discrete' must be true or false, got {discrete!r}")
    boxes = _boxes(src, where, spec.get("boxes", 5), low, high, log, is_int)
    if discrete and len(boxes) < 2:
        raise SpaceError(
            f"{src}: {where}: a discrete parameter needs at least 2 boxes; list its values"
        )
    p = Param(
        name=name,
        type=ptype,
        low=int(low) if is_int else low,
        high=int(high) if is_int else high,
        boxes=boxes,
        log=log,
        discrete=discrete,
    )
    return _with_default(src, where, p, spec)


def _boxes(
    src: str, where: str, raw: Any, low: float, high: float, log: bool, is_int: bool
) -> tuple[Any, ...]:
    if isinstance(raw, bool):
        raise SpaceError(f"{src}: {where}: 'boxes' must be a count >= 2 or a list of values")
    if isinstance(raw, int):
        if raw < 2:
            raise SpaceError(f"{src}: {where}: 'boxes' count must be >= 2, got {raw}")
        if log:
            pts = [
                math.exp(math.log(low) + i * (math.log(high) - math.log(low)) / (raw - 1))
                for i in range(raw)
            ]
        else:
            pts = [low + i * (high - low) / (raw - 1) for i in range(raw)]
        if is_int:
            out = tuple(dict.fromkeys(round(x) for x in pts))
            if len(out) < 2:
                raise SpaceError(f"{src}: {where}: the int range is too narrow for {raw} boxes")
            return out
        # Round to 6 significant digits so box values read well in logs.
        return tuple(float(f"{x:.6g}") for x in pts)
    if not isinstance(raw, list) or len(raw) < 1:
        raise SpaceError(f"{src}: {where}: 'boxes' must be a count >= 2 or a non-empty list")
    vals = [_number(src, where, "boxes", v) for v in raw]
    outside = [v for v in vals if not low <= v <= high]
    if outside:
        raise SpaceError(
            f"{src}: {where}: boxes {[f'{v:g}' for v in outside]} fall outside "
            f"[{low:g}, {high:g}]; move them inside the range or widen it"
        )
    if is_int and any(v != int(v) for v in vals):
        raise SpaceError(f"{src}: {where}: boxes of an int parameter must be integers")
    if len(set(vals)) != len(vals):
        raise SpaceError(f"{src}: {where}: 'boxes' has duplicates; list each value once")
    ordered = sorted(vals)
    return tuple(int(v) for v in ordered) if is_int else tuple(ordered)


def _with_default(src: str, where: str, p: Param, spec: dict[str, Any]) -> Param:
    if "default" not in spec:
        return p
    default = spec["default"]
    if not p.contains(default):
        raise SpaceError(
            f"{src}: {where}: default {default!r} is not a legal value; "
            f"pick one inside the range or among the values"
        )
    return replace(p, default=default)
