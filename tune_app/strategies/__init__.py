"""Search strategies and their registry.

:data:`REGISTRY` is the one list of strategy names: the CLI's choices, the
``strategies`` listing, validation and the contract tests all read it. A
*searcher* proposes configurations; a *scheduler* stops or pauses trials early.
They compose: ``build("optuna", scheduler="asha")``. Naming a scheduler as the
strategy is a preset for random search under that scheduler, except for the
schedulers that bring their own searcher (``bohb``: its KDE model; ``pbt`` and
``pb2``: their first generation), which compose with no other searcher.

Modules are imported lazily by name (as Ray Tune's own registry does), so the
registry, the CLI's parser and the ``strategies`` listing (with every option)
import none of Ray, Optuna, HyperOpt or RLlib: each entry names its module and
its options dataclass, declared Ray-free in :mod:`tune_app.strategies.options`.
Each module exports a :class:`~tune_app.strategies.base.StrategyPlugin` as
``PLUGIN``: its build function, the same options class and its optional hooks.

Adding a strategy: declare its options in ``options.py``, write
``tune_app/strategies/<name>.py`` (``build``, ``PLUGIN``) and add one
:class:`StrategyInfo` line below; the CLI, ``compare``, the contract tests and
the docs listing pick it up from here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from tune_app.errors import ConfigError
from tune_app.strategies import options as opts

if TYPE_CHECKING:
    from ray.tune.schedulers import TrialScheduler
    from ray.tune.search import Searcher

    from tune_app.spaces import SearchSpace
    from tune_app.strategies.base import StrategyPlugin

Kind = Literal["searcher", "scheduler"]


@dataclass(frozen=True)
class StrategyInfo:
    """A registry entry: what the name is, where it lives, what it does, and its
    options (``--opt`` for searchers, ``--scheduler-opt`` for schedulers)."""

    name: str
    kind: Kind
    module: str
    description: str
    options: type
    # A scheduler that brings its own searcher (its plugin's ``searcher`` hook, e.g.
    # BOHB's model, PBT's first generation) and composes with no other searcher.
    own_searcher: bool = False


REGISTRY: dict[str, StrategyInfo] = {
    info.name: info
    for info in (
        StrategyInfo(
            "grid",
            "searcher",
            "tune_app.strategies.grid",
            "every combination of the value boxes, in a fixed order",
            opts.GridOptions,
        ),
        StrategyInfo(
            "random",
            "searcher",
            "tune_app.strategies.random_search",
            "independent uniform samples of the ranges (seeded)",
            opts.RandomOptions,
        ),
        StrategyInfo(
            "optuna",
            "searcher",
            "tune_app.strategies.optuna_tpe",
            "Bayesian optimisation: Optuna's TPE sampler",
            opts.OptunaOptions,
        ),
        StrategyInfo(
            "gp",
            "searcher",
            "tune_app.strategies.gp",
            "Bayesian optimisation: Optuna's Gaussian-process sampler",
            opts.GPOptions,
        ),
        StrategyInfo(
            "cmaes",
            "searcher",
            "tune_app.strategies.cmaes",
            "evolution strategy: Optuna's CMA-ES (for continuous spaces)",
            opts.CmaesOptions,
        ),
        StrategyInfo(
            "hyperopt",
            "searcher",
            "tune_app.strategies.hyperopt_tpe",
            "Bayesian optimisation: HyperOpt's TPE",
            opts.HyperoptOptions,
        ),
        StrategyInfo(
            "dqn",
            "searcher",
            "tune_app.strategies.dqn",
            "pretrained RLlib DQN controller walking the value boxes (tune_app.controller)",
            opts.DQNOptions,
        ),
        StrategyInfo(
            "hyperband",
            "scheduler",
            "tune_app.strategies.hyperband",
            "random search under Hyperband's brackets of successive halving (async)",
            opts.HyperbandOptions,
        ),
        StrategyInfo(
            "asha",
            "scheduler",
            "tune_app.strategies.asha",
            "random search under asynchronous successive halving (ASHA)",
            opts.AshaOptions,
        ),
        StrategyInfo(
            "evolution",
            "searcher",
            "tune_app.strategies.evolution",
            "regularized evolution: tournaments, one-box mutations, the oldest dies",
            opts.EvolutionOptions,
        ),
        StrategyInfo(
            "lce",
            "scheduler",
            "tune_app.strategies.lce",
            "random search; learning-curve extrapolation stops trials unlikely to win",
            opts.LCEOptions,
        ),
        StrategyInfo(
            "bohb",
            "scheduler",
            "tune_app.strategies.bohb",
            "BOHB: hpbandster's KDE model proposes inside Hyperband's brackets",
            opts.BOHBOptions,
            own_searcher=True,
        ),
        StrategyInfo(
            "pbt",
            "scheduler",
            "tune_app.strategies.pbt",
            "population-based training: the worst copy the best's weights, perturbed",
            opts.PBTOptions,
            own_searcher=True,
        ),
        StrategyInfo(
            "pb2",
            "scheduler",
            "tune_app.strategies.pb2",
            "population-based bandits: PBT whose explore step is a GP bandit (UCB)",
            opts.PB2Options,
            own_searcher=True,
        ),
    )
}
DEFAULT_SEARCHER = "random"


def names(kind: Kind | None = None) -> list[str]:
    """Registered names, optionally only searchers or only schedulers."""
    return [n for n, info in REGISTRY.items() if kind is None or info.kind == kind]


@dataclass(frozen=True)
class Strategy:
    """A resolved strategy: which searcher and which scheduler (if any)."""

    searcher: str
    scheduler: str | None

    @property
    def label(self) -> str:
        """A short display name, e.g. ``optuna+asha`` or ``asha``."""
        if self.scheduler is None:
            return self.searcher
        if self.searcher in (DEFAULT_SEARCHER, self.scheduler):
            return self.scheduler
        return f"{self.searcher}+{self.scheduler}"


def resolve(strategy: str, scheduler: str | None = None) -> Strategy:
    """Turn ``strategy`` (+ optional ``scheduler``) into a :class:`Strategy`."""
    if strategy not in REGISTRY:
        raise ConfigError(f"unknown strategy {strategy!r}; valid: {', '.join(REGISTRY)}")
    if scheduler is not None and REGISTRY.get(scheduler) is None:
        raise ConfigError(
            f"unknown scheduler {scheduler!r}; valid: {', '.join(names('scheduler'))}"
        )
    if scheduler is not None and REGISTRY[scheduler].kind != "scheduler":
        raise ConfigError(
            f"{scheduler!r} is a searcher, not a scheduler; valid schedulers: "
            f"{', '.join(names('scheduler'))}"
        )
    info = REGISTRY[strategy]
    if info.kind == "scheduler":
        if scheduler not in (None, strategy):
            raise ConfigError(
                f"strategy {strategy!r} is already a scheduler preset; to combine, pass a "
                f"searcher as the strategy (e.g. --strategy optuna --scheduler {scheduler})"
            )
        return Strategy(strategy if info.own_searcher else DEFAULT_SEARCHER, strategy)
    if scheduler is not None and REGISTRY[scheduler].own_searcher:
        raise ConfigError(
            f"scheduler {scheduler!r} brings its own searcher and combines with no other; "
            f"run it as --strategy {scheduler} (or pick another scheduler: "
            f"{', '.join(n for n in names('scheduler') if not REGISTRY[n].own_searcher)})"
        )
    return Strategy(strategy, scheduler)


def plugin(name: str) -> StrategyPlugin:
    """The :class:`StrategyPlugin` of the strategy registered as ``name``."""
    if name not in REGISTRY:
        raise ConfigError(f"unknown strategy {name!r}; valid: {', '.join(REGISTRY)}")
    found: StrategyPlugin = importlib.import_module(REGISTRY[name].module).PLUGIN
    return found


def _build(
    kind: Kind,
    name: str,
    space: SearchSpace,
    metric: str,
    mode: str,
    seed: int,
    options: dict[str, Any] | None,
) -> Any:
    info = REGISTRY.get(name)
    own = info is not None and info.own_searcher and kind == "searcher"
    if info is None or (info.kind != kind and not own):
        raise ConfigError(f"unknown {kind} {name!r}; valid: {', '.join(names(kind))}")
    found = plugin(name)
    build = found.searcher if own else found.build
    assert build is not None, f"{name}: own_searcher needs the plugin's searcher hook"
    return build(space, metric, mode, seed, options)


def build_searcher(
    name: str,
    space: SearchSpace,
    metric: str,
    mode: str,
    seed: int,
    options: dict[str, Any] | None = None,
) -> Searcher:
    """Build the searcher registered as ``name``, ready for Tune."""
    searcher: Searcher = _build("searcher", name, space, metric, mode, seed, options)
    return searcher


def build_scheduler(
    name: str,
    space: SearchSpace,
    metric: str,
    mode: str,
    seed: int,
    options: dict[str, Any] | None = None,
) -> TrialScheduler:
    """Build the scheduler registered as ``name``."""
    scheduler: TrialScheduler = _build("scheduler", name, space, metric, mode, seed, options)
    return scheduler


def budget_defaults(name: str, space: SearchSpace, budget_epochs: int) -> dict[str, Any]:
    """Options a searcher derives from the budget (e.g. dqn's ``horizon``); user options win."""
    hook = plugin(name).budget_defaults
    return dict(hook(space, budget_epochs)) if hook else {}


def min_trial_epochs(
    strategy: Strategy, space: SearchSpace, scheduler_options: dict[str, Any] | None = None
) -> int:
    """The fewest epochs one trial can cost under ``strategy``."""
    if strategy.scheduler is None:
        return space.max_epochs
    hook = plugin(strategy.scheduler).min_epochs
    return int(hook(space, scheduler_options)) if hook else space.max_epochs


def warmup_trials(name: str, options: dict[str, Any] | None) -> int:
    """Random start-up trials the searcher ``name`` runs before modelling (0: none)."""
    p = plugin(name)
    if p.warmup_option is None:
        return 0
    return int(getattr(p.parse(name, options), p.warmup_option) or 0)
