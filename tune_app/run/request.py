"""A search request: every run option, its default, its help and its validation.

:class:`SearchRequest` is the one place a run option is declared. The CLI builds
its flags from the fields (:func:`cli_fields`), :func:`tune_app.run_search`
builds a request from its keyword arguments, ``compare`` builds one per
(strategy, seed), and the run manifest stores one so ``resume`` rebuilds it.
Adding an option means adding one field here, plus the code that uses it.

Example::

    req = SearchRequest(strategy="asha", budget_epochs=12, num_workers=0)
    plan = req.plan()            # loads the space and task, builds the strategy
    plan.searcher, plan.scheduler, plan.run_name

Checks that need only the values happen when the request is made; checks that
need the space, the task or the strategy happen in :meth:`SearchRequest.plan`,
still before Ray starts. Each raises a :class:`~tune_app.errors.ConfigError`
that says what to change.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tune_app import spaces
from tune_app import strategies as registry
from tune_app.errors import ConfigError
from tune_app.spaces import SearchSpace

if TYPE_CHECKING:
    from tune_app.controller.inner import InnerSpec
    from tune_app.tasks.base import Objective

DEFAULT_SPACE = "digits_mlp"  # a built-in space (tune_app/search_spaces/)
INNER_EVERY = 10  # the inner controller's default K (optimizer steps per decision)


def option(
    default: Any,
    help: str,
    *,
    cli: bool = True,
    type: Any = None,
    stored: bool = True,
    same_search: bool = False,
) -> Any:
    """A request field with its documentation.

    Args:
        default: the default (a dict default is copied per request).
        help: one line for ``--help`` and the docs.
        cli: whether ``run``/``compare`` get a ``--flag`` for it.
        type: the CLI's parser for the value (default: str).
        stored: whether the run manifest keeps it (resume rebuilds the request).
        same_search: whether it identifies the search (``--resume`` only continues
            a run whose identifying options are all equal).
    """
    meta = {
        "help": help,
        "cli": cli,
        "type": type,
        "stored": stored,
        "same_search": same_search,
    }
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=meta)
    return field(default=default, metadata=meta)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class SearchRequest:
    """One search: ``strategy`` on ``space`` within ``budget_epochs`` total epochs."""

    strategy: str = option(
        "random", "a registered strategy (`tune-app strategies`)", cli=False, same_search=True
    )
    space: Any = option(
        DEFAULT_SPACE,
        "search-space YAML file, or a built-in space's name (`tune-app spaces`)",
        same_search=True,
    )
    scheduler: str | None = option(
        None, "scheduler to combine with the searcher (e.g. asha)", same_search=True
    )
    task: Any = option(
        None, "task name or module:attr (default: the space's task)", same_search=True
    )
    budget_epochs: int = option(
        24, "total training epochs across all trials", type=int, same_search=True
    )
    max_trials: int | None = option(None, "cap on the number of trials", type=int, same_search=True)
    time_budget_s: float | None = option(None, "wall-clock cap in seconds", type=float)
    seed: int = option(
        0, "seeds the searcher, the data split and model initialisation", type=int,
        same_search=True,
    )  # fmt: skip
    num_workers: int = option(
        1,
        "0: train inside the Tune trial (no Ray Train worker group, so no ~8 s start-up "
        "per trial; fine for small models); N>=1: N Ray Train workers per trial",
        type=int,
    )
    gpus_per_worker: float | None = option(
        None, "GPUs per worker (fractions pack trials; default: 1 if GPUs exist)", type=float
    )
    cpus_per_worker: float = option(
        1.0,
        "CPUs each Ray Train worker reserves (with --num-workers 0: the trial itself)",
        type=float,
    )
    max_concurrent: int | None = option(None, "cap on trials running at once", type=int)
    max_failures: int = option(1, "worker-group restarts per trial after a failure", type=int)
    address: str | None = option(
        None, "Ray address (default: $RAY_ADDRESS or embedded local)", stored=False
    )
    tracking_uri: str | None = option(
        None,
        "MLflow URI (default: $MLFLOW_TRACKING_URI, else sqlite:///HOME/mlflow.db; HOME is "
        "$TUNE_APP_HOME, ~/tune_app in a Ray job, else the current directory)",
    )
    experiment: str | None = option(None, "MLflow experiment name (default: <task>-<space>)")
    storage_path: str | Path | None = option(
        None,
        "run state directory (default: HOME/tune_runs; relative paths are under HOME)",
        stored=False,
    )
    data_dir: str | Path | None = option(
        None, "data directory of file-backed tasks (default: $TUNE_APP_DATA or ~/.cache/...)"
    )
    strategy_options: Mapping[str, Any] = option(
        {}, "options of the searcher (unknown keys are errors)", cli=False, same_search=True
    )
    scheduler_options: Mapping[str, Any] = option(
        {}, "options of the scheduler (unknown keys are errors)", cli=False, same_search=True
    )
    inner_controller: str | None = option(
        None,
        "adjust the optimizer's lr and/or weight_decay inside every trial with a pretrained "
        "Q-gradient-descent policy: lr, l2 or lr,l2 (default: off)",
        same_search=True,
    )
    inner_every: int = option(
        INNER_EVERY,
        "with --inner-controller: optimizer steps per controller step (K >= 2)",
        type=int,
        same_search=True,
    )
    inner_policy: str | None = option(
        None,
        "with --inner-controller: policy directories, comma-separated, one per control "
        "(default: the shipped tune_app/controller/weights/qgd_<control>)",
        same_search=True,
    )
    parent_run_id: str | None = option(
        None, "nest the search run under this MLflow run (compare)", cli=False, stored=False
    )
    verbose: bool = option(True, "print progress lines", cli=False, stored=False)
    resume: bool | str | Path = option(
        False,
        "True: continue the newest unfinished run of this search; a run directory or "
        "MLflow parent run id: continue that run",
        cli=False,
        stored=False,
    )

    def __post_init__(self) -> None:
        """The checks that need only the values."""
        if not isinstance(self.strategy, str):
            raise ConfigError(f"strategy must be a name, got {self.strategy!r}")
        if not isinstance(self.space, str | Path | SearchSpace):
            raise ConfigError(
                f"space must be a YAML file path or a SearchSpace, got {type(self.space).__name__}"
            )
        if not _is_int(self.seed) or not 0 <= self.seed < 2**32:
            raise ConfigError(f"--seed must be an integer in 0..{2**32 - 1}, got {self.seed!r}")
        if self.experiment is not None and (
            not isinstance(self.experiment, str) or not self.experiment.strip()
        ):
            raise ConfigError("--experiment must be a non-empty name (or leave it out)")
        b = self.budget_epochs
        if not _is_int(b) or b < 1:
            raise ConfigError(f"--budget-epochs must be an integer >= 1, got {b!r}")
        if self.max_trials is not None and (not _is_int(self.max_trials) or self.max_trials < 1):
            raise ConfigError(f"--max-trials must be an integer >= 1, got {self.max_trials!r}")
        t = self.time_budget_s
        if t is not None and not (isinstance(t, int | float) and 0 < t < math.inf):
            raise ConfigError(f"--time-budget-s must be a number > 0, got {t!r}")
        if not _is_int(self.num_workers) or self.num_workers < 0:
            raise ConfigError(f"--num-workers must be an integer >= 0, got {self.num_workers!r}")
        c = self.cpus_per_worker
        if not isinstance(c, int | float) or not 0 < c < math.inf:
            raise ConfigError(f"--cpus-per-worker must be a number > 0, got {c!r}")
        g = self.gpus_per_worker
        if g is not None and (not isinstance(g, int | float) or not 0 <= g < math.inf):
            raise ConfigError(f"--gpus-per-worker must be a number >= 0, got {g!r}")
        m = self.max_concurrent
        if m is not None and (not _is_int(m) or m < 1):
            raise ConfigError(f"--max-concurrent must be an integer >= 1, got {m!r}")
        if not _is_int(self.max_failures) or self.max_failures < 0:
            raise ConfigError(f"--max-failures must be an integer >= 0, got {self.max_failures!r}")
        self._check_inner()
        # Stored as plain dicts: the request is frozen, its option maps are copies.
        object.__setattr__(self, "strategy_options", dict(self.strategy_options or {}))
        object.__setattr__(self, "scheduler_options", dict(self.scheduler_options or {}))

    def _check_inner(self) -> None:
        """The inner controller's options, without loading a policy."""
        k = self.inner_every
        if not _is_int(k) or k < 2:  # a block's first step measures the anchor
            raise ConfigError(f"--inner-every must be an integer >= 2, got {k!r}")
        if self.inner_controller is not None:
            from tune_app.controller.inner import parse_controls  # torch: only when used

            parse_controls(self.inner_controller)
        elif self.inner_policy is not None or k != INNER_EVERY:
            raise ConfigError("--inner-every and --inner-policy need --inner-controller")

    @classmethod
    def make(cls, **kwargs: Any) -> SearchRequest:
        """A request from keyword arguments; an unknown name is a :class:`ConfigError`."""
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - valid)
        if unknown:
            raise ConfigError(
                f"unknown search option(s) {unknown}; valid: {', '.join(sorted(valid))}"
            )
        return cls(**kwargs)

    def replace(self, **changes: Any) -> SearchRequest:
        """A copy with ``changes`` (validated again)."""
        return dataclasses.replace(self, **changes)

    # -- the manifest ---------------------------------------------------------------

    def stored(self, space_source: str, task_ref: str | None) -> dict[str, Any]:
        """The fields the run manifest keeps, JSON-ready (space and task as references)."""
        out = {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.metadata["stored"]
        }
        out.update(space=space_source, task=task_ref)
        return out

    @classmethod
    def from_stored(cls, data: Mapping[str, Any], **changes: Any) -> SearchRequest:
        """Rebuild a request from :meth:`stored` output, with ``changes`` applied."""
        known = {f.name for f in dataclasses.fields(cls) if f.metadata["stored"]}
        return cls(**{k: v for k, v in data.items() if k in known}, **changes)

    # -- everything that needs the space, the task or the strategy -------------------

    def plan(self) -> SearchPlan:
        """Load the space and the task, resolve and build the strategy, and check the
        budget against them: everything :mod:`tune_app.run.driver` needs, before Ray."""
        from tune_app import tasks  # torch: imported only when a search is planned

        sp = self.space if isinstance(self.space, SearchSpace) else spaces.load(self.space)
        objective = tasks.resolve(self.task if self.task is not None else sp.task)
        reported = (*objective.metrics, "train_loss")
        if sp.metric not in reported:
            raise ConfigError(
                f"{sp.source}: metric {sp.metric!r} is never reported by task "
                f"{objective.name!r}; it reports {', '.join(reported)}"
            )
        strat = registry.resolve(self.strategy, self.scheduler)
        if strat.scheduler is None and self.scheduler_options:
            raise ConfigError("scheduler options given but no scheduler; pass --scheduler too")
        s_opts = {
            **registry.budget_defaults(strat.searcher, sp, self.budget_epochs),
            **self.strategy_options,
        }
        k_opts = dict(self.scheduler_options)
        self._check_budget(strat, sp, k_opts)
        searcher = registry.build_searcher(
            strat.searcher, sp, sp.metric, sp.mode, self.seed, s_opts
        )
        scheduler = (
            registry.build_scheduler(strat.scheduler, sp, sp.metric, sp.mode, self.seed, k_opts)
            if strat.scheduler
            else None
        )
        fixed = tasks.with_data_dir(sp.fixed, self.data_dir, objective.uses_data_dir)
        inner = self._inner(sp, objective)
        return SearchPlan(
            request=self,
            space=sp,
            objective=objective,
            strategy=strat,
            strategy_options=s_opts,
            scheduler_options=k_opts,
            searcher=searcher,
            scheduler=scheduler,
            fixed=fixed,
            inner=inner,
        )

    def _inner(self, sp: SearchSpace, objective: Objective) -> InnerSpec | None:
        """The inner controller's spec, its policies loaded (None: off)."""
        if self.inner_controller is None:
            return None
        from tune_app.controller import inner
        from tune_app.tasks.base import Task

        if not isinstance(objective, Task):
            raise ConfigError(
                f"--inner-controller needs a task that trains a model; {objective.name!r} "
                f"is a lookup objective"
            )
        spec = inner.resolve(self.inner_controller, self.inner_every, self.inner_policy)
        if "l2" in spec.controls and "weight_decay" not in (*sp.names, *sp.fixed):
            raise ConfigError(
                f"--inner-controller l2 scales weight_decay, which {sp.source} neither "
                f"searches nor fixes; add weight_decay to its params or fixed"
            )
        # The controller keeps a searched value within the space's range for it.
        bounds = {}
        for c in spec.controls:
            p = next((q for q in sp.params if q.name == inner.KEYS[c]), None)
            if p is not None and p.low is not None and p.high is not None:
                bounds[c] = (float(p.low), float(p.high))
        return dataclasses.replace(spec, bounds=bounds)

    def _check_budget(
        self, strat: registry.Strategy, sp: SearchSpace, k_opts: dict[str, Any]
    ) -> None:
        per_trial = registry.min_trial_epochs(strat, sp, k_opts)
        budget = self.budget_epochs
        if budget < per_trial:
            raise ConfigError(
                f"budget of {budget} epoch(s) is smaller than one trial "
                f"({per_trial} epochs under {strat.label}); raise --budget-epochs to at "
                f"least {per_trial} or lower max_epochs in {sp.source}"
            )
        if strat.searcher == "grid" and sp.grid_size * per_trial > budget:
            raise ConfigError(
                f"the grid of {sp.source} has {sp.grid_size} configs x {per_trial} "
                f"epoch(s) = {sp.grid_size * per_trial} epochs, more than the budget of "
                f"{budget}; raise --budget-epochs to {sp.grid_size * per_trial} or "
                f"use fewer value boxes"
            )


@dataclass
class SearchPlan:
    """A validated request with what it resolved to: the space, the objective, the
    strategy with its options, and the searcher and scheduler, built once."""

    request: SearchRequest
    space: SearchSpace
    objective: Objective
    strategy: registry.Strategy
    strategy_options: dict[str, Any]
    scheduler_options: dict[str, Any]
    searcher: Any
    scheduler: Any
    fixed: dict[str, Any]
    inner: InnerSpec | None = None

    @property
    def metric(self) -> str:
        """The metric the search optimises (the space's)."""
        return self.space.metric

    @property
    def mode(self) -> str:
        """``min`` or ``max``."""
        return self.space.mode

    @property
    def experiment(self) -> str:
        """The MLflow experiment: the request's, else ``<task>-<space name>``."""
        return self.request.experiment or f"{self.objective.name}-{self.space.name}"

    @property
    def run_name(self) -> str:
        """The search run's name: ``<strategy label>-<seed>-<space name>``."""
        return f"{self.strategy.label}-{self.request.seed}-{self.space.name}"

    @property
    def space_source(self) -> str:
        """The space file as an absolute path when it is one (resume reloads it)."""
        src = self.space.source
        return str(Path(src).resolve()) if Path(src).exists() else src

    @property
    def task_ref(self) -> str | None:
        """A reference that rebuilds the task on resume (None: the space's task)."""
        task = self.request.task
        if task is None or isinstance(task, str):
            return task
        cls = task if isinstance(task, type) else type(task)
        return f"{cls.__module__}:{cls.__qualname__}"


def cli_fields() -> list[dataclasses.Field[Any]]:
    """The request fields that ``run`` and ``compare`` offer as ``--flags``."""
    return [f for f in dataclasses.fields(SearchRequest) if f.metadata["cli"]]


def same_search_fields() -> list[str]:
    """The names of the options that identify a search (see :func:`option`)."""
    return [f.name for f in dataclasses.fields(SearchRequest) if f.metadata["same_search"]]
