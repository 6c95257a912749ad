"""``grid``: every combination of the space's value boxes, in a fixed order."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ray.tune.search import Searcher

from tune_app.spaces import SearchSpace
from tune_app.strategies.base import SpaceSearcher, StrategyPlugin
from tune_app.strategies.options import GridOptions as Options
from tune_app.strategies.options import parse_options


class BoxGridSearcher(SpaceSearcher):
    """Walks the full grid of value boxes once, then reports FINISHED."""

    def __init__(
        self, space: SearchSpace, metric: str, mode: str, seed: int = 0, shuffle: bool = False
    ) -> None:
        super().__init__(space, metric, mode)
        self._configs = list(space.grid())
        if shuffle:
            import random

            random.Random(seed).shuffle(self._configs)
        self._next = 0

    def suggest(self, trial_id: str) -> Any:
        """The next grid point, or FINISHED after the last one."""
        if self._next >= len(self._configs):
            return Searcher.FINISHED
        config = dict(self._configs[self._next])
        self._next += 1
        return config

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        """Grid search does not adapt to results."""

    def save(self, checkpoint_path: str) -> None:
        """Write the grid and position as JSON (no pickle)."""
        with open(checkpoint_path, "w") as fh:
            json.dump({"configs": self._configs, "next": self._next}, fh)

    def restore(self, checkpoint_path: str) -> None:
        """Read what :meth:`save` wrote."""
        with open(checkpoint_path) as fh:
            state = json.load(fh)
        self._configs, self._next = state["configs"], int(state["next"])


def build(
    space: SearchSpace, metric: str, mode: str, seed: int, options: Mapping[str, Any] | None
) -> Searcher:
    """A :class:`BoxGridSearcher` over ``space``."""
    opts = parse_options(Options, "grid", options)
    return BoxGridSearcher(space, metric, mode, seed=seed, shuffle=opts.shuffle)


PLUGIN = StrategyPlugin(build=build, options=Options)
