"""The in-training controller: a pretrained Q-gradient-descent policy adjusts the
learning rate (``lr``) and/or the weight decay (``l2``) of any torch optimizer
every ``K`` optimizer steps of a trial (``--inner-controller``).

The seed's anchor logic (Algorithms 1-2, :mod:`tune_app.controller.qgd`) on
blocks of ``K`` mini-batch steps instead of single full-batch steps:

* the weights and the optimizer's state at the start of a block are the
  *anchor*; the block runs ``K`` steps at the current values (the *candidate*);
* ``accept``: keep the weights (they become the anchor), reset the value to its
  reset value, the trial's configured ``lr`` / ``weight_decay`` (the outer
  search's ``alpha_c`` / ``lambda_c``);
* ``half``: restore the anchor's weights and optimizer state, halve the value;
* ``up`` (``l2``): restore the anchor, multiply the value by 1.25.

A policy trained on a departure's actions (``variant`` in its manifest,
:data:`tune_app.controller.qgd.VARIANTS`) keeps its value on ``accept``; its other
actions are the environment's: ``lr`` ``"adaptive"``: ``up`` (restore the anchor,
double the rate); ``lr`` ``"grow"``: ``grow`` (keep the weights, as ``accept``,
then double the rate); ``l2`` ``"steer"``: ``lower`` / ``raise`` (keep the
weights, then halve / multiply by 1.25 the weight decay).

With ``lr,l2`` both policies see the same block: the block is kept only when
both accept (``accept`` or an accepting departure action); otherwise the anchor
is restored and each control applies its own action to its value (one that
accepted keeps its value, a ``grow``/``lower``/``raise`` still changes it).
Actions are greedy.

**Features** (:func:`tune_app.controller.qgd.features`, the environment's six),
mapped from mini-batch training, with no extra forward pass: the first step of
every block computes its loss *at the anchor*, so the anchor's value is the mean
of those first-step losses over the blocks tried from it; the candidate's value
is the mean loss of the block's other ``K - 1`` steps (hence ``K >= 2``); the
direction is the block's displacement of the weights from the anchor, the
"negative gradient at the candidate" the last step's negative gradient (plus
``weight_decay * w``), the previous direction the displacement of the block
accepted last (the block itself for the first one). The feature history starts
with the first anchor's value, as the environment's does. Departure for ``l2``:
the environment's value is the validation error; here it is the training loss
too (a validation pass every ``K`` steps would cost more than the training).

**Ray Train with DDP**: the block's loss sum and count are all-reduced, so every
rank computes the same features, and rank 0's actions are broadcast, so every
rank restores or keeps the same weights.

Pretraining can drive this same code (:mod:`tune_app.controller.qgd_block`):
:meth:`InnerController._measure` gives each control's features after a block,
:meth:`InnerController._commit` applies the chosen actions.

Its state (values, anchor with its step, the feature history and the record of
every controller step) goes into the trial's checkpoint (:meth:`state_dict`,
tensors and plain values only) and comes back with it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tune_app.controller.inner_record import (
    ALPHA,
    CODES,
    LAMBDA,
    REPORT_KEY,
    action_key,
    encode,
)
from tune_app.controller.policy import QPolicy
from tune_app.controller.qgd import (
    ACCEPTING,
    CONTROLS,
    N_FEATURES,
    action_names,
    factor,
    features,
    finite,
)
from tune_app.controller.qgd_policy import load, variant_of
from tune_app.errors import ConfigError, TaskError

WEIGHTS = Path(__file__).parent / "weights"
#: The optimizer hyperparameter each control sets in every param group.
KEYS = {"lr": "lr", "l2": "weight_decay"}
DEFAULT_MEMORY = 5


def shipped(control: str) -> Path:
    """Where a shipped policy for ``control`` lives."""
    return WEIGHTS / f"qgd_{control}"


def parse_controls(text: Any) -> tuple[str, ...]:
    """``"lr"``, ``"l2"`` or ``"lr,l2"`` as a tuple; anything else: a ConfigError."""
    parts = [p.strip() for p in str(text).split(",")] if isinstance(text, str) else []
    if not parts or any(p not in CONTROLS for p in parts) or len(set(parts)) != len(parts):
        raise ConfigError(f"--inner-controller must be lr, l2 or lr,l2; got {text!r}")
    return tuple(c for c in CONTROLS if c in parts)


@dataclass(frozen=True)
class InnerSpec:
    """What every trial's controller uses: controls, ``every`` (K) and policies.

    Pretraining (:mod:`tune_app.controller.qgd_block`) gives no policies: it names
    each control's ``variants`` and the ``history`` length M itself."""

    controls: tuple[str, ...]
    every: int
    policies: Mapping[str, QPolicy] = field(default_factory=dict)
    variants: Mapping[str, str] = field(default_factory=dict)
    history: int | None = None
    #: Each control's lowest and highest value (the search space's range for ``lr``
    #: or ``weight_decay``); a control without bounds is unbounded.
    bounds: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def memory(self) -> int:
        """The feature history's length M (the policies' training setting)."""
        if self.history is not None:
            return self.history
        found = [
            int((p.manifest.get("settings") or {}).get("memory", DEFAULT_MEMORY))
            for p in self.policies.values()
        ]
        return max(found, default=DEFAULT_MEMORY)

    def variant(self, control: str) -> str:
        """The actions' variant ``control``'s policy was trained with."""
        if control in self.variants:
            return self.variants[control]
        return variant_of(self.policies[control]) if control in self.policies else "seed"

    def actions(self, control: str) -> tuple[str, ...]:
        """``control``'s policy's actions, in the order of its Q-values."""
        return action_names(control, self.variant(control))


def resolve(controls: Any, every: Any, policy: Any) -> InnerSpec:
    """The controller's spec from the run options; one-line ConfigErrors.

    ``policy``: comma-separated policy directories, one per control, each matched by
    its manifest's ``control`` (None: the shipped ``weights/qgd_<control>``)."""
    chosen = parse_controls(controls)
    if isinstance(every, bool) or not isinstance(every, int) or every < 2:
        raise ConfigError(f"--inner-every must be an integer >= 2, got {every!r}")
    if policy is None:
        dirs = [shipped(c) for c in chosen]
        for c, d in zip(chosen, dirs, strict=True):
            if not (d / "manifest.json").is_file():
                raise ConfigError(
                    f"no Q-gradient-descent policy for {c} is shipped ({d}); pass "
                    f"--inner-policy DIR (a policy exported by tune_app.controller.qgd_train)"
                )
    elif isinstance(policy, str | Path) and str(policy).strip():
        dirs = [Path(p.strip()) for p in str(policy).split(",") if p.strip()]
    else:
        raise ConfigError(f"--inner-policy must be one or more directories, got {policy!r}")
    policies: dict[str, QPolicy] = {}
    for d in dirs:
        loaded = load(d)
        control = str(loaded.manifest.get("control"))
        try:
            expected = list(action_names(control, variant_of(loaded)))
        except ValueError:  # an unknown control or variant
            expected = []
        if loaded.manifest.get("obs_dim") != N_FEATURES or (
            list(loaded.manifest.get("actions", ())) != expected
        ):
            raise ConfigError(f"Q-gradient-descent policy {d}: made for another state or actions")
        if control not in chosen or control in policies:
            raise ConfigError(
                f"--inner-policy {d} controls {control!r}; give one policy for each of "
                f"{','.join(chosen)}"
            )
        policies[str(control)] = loaded
    missing = [c for c in chosen if c not in policies]
    if missing:
        raise ConfigError(f"--inner-policy has no policy for {','.join(missing)}")
    return InnerSpec(chosen, every, policies)


def _clone(value: Any) -> Any:
    """A deep copy of a (nested) state dict with every tensor cloned."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, dict):
        return {k: _clone(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_clone(v) for v in value)
    return value


def _flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.reshape(-1).float() for t in tensors]) if tensors else torch.zeros(0)


class InnerController:
    """Called after every ``optimizer.step()`` of a trial (:meth:`after_step`)."""

    def __init__(
        self,
        spec: InnerSpec,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        world: int = 1,
        rank: int = 0,
        device: torch.device | None = None,
    ) -> None:
        self.spec, self.model, self.optimizer = spec, model, optimizer
        self.world, self.rank = world, rank
        self.device = device or torch.device("cpu")
        # The reset values: the trial's configured lr / weight_decay, per param group.
        self.reset = {
            c: [float(g.get(KEYS[c], 0.0)) for g in optimizer.param_groups] for c in spec.controls
        }
        if "l2" in self.reset and not any(v > 0 for v in self.reset["l2"]):
            raise TaskError(
                "--inner-controller l2 needs a weight_decay > 0 to scale; this trial's is 0"
            )
        self.multiplier = dict.fromkeys(spec.controls, 1.0)
        self.step = 0  # optimizer steps of the trial so far
        self.anchor_step = 0
        # Losses (this rank's) of the block's first step (at the anchor) and of the rest.
        self.block_first, self.block_sum, self.block_n = 0.0, 0.0, 0
        self.anchor_sum, self.anchor_n = 0.0, 0  # first-step losses of blocks from the anchor
        self.recent: list[float] = []
        self.lowest: list[float] = []
        self.anchor = self._snapshot()
        self.previous: torch.Tensor | None = None
        # The last block's measures (:meth:`_measure`), read by :meth:`_commit`.
        self.direction = torch.zeros(0)
        self.used = self._values()
        self.anchor_value = self.candidate_value = math.nan
        self.history: list[dict[str, float]] = []  # one row per controller step
        self.reported = 0

    # -- the hook -------------------------------------------------------------------------
    def after_step(self, loss: torch.Tensor | float) -> None:
        """Count one optimizer step with its mini-batch loss; act every K steps."""
        value = float(loss.detach().item() if isinstance(loss, torch.Tensor) else loss)
        self.step += 1
        if self.step - self.anchor_step == 1:  # computed at the anchor's weights
            self.block_first = value
        else:
            self.block_sum += value
            self.block_n += 1
        if self.step - self.anchor_step >= self.spec.every:
            self._decide()

    def _decide(self) -> None:
        observations = self._measure()
        self._commit(self._actions(observations))

    def _measure(self) -> dict[str, np.ndarray]:
        """The block's values and direction; each control's state features."""
        at_anchor, value = self._block_values()
        self.anchor_sum += at_anchor
        self.anchor_n += 1
        anchor_value = self.anchor_sum / self.anchor_n
        self.direction = self._displacement()
        self.used = self._values()
        if not self.recent:  # the history starts with the first anchor's value
            self._remember(anchor_value)
        lows = self.lowest
        rank = 1.0 if value <= min(lows) else 0.0 if value <= max(lows) else -1.0
        self._remember(value)
        self.anchor_value, self.candidate_value = anchor_value, value
        neg_grad = self._neg_grad()
        previous = self.previous if self.previous is not None else self.direction
        return {
            c: features(
                self.multiplier[c],
                anchor_value,
                value,
                max(self.recent),
                self.direction,
                neg_grad,
                previous,
                rank,
            )
            for c in self.spec.controls
        }

    def _commit(self, actions: Mapping[str, str]) -> None:
        """Keep the block or restore the anchor; set the values; record the step."""
        if all(a in ACCEPTING for a in actions.values()):
            self.anchor = self._snapshot()
            self.anchor_sum, self.anchor_n = 0.0, 0
            self.previous = self.direction
            for c, a in actions.items():
                seed = self.spec.variant(c) == "seed"
                self.multiplier[c] = 1.0 if seed else self.multiplier[c] * factor(c, a)
        else:  # the anchor is restored; an accepting action still sets its value
            self._restore_anchor()
            for c, a in actions.items():
                self.multiplier[c] *= factor(c, a)
        for c in self.spec.bounds:
            self._bound(c)
        self._apply()
        row = {"step": float(self.step), ALPHA: self.used["lr"], LAMBDA: self.used["weight_decay"]}
        row.update({action_key(c): CODES[a] for c, a in actions.items()})
        self.history.append(row)
        self.anchor_step = self.step
        self.block_first, self.block_sum, self.block_n = 0.0, 0.0, 0

    def _bound(self, control: str) -> None:
        """Keep ``control``'s value (of the first param group) within its bounds,
        widened to hold the trial's own reset value."""
        base = self.reset.get(control, [0.0])[0]
        if base <= 0:
            return
        low, high = self.spec.bounds[control]
        low, high = min(low, base), max(high, base)
        self.multiplier[control] = min(max(self.multiplier[control], low / base), high / base)

    def _actions(self, observations: Mapping[str, np.ndarray]) -> dict[str, str]:
        """Each control's greedy action (rank 0's, broadcast over DDP ranks)."""
        chosen = [
            int(self.spec.policies[c].q_values(observations[c]).argmax())
            for c in self.spec.controls
        ]
        if self.world > 1:
            t = torch.tensor(chosen, dtype=torch.int64, device=self.device)
            torch.distributed.broadcast(t, src=0)
            chosen = [int(v) for v in t.cpu().tolist()]
        return {c: self.spec.actions(c)[i] for c, i in zip(self.spec.controls, chosen, strict=True)}

    # -- measurements -----------------------------------------------------------------------
    def _block_values(self) -> tuple[float, float]:
        """The block's loss at the anchor (its first step) and its mean loss after
        it, over every rank's batches; a non-finite value counts as 1e6."""
        first, total, n = self.block_first, self.block_sum, float(self.block_n)
        if self.world > 1:
            t = torch.tensor([first, total, n], dtype=torch.float64, device=self.device)
            torch.distributed.all_reduce(t)
            first, total, n = (float(v) for v in t.cpu().tolist())
            first /= self.world
        return finite(first), finite(total / max(n, 1.0))

    def _displacement(self) -> torch.Tensor:
        """The block's direction: the weights now minus the anchor's (flat)."""
        anchor = self.anchor["model"]
        return _flat([p.detach() - anchor[name] for name, p in self.model.named_parameters()])

    def _neg_grad(self) -> torch.Tensor:
        """The last step's negative gradient of the L2-regularised objective (flat,
        in the order of :meth:`_displacement`)."""
        decay = {
            id(p): float(g.get("weight_decay", 0.0))
            for g in self.optimizer.param_groups
            for p in g["params"]
        }
        parts = []
        for _, p in self.model.named_parameters():
            g = p.grad.detach() if p.grad is not None else torch.zeros_like(p)
            parts.append(-(g + decay.get(id(p), 0.0) * p.detach()))
        return _flat(parts)

    def _remember(self, v: float) -> None:
        self.recent = [*self.recent, v][-self.spec.memory :]
        self.lowest = sorted([*self.lowest, v])[: self.spec.memory]

    # -- the optimizer ----------------------------------------------------------------------
    def _snapshot(self) -> dict[str, Any]:
        return {
            "model": _clone(self.model.state_dict()),
            "optimizer": _clone(self.optimizer.state_dict()),
        }

    def _restore_anchor(self) -> None:
        self.model.load_state_dict(self.anchor["model"])
        # A copy: the optimizer updates its state in place, the anchor must stay.
        self.optimizer.load_state_dict(_clone(self.anchor["optimizer"]))

    def _apply(self) -> None:
        """Set every param group's controlled values: reset value x multiplier."""
        for c in self.spec.controls:
            for group, base in zip(self.optimizer.param_groups, self.reset[c], strict=True):
                value = base * self.multiplier[c]
                if isinstance(group[KEYS[c]], torch.Tensor):
                    group[KEYS[c]].fill_(value)
                else:
                    group[KEYS[c]] = value

    def _device(self) -> torch.device:
        return next((p.device for p in self.model.parameters()), torch.device("cpu"))

    def _values(self) -> dict[str, float]:
        group = self.optimizer.param_groups[0]
        return {k: float(group.get(k, 0.0)) for k in ("lr", "weight_decay")}

    # -- reports and checkpoints ------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        """The controller steps since the last report, for the epoch's report."""
        rows, self.reported = self.history[self.reported :], len(self.history)
        return {REPORT_KEY: encode(rows)}

    def state_dict(self) -> dict[str, Any]:
        """Everything :meth:`load_state_dict` needs (tensors and plain values only)."""
        return {
            "controls": list(self.spec.controls),
            "multiplier": dict(self.multiplier),
            "step": self.step,
            "anchor_step": self.anchor_step,
            "block": [self.block_first, self.block_sum, self.block_n],
            "at_anchor": [self.anchor_sum, self.anchor_n],
            "recent": list(self.recent),
            "lowest": list(self.lowest),
            "anchor": self.anchor,
            "previous": self.previous,
            "history": [dict(r) for r in self.history],
            "reported": self.reported,
        }

    def load_state_dict(self, state: Mapping[str, Any] | None) -> None:
        """Continue from a checkpoint's state (its values times this trial's reset
        values: a PBT child scales its own configuration). None, or a state of other
        controls: start afresh at the restored weights (they are the anchor)."""
        if state is None or list(state.get("controls", ())) != list(self.spec.controls):
            self.anchor = self._snapshot()
            return
        self.multiplier = {c: float(state["multiplier"][c]) for c in self.spec.controls}
        self.step, self.anchor_step = int(state["step"]), int(state["anchor_step"])
        first, total, n = state["block"]
        self.block_first, self.block_sum, self.block_n = float(first), float(total), int(n)
        self.anchor_sum, self.anchor_n = float(state["at_anchor"][0]), int(state["at_anchor"][1])
        self.recent = [float(v) for v in state["recent"]]
        self.lowest = [float(v) for v in state["lowest"]]
        device = self._device()  # a checkpoint is read onto the CPU
        model = {k: v.detach().to(device, copy=True) for k, v in state["anchor"]["model"].items()}
        self.anchor = {"model": model, "optimizer": _clone(state["anchor"]["optimizer"])}
        previous = state["previous"]
        self.previous = None if previous is None else previous.to(device)
        self.history = [dict(r) for r in state["history"]]
        self.reported = int(state["reported"])  # rows after it: reported again
        self._apply()
