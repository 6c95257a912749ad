"""Every strategy's typed options, declared once, in a module that imports no Ray.

Each strategy module builds from its dataclass here (``--opt KEY=VALUE`` is
validated by :func:`parse_options` against it), the registry
(:data:`tune_app.strategies.REGISTRY`) points at it, and ``tune-app strategies``
lists its fields (:func:`specs`) without importing Ray, Optuna or RLlib. A field
is declared with :func:`opt`: its default and its one line of help.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple, TypeVar

from tune_app.errors import ConfigError

T = TypeVar("T")


def opt(default: Any, help: str) -> Any:
    """An option field: its default and one line for ``tune-app strategies``."""
    return field(default=default, metadata={"help": help})


class OptionSpec(NamedTuple):
    """One option as ``tune-app strategies`` lists it."""

    name: str
    type: str
    default: Any
    help: str


def specs(cls: type) -> list[OptionSpec]:
    """The options of the dataclass ``cls``, in declaration order."""
    return [
        OptionSpec(f.name, str(f.type), f.default, f.metadata.get("help", ""))
        for f in dataclasses.fields(cls)
    ]


def parse_options(cls: type[T], strategy: str, options: Mapping[str, Any] | None) -> T:
    """Build the options dataclass ``cls``; unknown keys are errors, never dropped."""
    options = dict(options or {})
    valid = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(
            f"strategy {strategy!r}: unknown option(s) {unknown}; valid options: "
            f"{', '.join(valid) or '(none)'}"
        )
    try:
        return cls(**options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"strategy {strategy!r}: {exc}") from None


def parse_side(
    cls: type[T],
    strategy: str,
    options: Mapping[str, Any] | None,
    side: str,
    searcher_keys: tuple[str, ...],
) -> T:
    """:func:`parse_options` for a scheduler that brings its own searcher: one options
    class, ``searcher_keys`` set with ``--opt`` and the rest with ``--scheduler-opt``;
    a key given to the wrong ``side`` is an error naming the right flag."""
    valid = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in options or {}:
        if key not in valid:
            continue  # parse_options lists the valid ones
        if side == "searcher" and key not in searcher_keys:
            raise ConfigError(
                f"strategy {strategy!r}: {key!r} is a scheduler option; pass it as "
                f"--scheduler-opt {key}=..."
            )
        if side == "scheduler" and key in searcher_keys:
            raise ConfigError(
                f"strategy {strategy!r}: {key!r} is an option of its searcher; pass it as "
                f"--opt {key}=..."
            )
    return parse_options(cls, strategy, options)


def require(cond: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``cond`` holds."""
    if not cond:
        raise ConfigError(message)


def whole(value: Any, minimum: int) -> bool:
    """Whether ``value`` is an integer (not a bool) of at least ``minimum``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


@dataclass(frozen=True)
class GridOptions:
    """Options of ``grid``."""

    shuffle: bool = opt(
        False, "visit the grid in a seeded random order (when the budget covers part of it)"
    )

    def __post_init__(self) -> None:
        require(isinstance(self.shuffle, bool), "grid: 'shuffle' must be true or false")


@dataclass(frozen=True)
class RandomOptions:
    """``random`` has no options."""


@dataclass(frozen=True)
class OptunaOptions:
    """Options of ``optuna`` (defaults: Optuna's own, so it runs as its docs run it)."""

    n_startup_trials: int = opt(10, "random trials before TPE starts modelling")
    multivariate: bool | None = opt(
        None, "model parameters jointly (unset: Optuna's default, multivariate since Optuna 5)"
    )

    def __post_init__(self) -> None:
        require(
            whole(self.n_startup_trials, 0),
            "optuna: 'n_startup_trials' must be an integer >= 0",
        )
        require(
            self.multivariate is None or isinstance(self.multivariate, bool),
            "optuna: 'multivariate' must be true, false or unset",
        )


@dataclass(frozen=True)
class GPOptions:
    """Options of ``gp`` (defaults: Optuna's)."""

    n_startup_trials: int = opt(10, "random trials before the Gaussian process is fitted")
    deterministic_objective: bool = opt(
        False, "the metric has no noise (e.g. a lookup table): interpolate, don't smooth"
    )

    def __post_init__(self) -> None:
        require(
            whole(self.n_startup_trials, 0),
            "gp: 'n_startup_trials' must be an integer >= 0",
        )
        require(
            isinstance(self.deterministic_objective, bool),
            "gp: 'deterministic_objective' must be true or false",
        )


@dataclass(frozen=True)
class CmaesOptions:
    """Options of ``cmaes`` (defaults: Optuna's, except the margin)."""

    n_startup_trials: int = opt(1, "random trials before CMA-ES starts")
    popsize: int | None = opt(None, "population size (unset: 4 + 3 ln(dimensions))")
    with_margin: bool | None = opt(
        None, "CMA-ES with margin (unset: on when the space has integer or discrete parameters)"
    )

    def __post_init__(self) -> None:
        require(
            whole(self.n_startup_trials, 0),
            "cmaes: 'n_startup_trials' must be an integer >= 0",
        )
        require(
            self.popsize is None or whole(self.popsize, 2),
            "cmaes: 'popsize' must be an integer >= 2 (or unset)",
        )
        require(
            self.with_margin is None or isinstance(self.with_margin, bool),
            "cmaes: 'with_margin' must be true, false or unset",
        )


@dataclass(frozen=True)
class HyperoptOptions:
    """Options of ``hyperopt``."""

    n_initial_points: int = opt(
        20, "random trials before TPE starts modelling (Ray's and HyperOpt's default)"
    )
    gamma: float = opt(0.25, "TPE's quantile splitting good from bad trials, in (0, 1)")

    def __post_init__(self) -> None:
        require(
            isinstance(self.n_initial_points, int) and self.n_initial_points >= 1,
            "hyperopt: 'n_initial_points' must be an integer >= 1",
        )
        require(0 < float(self.gamma) < 1, "hyperopt: 'gamma' must be in (0, 1)")


@dataclass(frozen=True)
class DQNOptions:
    """Options of ``dqn``."""

    checkpoint: str | None = opt(
        None, "Q-network directory from `tune-app controller train` (unset: the shipped one)"
    )
    epsilon: float = opt(0.05, "probability of a random valid action instead of the greedy one")
    start: str = opt(
        "default",
        "each walker's first config: default (the first walker at the space's defaults, "
        "else middle boxes; the others random), random boxes or bad (a random corner)",
    )
    horizon: int = opt(
        50, "expected number of trials, a state feature (runs: budget_epochs // max_epochs)"
    )
    finetune: int = opt(
        0,
        "SGD steps on the search's own transitions after each finished trial "
        "(0: off; measured in docs/dqn-controller.md)",
    )
    design: int = opt(
        1,
        "configs of a space-filling design before the walk starts from their best "
        "(1: none; more measured worse on the benchmarks, see docs/dqn-controller.md)",
    )

    def __post_init__(self) -> None:
        from tune_app.controller.env import STARTS  # gymnasium: only when options are checked

        require(
            isinstance(self.epsilon, int | float) and 0.0 <= self.epsilon <= 1.0,
            f"dqn: 'epsilon' must be in [0, 1], got {self.epsilon!r}",
        )
        require(self.start in STARTS, f"dqn: 'start' must be one of {STARTS}, got {self.start!r}")
        require(
            whole(self.horizon, 1),
            f"dqn: 'horizon' must be an integer >= 1, got {self.horizon!r}",
        )
        require(
            whole(self.finetune, 0),
            f"dqn: 'finetune' must be an integer >= 0 (0: off), got {self.finetune!r}",
        )
        require(
            whole(self.design, 1),
            f"dqn: 'design' must be an integer >= 1 (1: no design, the walk starts at "
            f"once), got {self.design!r}",
        )
        require(
            self.checkpoint is None or isinstance(self.checkpoint, str),
            "dqn: 'checkpoint' must be a directory path",
        )


@dataclass(frozen=True)
class HyperbandOptions:
    """Options of ``hyperband``."""

    reduction_factor: int = opt(3, "eta: keep the top 1/eta at each halving")
    brackets: int | None = opt(None, "number of brackets (unset: 1 + floor(log_eta(max_epochs)))")

    def __post_init__(self) -> None:
        require(
            isinstance(self.reduction_factor, int) and self.reduction_factor >= 2,
            "hyperband: 'reduction_factor' must be an integer >= 2",
        )
        require(
            self.brackets is None or (isinstance(self.brackets, int) and self.brackets >= 1),
            "hyperband: 'brackets' must be an integer >= 1",
        )


@dataclass(frozen=True)
class AshaOptions:
    """Options of ``asha``."""

    grace_period: int = opt(1, "epochs every trial gets before it can be stopped")
    reduction_factor: int = opt(3, "keep the top 1/reduction_factor at each rung")

    def __post_init__(self) -> None:
        require(
            isinstance(self.grace_period, int) and self.grace_period >= 1,
            "asha: 'grace_period' must be an integer >= 1",
        )
        require(
            isinstance(self.reduction_factor, int) and self.reduction_factor >= 2,
            "asha: 'reduction_factor' must be an integer >= 2",
        )


@dataclass(frozen=True)
class EvolutionOptions:
    """Options of ``evolution`` (regularized evolution, Real et al. 2019)."""

    population: int = opt(
        8, "members kept alive: the first this many trials are random; the oldest dies first"
    )
    tournament: int = opt(3, "members drawn per tournament; the best of them is mutated")

    def __post_init__(self) -> None:
        require(
            whole(self.population, 2),
            f"evolution: 'population' must be an integer >= 2, got {self.population!r}",
        )
        require(
            whole(self.tournament, 1)
            and isinstance(self.population, int)
            and self.tournament <= self.population,
            f"evolution: 'tournament' must be an integer in 1..population "
            f"({self.population!r}), got {self.tournament!r}",
        )


@dataclass(frozen=True)
class LCEOptions:
    """Options of ``lce`` (learning-curve extrapolation)."""

    min_epochs: int = opt(3, "epochs every trial gets before its curve is extrapolated")
    threshold: float = opt(
        0.05, "stop a trial when P(its final value beats the best so far) falls below this"
    )

    def __post_init__(self) -> None:
        require(
            whole(self.min_epochs, 3),
            f"lce: 'min_epochs' must be an integer >= 3 (two points to fit a curve, one "
            f"more for its noise), got {self.min_epochs!r}",
        )
        require(
            isinstance(self.threshold, int | float)
            and not isinstance(self.threshold, bool)
            and 0.0 < self.threshold < 1.0,
            f"lce: 'threshold' must be a probability in (0, 1), got {self.threshold!r}",
        )


@dataclass(frozen=True)
class BOHBOptions:
    """Options of ``bohb`` (TuneBOHB + HyperBandForBOHB; defaults: hpbandster's).

    ``reduction_factor`` belongs to the scheduler (``--scheduler-opt``); the rest
    to BOHB's kernel-density model (``--opt``)."""

    reduction_factor: int = opt(3, "(--scheduler-opt) eta: keep the top 1/eta at each halving")
    min_points_in_model: int | None = opt(
        None, "(--opt) results per budget before the model is used (unset: parameters + 1)"
    )
    top_n_percent: int = opt(15, "(--opt) percent of results that count as good")
    num_samples: int = opt(64, "(--opt) candidates drawn to optimise the acquisition")
    random_fraction: float = opt(1 / 3, "(--opt) fraction of proposals drawn at random")
    bandwidth_factor: float = opt(3.0, "(--opt) widening of the good KDE for sampling")

    def __post_init__(self) -> None:
        require(
            whole(self.reduction_factor, 2),
            "bohb: 'reduction_factor' must be an integer >= 2",
        )
        require(
            self.min_points_in_model is None or whole(self.min_points_in_model, 1),
            "bohb: 'min_points_in_model' must be an integer >= 1 (or unset)",
        )
        require(
            whole(self.top_n_percent, 1) and self.top_n_percent < 100,
            "bohb: 'top_n_percent' must be an integer in 1..99",
        )
        require(whole(self.num_samples, 1), "bohb: 'num_samples' must be an integer >= 1")
        require(
            isinstance(self.random_fraction, int | float)
            and not isinstance(self.random_fraction, bool)
            and 0.0 <= self.random_fraction <= 1.0,
            "bohb: 'random_fraction' must be in [0, 1]",
        )
        require(
            isinstance(self.bandwidth_factor, int | float)
            and not isinstance(self.bandwidth_factor, bool)
            and self.bandwidth_factor > 0,
            "bohb: 'bandwidth_factor' must be a number > 0",
        )


@dataclass(frozen=True)
class PopulationOptions:
    """Options of population-based training, shared by ``pbt`` and ``pb2`` (Ray
    Tune's schedulers, synchronous).

    ``population`` belongs to the searcher that draws the first generation
    (``--opt``); the rest to the scheduler (``--scheduler-opt``)."""

    NAME: ClassVar[str] = "pbt"

    population: int | None = opt(
        None, "(--opt) trials trained side by side (unset: budget_epochs // max_epochs)"
    )
    perturbation_interval: int | None = opt(
        None, "(--scheduler-opt) epochs between exploits (unset: max(1, max_epochs // 3))"
    )
    quantile_fraction: float = opt(
        0.25, "(--scheduler-opt) bottom fraction that copies the top fraction"
    )
    mutate: str | None = opt(
        None,
        "(--scheduler-opt) comma-separated parameters to explore; the others are copied "
        "from the parent (unset: the continuous ones, or all if none is continuous)",
    )

    def __post_init__(self) -> None:
        name = self.NAME
        require(
            self.population is None or whole(self.population, 2),
            f"{name}: 'population' must be an integer >= 2 (or unset), got {self.population!r}",
        )
        require(
            self.perturbation_interval is None or whole(self.perturbation_interval, 1),
            f"{name}: 'perturbation_interval' must be an integer >= 1 (or unset)",
        )
        require(
            isinstance(self.quantile_fraction, int | float)
            and not isinstance(self.quantile_fraction, bool)
            and 0.0 < self.quantile_fraction <= 0.5,
            f"{name}: 'quantile_fraction' must be in (0, 0.5]",
        )
        require(
            self.mutate is None or (isinstance(self.mutate, str) and bool(self.mutate.strip())),
            f"{name}: 'mutate' must be comma-separated parameter names (or unset)",
        )


@dataclass(frozen=True)
class PBTOptions(PopulationOptions):
    """Options of ``pbt``: explore perturbs or redraws each parameter."""

    resample_probability: float = opt(
        0.25, "(--scheduler-opt) chance a perturbed parameter is drawn afresh instead"
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        require(
            isinstance(self.resample_probability, int | float)
            and not isinstance(self.resample_probability, bool)
            and 0.0 <= self.resample_probability <= 1.0,
            "pbt: 'resample_probability' must be in [0, 1]",
        )


@dataclass(frozen=True)
class PB2Options(PopulationOptions):
    """Options of ``pb2``: a GP bandit over the population's data explores."""

    NAME: ClassVar[str] = "pb2"
