"""``evolution``: regularized evolution (Real et al., "Regularized Evolution for
Image Classifier Architecture Search", AAAI 2019) as a Tune searcher.

A *population* of the most recently born ``population`` finished trials is kept.
The first ``population`` proposals are random. After that, each proposal is a
*tournament*: ``tournament`` members are drawn at random (with replacement), and
the best of them is the parent; the child is the parent with **one parameter
moved by one value box** (see :func:`mutate`). When a trial finishes it joins the
population and the *oldest* member (earliest proposed, not the worst) dies:
ageing, the "regularization" that keeps lucky early members from ruling forever.

Mutation follows the space's value boxes: a finite parameter (``choice`` or
``discrete``) moves to a neighbouring box (a ``choice`` to any other value); a
continuous one moves by one box width (the spacing of its boxes, on a log scale
for log parameters) up or down, with a uniform jitter of half a width, reflected
into its range, so values stay continuous and proposals do not collide. A child
already evaluated or running is mutated again (up to :data:`MAX_TRIES` times)
before a random unvisited configuration is proposed instead.

Failed, NaN and missing results count as the worst fitness; a trial stopped early
by a scheduler (``evolution`` + ``asha``) counts with its last reported value.
Seeded and deterministic for a seed; :meth:`RegularizedEvolution.save` writes
JSON (no pickle).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Mapping
from typing import Any

from ray.tune.search import Searcher

from tune_app.spaces import Param, SearchSpace
from tune_app.strategies.base import SpaceSearcher, StrategyPlugin
from tune_app.strategies.options import EvolutionOptions as Options
from tune_app.strategies.options import parse_options

MAX_TRIES = 25  # mutations tried before falling back to a random unvisited config


def _key(config: Mapping[str, Any]) -> str:
    """A configuration's identity (floats to 12 significant digits)."""
    return json.dumps(
        {k: float(f"{v:.12g}") if isinstance(v, float) else v for k, v in config.items()},
        sort_keys=True,
    )


def sample(p: Param, rng: random.Random) -> Any:
    """A uniform draw of one parameter: a box if finite, else its range (log if log)."""
    if p.is_finite:
        return p.boxes[rng.randrange(len(p.boxes))]
    assert p.low is not None and p.high is not None
    if p.type == "int":
        if p.is_log:
            x = math.exp(rng.uniform(math.log(p.low), math.log(p.high + 1)))
            return int(min(max(math.floor(x), p.low), p.high))
        return rng.randint(int(p.low), int(p.high))
    if p.is_log:
        return math.exp(rng.uniform(math.log(p.low), math.log(p.high)))
    return rng.uniform(float(p.low), float(p.high))


def _reflect(x: float, lo: float, hi: float) -> float:
    """``x`` folded back into ``[lo, hi]`` at its ends (a mirror at each bound)."""
    span = hi - lo
    y = (x - lo) % (2 * span)
    return lo + (y if y <= span else 2 * span - y)


def mutate(p: Param, value: Any, rng: random.Random) -> Any:
    """``value`` of ``p`` moved by one value box (see the module docstring)."""
    if p.type == "choice":
        others = [v for v in p.boxes if v != value]
        return others[rng.randrange(len(others))] if others else value
    if p.discrete:
        i = p.nearest_box(value)
        steps = [j for j in (i - 1, i + 1) if 0 <= j < len(p.boxes)]
        return p.boxes[steps[rng.randrange(len(steps))]] if steps else value
    assert p.low is not None and p.high is not None
    lo, hi = (math.log(p.low), math.log(p.high)) if p.is_log else (float(p.low), float(p.high))
    x = math.log(value) if p.is_log else float(value)
    width = (hi - lo) / max(len(p.boxes) - 1, 1)
    x += rng.choice((-1.0, 1.0)) * width + rng.uniform(-0.5, 0.5) * width
    x = _reflect(x, lo, hi)
    out = math.exp(x) if p.is_log else x
    if p.type == "int":
        out = int(min(max(round(out), p.low), p.high))
        if out == value:  # a narrow range: step to the next integer instead
            out = int(value) + (1 if value < p.high else -1)
    else:
        out = min(max(out, float(p.low)), float(p.high))
    return out


class RegularizedEvolution(SpaceSearcher):
    """Tournament selection, one-box mutation, age-based removal (see the module docstring)."""

    def __init__(
        self,
        space: SearchSpace,
        metric: str | None,
        mode: str | None,
        seed: int = 0,
        population: int = 8,
        tournament: int = 3,
    ) -> None:
        super().__init__(space, metric, mode)
        self.size, self.tournament = population, tournament
        self.rng = random.Random(seed)
        self.born = 0  # proposals so far: a member's birth number is its age
        self.members: list[dict[str, Any]] = []  # finished: config, value, born, trial
        self.running: dict[str, dict[str, Any]] = {}  # trial_id -> config, born, origin
        self.origins: dict[str, dict[str, str]] = {}  # trial_id -> how it was made (tags)
        self.seen: set[str] = set()  # every configuration proposed

    # -- Tune interface ---------------------------------------------------------------
    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        """A random config while the population fills, then a tournament's mutated winner."""
        origin: dict[str, str] = {"evolution.origin": "random"}
        config = None
        if self.born >= self.size and self.members:
            parent = self._tournament()
            if parent is not None:
                config, name = self._child(parent["config"])
                if config is not None:
                    origin = {
                        "evolution.origin": "mutation",
                        "evolution.parent": str(parent["trial"]),
                        "evolution.mutated": name,
                    }
        if config is None:
            config = self._random()
        self.seen.add(_key(config))
        self.running[trial_id] = {"config": config, "born": self.born}
        self.origins[trial_id] = origin
        self.born += 1
        return dict(config)

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        """The trial joins the population; the oldest member beyond ``population`` dies."""
        rec = self.running.pop(trial_id, None)
        value = self.final_value(trial_id, result, error)
        if rec is None:
            return
        self.members.append(
            {"config": rec["config"], "value": value, "born": rec["born"], "trial": trial_id}
        )
        while len(self.members) > self.size:
            oldest = min(range(len(self.members)), key=lambda i: self.members[i]["born"])
            self.members.pop(oldest)

    # -- evolution --------------------------------------------------------------------
    def _fitness(self, member: Mapping[str, Any]) -> float:
        value = member["value"]
        if value is None:
            return -math.inf
        return float(value) if self._mode == "max" else -float(value)

    def _tournament(self) -> dict[str, Any] | None:
        """The best of ``tournament`` members drawn with replacement (None: all failed)."""
        drawn = [
            self.members[self.rng.randrange(len(self.members))] for _ in range(self.tournament)
        ]
        best = max(drawn, key=self._fitness)
        return None if best["value"] is None else best

    def _child(self, parent: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str]:
        """``parent`` with one parameter moved by one box; None if every try was seen."""
        movable = [p for p in self.space.params if len(p.boxes) > 1 or not p.is_finite]
        if not movable:
            return None, ""
        for _ in range(MAX_TRIES):
            p = movable[self.rng.randrange(len(movable))]
            child = dict(parent)
            child[p.name] = mutate(p, parent[p.name], self.rng)
            if _key(child) not in self.seen:
                return child, p.name
        return None, ""

    def _random(self) -> dict[str, Any]:
        """A random configuration not proposed before (when the space has one left)."""
        config: dict[str, Any] = {}
        for _ in range(MAX_TRIES):
            config = {p.name: sample(p, self.rng) for p in self.space.params}
            if _key(config) not in self.seen:
                return config
        if self.space.is_finite and len(self.seen) < self.space.grid_size:
            left = [c for c in self.space.grid() if _key(c) not in self.seen]
            return left[self.rng.randrange(len(left))]
        return config

    # -- visibility -------------------------------------------------------------------
    def trial_tags(self, trial_id: str) -> dict[str, str]:
        """MLflow tags of a trial's child run: random or mutated, from which parent."""
        return dict(self.origins.get(trial_id, {}))

    # -- persistence ------------------------------------------------------------------
    def save(self, checkpoint_path: str) -> None:
        """Write the full search state as JSON (no pickle)."""
        state = {
            "born": self.born,
            "members": self.members,
            "running": self.running,
            "origins": self.origins,
            "seen": sorted(self.seen),
            **self.common_state(self.rng),
        }
        with open(checkpoint_path, "w") as fh:
            json.dump(state, fh)

    def restore(self, checkpoint_path: str) -> None:
        """Read what :meth:`save` wrote."""
        with open(checkpoint_path) as fh:
            state = json.load(fh)
        self.born = int(state["born"])
        self.members = list(state["members"])
        self.running = dict(state["running"])
        self.origins = dict(state["origins"])
        self.seen = set(state["seen"])
        self.set_common_state(state, self.rng)


def build(
    space: SearchSpace, metric: str, mode: str, seed: int, options: Mapping[str, Any] | None
) -> Searcher:
    """A :class:`RegularizedEvolution` over ``space``."""
    opts = parse_options(Options, "evolution", options)
    return RegularizedEvolution(
        space, metric, mode, seed=seed, population=opts.population, tournament=opts.tournament
    )


PLUGIN = StrategyPlugin(build=build, options=Options)
