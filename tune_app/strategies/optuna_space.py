"""The Optuna side of a :class:`~tune_app.spaces.SearchSpace`, shared by every
strategy that drives an Optuna sampler (``random``, ``optuna``, ``gp``, ``cmaes``).

Continuous parameters become Float/Int distributions over their ranges. Finite
parameters (``choice``, and numeric ones marked ``discrete``) become
``CategoricalDistribution`` over their boxes, Optuna's documented way to search a
fixed list of values (``suggest_categorical``). A sampler without categorical
support (CMA-ES) gets the *ordinal* encoding instead: each discrete numeric
parameter is searched as its box index (``IntDistribution(0, n - 1)``) and the
searcher hands Tune the box value.
"""

from __future__ import annotations

from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from tune_app.spaces import Param, SearchSpace


def distribution(p: Param, ordinal: bool = False) -> BaseDistribution:
    """The Optuna distribution of one parameter (``ordinal``: discrete numbers by index)."""
    if p.type == "choice" or (p.discrete and not ordinal):
        return CategoricalDistribution(list(p.boxes))
    if p.discrete:
        return IntDistribution(0, len(p.boxes) - 1)
    assert p.low is not None and p.high is not None
    if p.type == "int":
        return IntDistribution(int(p.low), int(p.high), log=p.log)
    return FloatDistribution(float(p.low), float(p.high), log=p.is_log)


class SpaceSearch(OptunaSearch):
    """Ray's ``OptunaSearch`` over a space's distributions; decodes ordinal box indices."""

    def __init__(
        self,
        space: SearchSpace,
        metric: str,
        mode: str,
        sampler: optuna.samplers.BaseSampler,
        ordinal: bool = False,
    ) -> None:
        self._ordinal = {p.name: p.boxes for p in space.params if p.discrete and ordinal}
        super().__init__(
            space={p.name: distribution(p, ordinal) for p in space.params},
            metric=metric,
            mode=mode,
            sampler=sampler,
        )

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        """Optuna's proposal, with box indices turned into box values."""
        config = super().suggest(trial_id)
        if config is None or config == Searcher.FINISHED:
            return config
        for name, boxes in self._ordinal.items():
            config[name] = boxes[int(config[name])]
        return dict(config)


def searcher(
    space: SearchSpace,
    metric: str,
    mode: str,
    sampler: optuna.samplers.BaseSampler,
    ordinal: bool = False,
) -> Searcher:
    """A Tune searcher driving ``sampler`` over ``space`` (quiet Optuna logging)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return SpaceSearch(space, metric, mode, sampler, ordinal=ordinal)
