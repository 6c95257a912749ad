"""The tuning MDP shared by the training environment and the Tune searcher.

A *walker* sits on one configuration of the value-box grid. Each action moves it:
one parameter one box up or down, one parameter a coarse step (a quarter of its
boxes) up or down, back to the best configuration seen (the incumbent), a jump
to a random unvisited configuration, or a *local* jump to a random unvisited
configuration next to the incumbent (every parameter -1/0/+1 box). Moving onto a new
configuration evaluates it (one trial, one unit of budget). Moves onto a
configuration already evaluated (or being evaluated) and moves off the grid are
*invalid*: the searcher masks them, the environment turns them into a penalised
no-op, so both see the same dynamics.

The state is a fixed-size vector in [-1, 1], padded to :data:`MAX_PARAMS`
parameter *slots* so one policy serves every space up to that size. A larger
space is seen through a *window* (:func:`window`): at each step the slots show
:data:`MAX_PARAMS` of its parameters (the ones the walker just moved, the rest
drawn at random), and the slot actions move those; the incumbent, jumps and
ranks always cover every parameter. A space of up to :data:`MAX_PARAMS`
parameters is its own window, so its walk is unchanged. Its last
:data:`N_ACTIONS` entries are the valid-action mask (1 valid, -1 invalid): the
network sees it, and the RLlib module (:mod:`tune_app.controller.module`) sets
the Q-values of invalid actions to -inf, so training explores, acts and
bootstraps over valid actions only, exactly as the searcher acts. Objective values
enter the state only as **ranks** among the values observed so far, which makes
it invariant to the objective's scale and to any monotone transform (accuracy,
loss, log loss all give the same state), the way the seed's "compared with the
best M values, encoded 1/0/-1" feature is.
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MAX_PARAMS = 8
M_BEST = 3
PER_PARAM = 8
N_GLOBAL = 11
FEATURE_DIM = MAX_PARAMS * PER_PARAM + N_GLOBAL
N_MOVES = 4 * MAX_PARAMS  # per parameter: one box down/up, a coarse step down/up
RETURN_TO_BEST = N_MOVES
JUMP = N_MOVES + 1
LOCAL_JUMP = N_MOVES + 2
N_ACTIONS = N_MOVES + 3
OBS_DIM = FEATURE_DIM + N_ACTIONS  # features, then the valid-action mask
LOCAL_TRIES = 64
STALL_SCALE = 10.0  # evaluations without improvement that saturate the feature

Point = tuple[int, ...]
Slots = Sequence[int]  # slot k shows parameter slots[k]


def window(walker: Walker, n_params: int, rng: random.Random) -> tuple[int, ...]:
    """The parameters the slots show for ``walker``'s next step, in parameter order.

    Every parameter when there are at most :data:`MAX_PARAMS` (no random draw);
    otherwise the ones its last moves changed plus a random draw of the others.
    """
    if n_params <= MAX_PARAMS:
        return tuple(range(n_params))
    keep = list(dict.fromkeys(i for i, _ in reversed(walker.moves)))[:MAX_PARAMS]
    rest = [i for i in range(n_params) if i not in keep]
    return tuple(sorted(keep + rng.sample(rest, MAX_PARAMS - len(keep))))


def _slots(n_params: int, slots: Slots | None) -> Slots:
    if slots is None:
        if n_params > MAX_PARAMS:
            raise ValueError(f"{n_params} parameters need a window of slots (mdp.window)")
        return range(n_params)
    return slots


def action_name(action: int, names: Sequence[str] | None = None, slots: Slots | None = None) -> str:
    """Human-readable action: ``lr+1``/``lr-1`` (one box), ``lr++``/``lr--`` (a
    coarse step), ``best``, ``jump`` or ``local``; ``slots`` maps a slot to a parameter."""
    special = {RETURN_TO_BEST: "best", JUMP: "jump", LOCAL_JUMP: "local"}
    if action in special:
        return special[action]
    coarse, rest = divmod(action, 2 * MAX_PARAMS)
    k, up = divmod(rest, 2)
    i = slots[k] if slots is not None and k < len(slots) else k
    label = names[i] if names is not None and i < len(names) else f"p{i}"
    return label + (("++" if up else "--") if coarse else ("+1" if up else "-1"))


def coarse_step(n: int) -> int:
    """Boxes per coarse step of a parameter with ``n`` boxes (a quarter, at least 2)."""
    return max(2, round(n / 4))


@dataclass
class History:
    """Every configuration evaluated or in flight, shared by all walkers."""

    n_boxes: tuple[int, ...]
    values: dict[Point, float] = field(default_factory=dict)
    pending: set[Point] = field(default_factory=set)
    sorted_values: list[float] = field(default_factory=list)
    best_point: Point | None = None
    best_value: float = math.inf

    @property
    def grid_size(self) -> int:
        """Number of configurations in the grid."""
        return math.prod(self.n_boxes)

    def visited(self, point: Point) -> bool:
        """Whether ``point`` was evaluated or is being evaluated."""
        return point in self.values or point in self.pending

    def rank(self, value: float) -> float:
        """Fraction of observed values strictly better than ``value`` (0 = best)."""
        n = len(self.sorted_values)
        if n <= 1:
            return 0.0
        return bisect.bisect_left(self.sorted_values, value) / (n - 1)

    def record(self, point: Point, value: float) -> bool:
        """Store an observed loss (inf for failed); return whether it is a new best."""
        self.pending.discard(point)
        if point in self.values:  # a re-evaluation (grid exhausted): keep the first
            return False
        self.values[point] = value
        bisect.insort(self.sorted_values, value)
        if self.best_point is None or value < self.best_value:
            self.best_point, self.best_value = point, value
            return True
        return False

    def random_unvisited(self, rng: random.Random) -> Point | None:
        """A uniformly random configuration not visited yet, or None if all were."""
        n_free = self.grid_size - len(self.values) - len(self.pending)
        if n_free <= 0:
            return None
        if n_free < self.grid_size / 4:  # nearly full: enumerate what is left
            free = [p for p in _all_points(self.n_boxes) if not self.visited(p)]
            return free[rng.randrange(len(free))] if free else None
        while True:
            p = tuple(rng.randrange(n) for n in self.n_boxes)
            if not self.visited(p):
                return p

    def to_json(self) -> dict[str, Any]:
        """JSON-safe state (inf stored as None)."""
        return {
            "values": [[list(p), None if math.isinf(v) else v] for p, v in self.values.items()],
            "pending": [list(p) for p in sorted(self.pending)],
        }

    @classmethod
    def from_json(cls, n_boxes: tuple[int, ...], state: dict[str, Any]) -> History:
        """Inverse of :meth:`to_json`."""
        hist = cls(n_boxes)
        for p, v in state["values"]:
            hist.record(tuple(p), math.inf if v is None else float(v))
        hist.pending = {tuple(p) for p in state["pending"]}
        return hist


def _all_points(n_boxes: tuple[int, ...]) -> list[Point]:
    import itertools

    return list(itertools.product(*(range(n) for n in n_boxes)))


@dataclass
class Walker:
    """One walk through the boxes: where it is and what its recent moves did."""

    pos: Point
    moves: list[tuple[int, int]] = field(default_factory=list)  # (param, +1/-1), newest last
    evals: int = 0
    since_improve: int = 0
    recent: list[int] = field(default_factory=list)  # 1 where an eval was a new best
    latest: float | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-safe state."""
        latest = None if self.latest is None or math.isinf(self.latest) else self.latest
        return {
            "pos": list(self.pos),
            "moves": [list(m) for m in self.moves],
            "evals": self.evals,
            "since_improve": self.since_improve,
            "recent": list(self.recent),
            "latest": latest,
            "latest_inf": self.latest is not None and math.isinf(self.latest),
        }

    @classmethod
    def from_json(cls, state: dict[str, Any]) -> Walker:
        """Inverse of :meth:`to_json`."""
        latest = math.inf if state["latest_inf"] else state["latest"]
        return cls(
            pos=tuple(state["pos"]),
            moves=[(int(a), int(b)) for a, b in state["moves"]],
            evals=int(state["evals"]),
            since_improve=int(state["since_improve"]),
            recent=[int(x) for x in state["recent"]],
            latest=latest,
        )

    def observed(self, new_best: bool, value: float) -> None:
        """Update the walker's counters after its configuration was evaluated."""
        self.evals += 1
        self.latest = value
        self.since_improve = 0 if new_best else self.since_improve + 1
        self.recent = ([*self.recent, int(new_best)])[-5:]


def target(
    pos: Point, action: int, n_boxes: tuple[int, ...], slots: Slots | None = None
) -> Point | None:
    """Where a move action leads, or None when it leaves the grid or names no parameter.

    A coarse step stops at the edge of the range; it is invalid only at the edge.
    """
    slots = _slots(len(n_boxes), slots)
    coarse, rest = divmod(action, 2 * MAX_PARAMS)
    k, up = divmod(rest, 2)
    if k >= len(slots):
        return None
    i = slots[k]
    step = coarse_step(n_boxes[i]) if coarse else 1
    j = pos[i] + (step if up else -step)
    if coarse:
        j = min(max(j, 0), n_boxes[i] - 1)
    if j == pos[i] or not 0 <= j < n_boxes[i]:
        return None
    return (*pos[:i], j, *pos[i + 1 :])


def move_of(action: int, slots: Slots | None = None) -> tuple[int, int]:
    """(parameter, direction +1/-1) of a move action."""
    k, up = divmod(action % (2 * MAX_PARAMS), 2)
    return (slots[k] if slots is not None else k), 1 if up else -1


def local_point(hist: History, rng: random.Random) -> Point | None:
    """A random unvisited configuration near the incumbent: each parameter moves by
    -1, 0 or +1 box (at least one moves); None if none was found."""
    best = hist.best_point
    if best is None:
        return None
    for _ in range(LOCAL_TRIES):
        p = tuple(
            min(max(b + rng.choice((-1, 0, 1)), 0), n - 1)
            for b, n in zip(best, hist.n_boxes, strict=True)
        )
        if p != best and not hist.visited(p):
            return p
    return None


def apply(
    walker: Walker, hist: History, action: int, rng: random.Random, slots: Slots | None = None
) -> Point | None:
    """Carry out a *valid* action on ``walker``: the configuration to evaluate next,
    or None for a return to the incumbent (nothing to evaluate)."""
    if action == RETURN_TO_BEST:
        assert hist.best_point is not None
        walker.pos = hist.best_point
        walker.moves.clear()
        return None
    if action in (JUMP, LOCAL_JUMP):
        nxt = local_point(hist, rng) if action == LOCAL_JUMP else None
        nxt = nxt or hist.random_unvisited(rng)
        walker.moves.clear()
    else:
        nxt = target(walker.pos, action, hist.n_boxes, slots)
        walker.moves = [*walker.moves, move_of(action, slots)][-2:]
    assert nxt is not None
    walker.pos = nxt
    return nxt


def valid_actions(walker: Walker, hist: History, slots: Slots | None = None) -> np.ndarray:
    """Boolean mask over actions: moves onto unvisited grid points, best, jump."""
    slots = _slots(len(hist.n_boxes), slots)
    mask = np.zeros(N_ACTIONS, dtype=bool)
    for a in range(N_MOVES):
        if a % (2 * MAX_PARAMS) >= 2 * len(slots):
            continue
        t = target(walker.pos, a, hist.n_boxes, slots)
        mask[a] = t is not None and not hist.visited(t)
    mask[RETURN_TO_BEST] = hist.best_point is not None and hist.best_point != walker.pos
    mask[JUMP] = mask[LOCAL_JUMP] = len(hist.values) + len(hist.pending) < hist.grid_size
    return mask


def _scaled(x: float) -> float:
    """Map [0, 1] to [-1, 1], clipped."""
    return float(min(1.0, max(-1.0, 2.0 * x - 1.0)))


def features(walker: Walker, hist: History, horizon: int, slots: Slots | None = None) -> np.ndarray:
    """The state vector of ``walker`` (shape ``(OBS_DIM,)``, values in [-1, 1])."""
    obs = np.zeros(OBS_DIM, dtype=np.float32)
    nb = hist.n_boxes
    slots = _slots(len(nb), slots)
    cur = hist.values.get(walker.pos)
    cur_rank = hist.rank(cur) if cur is not None else 0.5
    last_param, last_dir = walker.moves[-1] if walker.moves else (-1, 0)
    best = hist.best_point or walker.pos
    for k, i in enumerate(slots):
        n = nb[i]
        o = k * PER_PARAM
        span = max(n - 1, 1)
        obs[o] = 1.0
        obs[o + 1] = _scaled(walker.pos[i] / span) if n > 1 else 0.0
        obs[o + 2] = (best[i] - walker.pos[i]) / span
        obs[o + 3] = last_dir if last_param == i else 0.0
        for k, step in ((4, 1), (6, -1)):
            j = walker.pos[i] + step
            if not 0 <= j < n:
                obs[o + k], obs[o + k + 1] = 1.0, 1.0  # off the grid: as bad as it gets
                continue
            nbr = (*walker.pos[:i], j, *walker.pos[i + 1 :])
            val = hist.values.get(nbr)
            if val is None or cur is None:
                obs[o + k], obs[o + k + 1] = 0.0, -1.0
            else:
                obs[o + k], obs[o + k + 1] = hist.rank(val) - cur_rank, 1.0
    for k in range(len(slots), MAX_PARAMS):
        obs[k * PER_PARAM] = -1.0  # padding slot
    g = MAX_PARAMS * PER_PARAM
    top = hist.sorted_values[:M_BEST]
    latest = walker.latest
    for k in range(M_BEST):
        if latest is None or k >= len(top):
            continue
        ref = top[k]
        obs[g + k] = 0.0 if latest == ref else (1.0 if latest < ref else -1.0)
    obs[g + 3] = _scaled(sum(walker.recent) / 5.0)
    obs[g + 4] = _scaled(walker.since_improve / STALL_SCALE)
    obs[g + 5] = _scaled(len(hist.values) / max(horizon, 1))
    if len(walker.moves) >= 2:
        (p1, d1), (p2, d2) = walker.moves[-2], walker.moves[-1]
        obs[g + 6] = float(d1 * d2) if p1 == p2 else 0.0
    obs[g + 7] = 1.0 if best == walker.pos else -1.0
    obs[g + 8] = _scaled(cur_rank)
    obs[g + 9] = _scaled(len(nb) / MAX_PARAMS)
    obs[g + 10] = _scaled((len(hist.values) + len(hist.pending)) / hist.grid_size)
    obs[FEATURE_DIM:] = np.where(valid_actions(walker, hist, slots), 1.0, -1.0)
    np.clip(obs, -1.0, 1.0, out=obs)
    return obs


def valid_in(obs: np.ndarray) -> np.ndarray:
    """The valid-action mask carried by observation(s) ``obs``."""
    return np.asarray(obs)[..., FEATURE_DIM:] > 0
