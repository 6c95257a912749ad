"""``dqn``: the pretrained RL controller walks the value boxes (a Tune Searcher).

Each *walker* sits on a grid point of the space's value boxes. When Tune asks
for a trial, an idle walker computes its state (:func:`tune_app.controller.mdp.features`),
asks the pretrained Q-network (:mod:`tune_app.controller.policy`) for Q-values,
and takes the best valid action (epsilon-greedy with a small epsilon): move one
parameter one box up or down, go back to the best configuration seen, or jump to
a random unvisited one. Moves onto configurations already evaluated or in flight
are masked, so concurrent trials never duplicate; one walker per running trial.
With ``design`` > 1 the first ``design`` configurations are a space-filling
random design (each the farthest of a few random candidates from those already
taken); every walker then starts from the best of them.
A space with more parameters than the network has slots is walked through a
window of them that changes every step (:func:`tune_app.controller.mdp.window`).
With ``finetune`` > 0 the network is fine-tuned during the search on its own
transitions (:mod:`tune_app.controller.online`).
Failed, NaN and missing results count as the worst objective; trials stopped
early by a scheduler (``dqn`` + ``asha``) count with their last reported value.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from ray.tune.search import Searcher

from tune_app.controller import mdp
from tune_app.controller.env import start_point
from tune_app.controller.online import OnlineQ, Transition
from tune_app.controller.policy import QPolicy
from tune_app.spaces import SearchSpace
from tune_app.strategies.base import SpaceSearcher, StrategyPlugin
from tune_app.strategies.options import DQNOptions as Options
from tune_app.strategies.options import parse_options

MAX_INNER_STEPS = 20  # non-evaluating actions (return to best) per suggestion
DESIGN_CANDIDATES = 32  # random candidates per design point (the farthest is taken)
WALK_PLOT = "walk.png"


class DQNSearcher(SpaceSearcher):
    """Suggests configurations by walking the value boxes with a pretrained Q-network."""

    def __init__(
        self,
        space: SearchSpace,
        metric: str | None,
        mode: str | None,
        seed: int = 0,
        options: Options | None = None,
    ) -> None:
        super().__init__(space, metric, mode)
        self.opts = options or Options()
        self.policy = QPolicy.load(self.opts.checkpoint)
        self.n_boxes = tuple(len(p.boxes) for p in space.params)
        self.rng = random.Random(seed)
        self.hist = mdp.History(self.n_boxes)
        self.walkers: list[mdp.Walker] = []
        self.idle: list[int] = []  # walkers whose last trial finished
        self.designed: set[int] = set()  # walkers whose last config was a design point
        self.trials: dict[str, dict[str, Any]] = {}  # trial_id -> point, walker, info
        # Online fine-tuning (option ``finetune``): the network's trainable copy, and
        # per walker the transition that waits for the walker's next state.
        self.online = OnlineQ(self.policy, self.opts.finetune, seed) if self.opts.finetune else None
        self.waiting: dict[int, int] = {}

    # -- Tune interface ---------------------------------------------------------------
    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        """The next configuration: one step of an idle walker (or a new walker's start)."""
        n_seen = len(self.hist.values) + len(self.hist.pending)
        if n_seen < self.opts.design:
            point = self._start() if n_seen == 0 else self._design_point()
            info = {"action": "start" if n_seen == 0 else "design", "q": None, "state": None}
            if self.idle:
                w = self.idle.pop(0)
                self.walkers[w].pos = point
                self.walkers[w].moves.clear()
            else:
                w = len(self.walkers)
                self.walkers.append(mdp.Walker(point))
            if self.opts.design > 1:
                self.designed.add(w)
        elif self.idle:
            w = self.idle.pop(0)
            walker = self.walkers[w]
            if w in self.designed and self.hist.best_point is not None:
                walker.pos = self.hist.best_point  # the walk starts from the design's best
                walker.moves.clear()
            self.designed.discard(w)
            point, info = self._step(w)
        else:
            w = len(self.walkers)
            point = self._start()
            self.walkers.append(mdp.Walker(point))
            info = {"action": "start", "q": None, "state": None}
        self.hist.pending.add(point)
        self.trials[trial_id] = {"point": list(point), "walker": w, **info}
        return self._config(point)

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        """Record the trial's objective (worst if failed/NaN) and free its walker."""
        rec = self.trials.get(trial_id)
        if rec is None or "value" in rec:
            return
        value = self.final_value(trial_id, result, error)
        loss = math.inf if value is None else (-value if self._mode == "max" else value)
        point = tuple(rec["point"])
        new_best = self.hist.record(point, loss)
        walker = self.walkers[rec["walker"]]
        walker.pos = point
        walker.observed(new_best, loss)
        rec["value"] = value
        self.idle.append(rec["walker"])
        if self.online is not None and rec.get("transition") is not None:
            t = self.online.transitions[rec["transition"]]
            t.after = self.hist.best_value
            t.done = len(self.hist.values) >= self.opts.horizon
            self.online.update(list(self.hist.values.values()))

    # -- the walk -------------------------------------------------------------------
    def _config(self, point: mdp.Point) -> dict[str, Any]:
        return {p.name: p.boxes[i] for p, i in zip(self.space.params, point, strict=True)}

    def _start(self) -> mdp.Point:
        if self.opts.start == "default" and not self.walkers:
            default = self.space.default_config()
            point = tuple(p.nearest_box(default[p.name]) for p in self.space.params)
        else:
            kind = "bad" if self.opts.start == "bad" else "random"
            point = start_point(self.n_boxes, kind, self.rng)
        if self.hist.visited(point):
            point = self.hist.random_unvisited(self.rng) or point
        return point

    def _design_point(self) -> mdp.Point:
        """The farthest of a few random unvisited configurations from every visited one
        (distance in box positions scaled to [0, 1])."""
        span = np.maximum(np.asarray(self.n_boxes, dtype=float) - 1.0, 1.0)
        taken = np.array([*self.hist.values, *self.hist.pending], dtype=float) / span
        best, best_gap = None, -1.0
        for _ in range(DESIGN_CANDIDATES):
            cand = self.hist.random_unvisited(self.rng)
            if cand is None:
                break
            gap = float(np.min(np.sum((taken - np.asarray(cand) / span) ** 2, axis=1)))
            if gap > best_gap:
                best, best_gap = cand, gap
        return best if best is not None else self._start()

    def _step(self, w: int) -> tuple[mdp.Point, dict[str, Any]]:
        """Take actions with walker ``w`` until one evaluates a new configuration."""
        walker = self.walkers[w]
        for _ in range(MAX_INNER_STEPS):
            slots = mdp.window(walker, len(self.n_boxes), self.rng)
            mask = mdp.valid_actions(walker, self.hist, slots)
            if not mask.any():
                break
            obs = mdp.features(walker, self.hist, self.opts.horizon, slots)
            q = (self.online or self.policy).q_values(obs)
            valid = np.flatnonzero(mask)
            if self.rng.random() < self.opts.epsilon:
                action = int(valid[self.rng.randrange(len(valid))])
            else:
                action = int(valid[np.argmax(q[valid])])
            info: dict[str, Any] = {
                "action": mdp.action_name(action, self.space.names, slots),
                "q": [round(float(v), 4) for v in q],
                "state": [round(float(v), 3) for v in obs],
                "slots": list(slots),
            }
            before = self.hist.best_value
            nxt = mdp.apply(walker, self.hist, action, self.rng, slots)
            if self.online is not None:
                info["transition"] = self._transition(w, obs, action, before, nxt is None)
            if nxt is not None:
                return nxt, info
        # Every neighbour of the incumbent is taken (or the grid is exhausted).
        nxt = self.hist.random_unvisited(self.rng)
        if nxt is None:  # the whole grid was evaluated: resample it
            nxt = tuple(self.rng.randrange(n) for n in self.n_boxes)
        walker.pos = nxt
        walker.moves.clear()
        return nxt, {"action": "fallback", "q": None, "state": None}

    def _transition(
        self, w: int, obs: np.ndarray, action: int, before: float, returned: bool
    ) -> int:
        """Record walker ``w``'s decision for fine-tuning; ``obs`` is also the next
        state of its previous decision. A return's reward is known at once; a move's
        when its trial finishes."""
        assert self.online is not None
        transitions = self.online.transitions
        if w in self.waiting:
            transitions[self.waiting[w]].next_obs = obs.tolist()
        transitions.append(Transition(obs.tolist(), action, before, returned=returned))
        self.waiting[w] = len(transitions) - 1
        return self.waiting[w]

    # -- visibility -------------------------------------------------------------------
    def trial_info(self, trial_id: str) -> dict[str, Any] | None:
        """What the controller did for ``trial_id``: walker, action, Q-values, state."""
        rec = self.trials.get(trial_id)
        return dict(rec) if rec is not None else None

    def trial_tags(self, trial_id: str) -> dict[str, str]:
        """MLflow tags for a trial's child run (action, walker, Q-values, state)."""
        rec = self.trials.get(trial_id)
        if rec is None:
            return {}
        tags = {"dqn.walker": str(rec["walker"]), "dqn.action": str(rec["action"])}
        if rec.get("q") is not None:
            slots = rec.get("slots", range(len(self.space.names)))
            names = [mdp.action_name(a, self.space.names, slots) for a in range(mdp.N_ACTIONS)]
            qs = {n: v for n, v in zip(names, rec["q"], strict=True) if self._action_used(n)}
            tags["dqn.q_values"] = json.dumps(qs)
            tags["dqn.state"] = json.dumps(rec["state"])
        return tags

    def _action_used(self, name: str) -> bool:
        return name in ("best", "jump", "local") or name[:-2] in self.space.names

    def write_artifacts(self, run_dir: Path) -> list[str]:
        """The walk plot (``walk.png``), logged to the search's parent run."""
        return [WALK_PLOT] if self.plot_walk(str(run_dir / WALK_PLOT)) else []

    def plot_walk(self, path: str) -> str | None:
        """Write a PNG of the walk through the boxes (one row per parameter); return path."""
        done = [(tid, r) for tid, r in self.trials.items()]
        if not done:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        n = len(self.space.params)
        fig, axes = plt.subplots(
            n + 1, 1, figsize=(9, 1.5 * (n + 1) + 1), sharex=True, layout="constrained"
        )
        xs = np.arange(1, len(done) + 1)
        values = [r.get("value") for _, r in done]
        ax = axes[0]
        ys = np.array([np.nan if v is None else v for v in values], dtype=float)
        ax.plot(xs, ys, "o", ms=4, color="grey", label="trial")
        pick = np.fmax if self._mode == "max" else np.fmin
        ax.plot(xs, pick.accumulate(ys), "-", color="black", lw=1, label="best so far")
        ax.set_ylabel(self._metric or "metric")
        ax.set_title(f"dqn walk over {len(done)} trials (colour = walker)")
        ax.legend(loc="best", fontsize=9)
        colours = plt.get_cmap("tab10")
        walkers = np.array([r["walker"] for _, r in done])
        for k, p in enumerate(self.space.params):
            ax = axes[k + 1]
            boxes = np.array([r["point"][k] for _, r in done])
            ax.plot(xs, boxes, "-", color="lightgrey", lw=0.8)
            for w in np.unique(walkers):
                at = walkers == w
                ax.scatter(xs[at], boxes[at], color=colours(w % 10), s=16, label=str(w))
            ax.set_yticks(range(len(p.boxes)))
            ax.set_yticklabels([f"{b:g}" if isinstance(b, float) else str(b) for b in p.boxes])
            ax.set_ylabel(p.name)
            ax.tick_params(labelsize=9)
        handles, labels = axes[1].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside right center", fontsize=9, title="walker")
        axes[0].tick_params(labelsize=9)
        axes[-1].set_xlabel("trial")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path

    # -- persistence ------------------------------------------------------------------
    def save(self, checkpoint_path: str) -> None:
        """Write the full search state as JSON (no pickle)."""
        state = {
            "hist": self.hist.to_json(),
            "walkers": [w.to_json() for w in self.walkers],
            "idle": self.idle,
            "designed": sorted(self.designed),
            "trials": self.trials,
            **self.common_state(self.rng),
        }
        if self.online is not None:
            state["online"] = self.online.to_json()
            state["waiting"] = {str(w): i for w, i in self.waiting.items()}
        with open(checkpoint_path, "w") as fh:
            json.dump(state, fh)

    def restore(self, checkpoint_path: str) -> None:
        """Read what :meth:`save` wrote."""
        with open(checkpoint_path) as fh:
            state = json.load(fh)
        self.hist = mdp.History.from_json(self.n_boxes, state["hist"])
        self.walkers = [mdp.Walker.from_json(w) for w in state["walkers"]]
        self.idle = [int(i) for i in state["idle"]]
        self.designed = {int(i) for i in state.get("designed", [])}
        self.trials = state["trials"]
        self.set_common_state(state, self.rng)
        if self.online is not None and "online" in state:
            self.online.load_json(state["online"])
            self.waiting = {int(w): int(i) for w, i in state["waiting"].items()}


def budget_defaults(space: SearchSpace, budget_epochs: int) -> dict[str, Any]:
    """The horizon (trials the budget allows at full length) when the user sets none."""
    return {"horizon": max(1, budget_epochs // max(space.max_epochs, 1))}


def build(
    space: SearchSpace, metric: str, mode: str, seed: int, options: Mapping[str, Any] | None
) -> Searcher:
    """A :class:`DQNSearcher` over ``space`` using the shipped (or given) policy."""
    opts = parse_options(Options, "dqn", options)
    return DQNSearcher(space, metric, mode, seed=seed, options=opts)


PLUGIN = StrategyPlugin(build=build, options=Options, budget_defaults=budget_defaults)
