"""Q-gradient descent's MDPs (seed 001, after Hansen 2016) as gymnasium environments.

An agent controls one optimisation hyperparameter *during* training of a small
objective net: the learning rate ``alpha`` (``control="lr"``, Algorithms 1 and 3
of the seed) or the L2 coefficient ``lambda`` (``control="l2"``, Algorithms 2
and 4). The objective net's weights are one flat vector ``x``.

**Anchor logic.** From an anchor iterate ``x_bar`` with direction
``d = -grad(x_bar)``, each step's candidate is ``x = x_bar + alpha d``. Actions:

* ``lr``: ``half`` (``alpha /= 2``, retry from the same anchor) or ``accept``
  (the candidate becomes the anchor, a new direction, ``alpha = alpha_c``);
* ``l2``: ``half`` (``lambda /= 2``), ``up`` (``lambda *= 1.25``) or ``accept``
  (as above, ``lambda = lambda_c``); the direction is of the regularised
  objective ``g(x) = f(x) + lambda / 2 |x|^2``.

**Departures, ``variant``** (:data:`VARIANTS` names each one's actions): the
seed's ``accept`` resets the value to its reset value, and its other actions
retry from the anchor. The variants keep the value on ``accept``:

* ``lr``, ``"adaptive"``: adds ``up`` (``alpha *= RAISE``, retry from the same
  anchor, as ``half`` does): raising the rate costs a step;
* ``lr``, ``"grow"``: adds ``grow`` (accept, then ``alpha *= RAISE``): raising
  the rate costs nothing, so a policy can run "bold driver" schedules;
* ``l2``, ``"steer"``: every action accepts the step; ``lower`` (``lambda /= 2``)
  and ``raise`` (``lambda *= UP``) set the coefficient of the steps that follow.
  The seed's ``half``/``up`` retry from the anchor, so a policy that avoids a
  higher validation error stops training altogether; this one cannot.

``alpha_range`` r > 1 (a departure for pretraining) draws each episode's reset
rate log-uniformly from ``[alpha_c / r, alpha_c * r]``, so a policy meets reset
rates both too small and too large for its net; the state only sees the rate
relative to the episode's reset rate. ``lambda_range`` does the same for the
``l2`` coefficient's reset value ``lambda_c``.

Each episode starts like Algorithm 3: ``memory - 1`` plain gradient steps at
the reset rate (filling the feature history), then the anchor is set.

**State** (six features, each in [-1, 1], after Hansen): the controlled
hyperparameter (``log2(value / value_c) / 10``); the candidate's objective
relative to the anchor's; the largest of the last ``memory`` objective values
relative to the anchor's; the cosine between the direction and the negative
gradient at the candidate; the candidate against the ``memory`` lowest values
seen (1: a new low, 0: among them, -1: above them); the alignment of successive
directions (the mean sign of their elementwise product).

**Reward** (the seed's inverse distance to a lower bound): ``c1 * ref / (v -
v_lb)`` after ``half``/``up`` with ``v`` the candidate's value, ``c2 * ref / (v -
v_lb)`` after ``accept`` with ``v`` the new anchor's; ``v`` is the training loss
for ``lr`` and the validation error rate for ``l2``, ``v_lb = 0``. Departure from
the seed, to train one policy over many objective nets: the value is divided by
``ref``'s reciprocal, the episode's starting value, so a reward means "times
closer to the bound than at the start" whatever the net's loss scale, and it is
capped at ``REWARD_CAP`` (the seed's form explodes near the bound).

``reward="log"`` (a departure, measured against the seed's in
docs/dqn-controller.md): ``log(v_anchor_before / v_anchor_after)`` after
``accept``, 0 after ``half``/``up`` (the anchor did not move), so an episode's
undiscounted return is ``log(v_start / v_final)``, the log of the goal's
improvement, whatever the net's loss scale; capped at ``REWARD_CAP`` either way.

Objective nets are generated on the fly (:func:`generate`): logistic models and
MLPs with one or two sigmoid or ReLU hidden layers on synthetic classification
data (scikit-learn's ``make_classification``), full batch or mini-batch, seeded,
with :data:`ROWS` training rows and features scaled as :data:`NET_INPUTS` says
(standardised by default). None of the project's evaluation data (digits,
CIFAR-10, MNIST) is used.
``info["evaluations"]`` counts objective evaluations (one per step, a rejected
step included) and ``info["gradients"]`` gradient evaluations, for honest
comparisons with line search.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Any, Protocol

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

CONTROLS = ("lr", "l2")
REWARDS = ("seed", "log")
ACTIONS: dict[str, tuple[str, ...]] = {"lr": ("half", "accept"), "l2": ("half", "up", "accept")}
UP = 1.25
RAISE = 2.0  # ``up`` / ``grow`` on the rate (the lr variants)
#: Each control's actions per variant ("seed": the seed's own, :data:`ACTIONS`).
VARIANTS: dict[str, dict[str, tuple[str, ...]]] = {
    "lr": {
        "seed": ACTIONS["lr"],
        "adaptive": ("half", "up", "accept"),
        "grow": ("half", "accept", "grow"),
    },
    "l2": {"seed": ACTIONS["l2"], "steer": ("lower", "accept", "raise")},
}
#: Actions that move the anchor to the candidate.
ACCEPTING = ("accept", "grow", "lower", "raise")
#: ``QGDEnv(rows=...)``: the generated nets' training rows, low..high. ``"default"``:
#: 40-120 for ``l2`` (nets that overfit), 200-1,000 for ``lr``; ``"any"``: 40-1,000
#: for either (a departure for ``l2``: nets that do and nets that do not overfit).
ROWS: dict[str, dict[str, tuple[int, int]]] = {
    "default": {"lr": (200, 1000), "l2": (40, 120)},
    "any": {"lr": (40, 1000), "l2": (40, 1000)},
}
#: ``QGDEnv(inputs=...)``: how the generated nets' features are scaled.
#: ``"standardised"``: zero mean, unit variance; ``"unit"``: each feature in [0, 1],
#: as images' pixels are (the seed's regime: a sigmoid net on such inputs starts on
#: a plateau); ``"any"``: either, drawn per episode (a departure).
NET_INPUTS = ("standardised", "unit", "any")


def factor(control: str, action: str) -> float:
    """What ``action`` multiplies ``control``'s value by (``accept``: 1; the seed's
    reset on ``accept`` is the caller's). One table for the environment and the
    training loop's controller."""
    if action in ("half", "lower"):
        return 0.5
    if action == "up":
        return UP if control == "l2" else RAISE
    return {"grow": RAISE, "raise": UP}.get(action, 1.0)


N_FEATURES = 6
REWARD_CAP = 100.0
DIVERGED = 1e6  # the value a non-finite objective counts as


class Problem(Protocol):
    """An objective over a flat parameter vector (what the environment trains)."""

    def init(self) -> torch.Tensor:
        """The starting iterate."""
        ...

    def loss(self, x: torch.Tensor) -> float:
        """Training loss ``f(x)`` (a mini-batch problem draws a batch)."""
        ...

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        """``grad f(x)``, a vector like ``x``."""
        ...

    def val_error(self, x: torch.Tensor) -> float:
        """Validation error rate ``h(x)`` in [0, 1]."""
        ...


@dataclass
class NetProblem:
    """A classification net on fixed data; ``batch`` 0: full batch; ``x_test``,
    ``y_test``: rows only a report reads (:meth:`test_accuracy`), optional."""

    model: nn.Module
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    batch: int = 0
    seed: int = 0
    x_test: torch.Tensor | None = None
    y_test: torch.Tensor | None = None

    def __post_init__(self) -> None:
        self._start = parameters_to_vector(self.model.parameters()).detach().clone()
        self._gen = torch.Generator().manual_seed(self.seed)

    def init(self) -> torch.Tensor:
        """The net's initial weights."""
        return self._start.clone()

    def _rows(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.batch or self.batch >= len(self.y_train):
            return self.x_train, self.y_train
        idx = torch.randint(len(self.y_train), (self.batch,), generator=self._gen)
        return self.x_train[idx], self.y_train[idx]

    def _set(self, x: torch.Tensor) -> None:
        vector_to_parameters(x, self.model.parameters())

    def loss(self, x: torch.Tensor) -> float:
        """Cross-entropy on the training data (a batch of it)."""
        self._set(x)
        xs, ys = self._rows()
        with torch.no_grad():
            return float(nn.functional.cross_entropy(self.model(xs), ys))

    def grad(self, x: torch.Tensor) -> torch.Tensor:
        """Gradient of the cross-entropy on the training data (a batch of it)."""
        self._set(x)
        self.model.zero_grad(set_to_none=True)
        xs, ys = self._rows()
        nn.functional.cross_entropy(self.model(xs), ys).backward()
        grads = [
            p.grad if p.grad is not None else torch.zeros_like(p) for p in self.model.parameters()
        ]
        return parameters_to_vector(grads).detach().clone()

    def full_loss(self, x: torch.Tensor) -> float:
        """Cross-entropy on all the training data (what a benchmark reports; the
        environment of a mini-batch net sees only batches)."""
        self._set(x)
        with torch.no_grad():
            return float(nn.functional.cross_entropy(self.model(self.x_train), self.y_train))

    def val_error(self, x: torch.Tensor) -> float:
        """Error rate on the validation data."""
        self._set(x)
        with torch.no_grad():
            pred = self.model(self.x_val).argmax(dim=1)
        return float((pred != self.y_val).float().mean())

    def test_accuracy(self, x: torch.Tensor) -> float:
        """Accuracy on the test rows (NaN without them)."""
        if self.x_test is None or self.y_test is None:
            return math.nan
        self._set(x)
        with torch.no_grad():
            pred = self.model(self.x_test).argmax(dim=1)
        return float((pred == self.y_test).float().mean())


def generate(
    rng: np.random.Generator,
    rows: tuple[int, int] = ROWS["default"]["lr"],
    inputs: str = NET_INPUTS[0],
) -> NetProblem:
    """A random objective net: data, model and batch mode drawn from ``rng``, with
    ``low..high`` training rows (:data:`ROWS`; few for ``l2``: the seed's lambda
    experiment trains on 1,000 CIFAR-10 images so the net overfits within 100 steps)
    and features scaled as ``inputs`` says (:data:`NET_INPUTS`)."""
    from sklearn.datasets import make_classification

    n_features = int(rng.integers(8, 65))
    classes = int(rng.integers(2, 11))
    low, high = rows
    n_train = int(rng.integers(low, high + 1))
    seed = int(rng.integers(2**31))
    xs, ys = make_classification(
        n_samples=n_train + 500,
        n_features=n_features,
        n_informative=max(2, n_features // 2),
        n_classes=classes,
        n_clusters_per_class=1,
        flip_y=float(rng.uniform(0.0, 0.1)),
        random_state=seed,
    )
    if inputs == "any":  # the only case that draws one more number from rng
        inputs = NET_INPUTS[int(rng.integers(2))]
    if inputs == "unit":
        xs = (xs - xs.min(0)) / (xs.max(0) - xs.min(0) + 1e-9)
    else:
        xs = (xs - xs.mean(0)) / (xs.std(0) + 1e-9)
    x = torch.tensor(xs, dtype=torch.float32)
    y = torch.tensor(ys, dtype=torch.long)
    torch.manual_seed(seed)
    hidden = [int(rng.integers(16, 101)) for _ in range(int(rng.integers(0, 3)))]
    act: type[nn.Module] = nn.Sigmoid if rng.random() < 0.5 else nn.ReLU
    layers: list[nn.Module] = []
    width = n_features
    for h in hidden:
        layers += [nn.Linear(width, h), act()]
        width = h
    layers.append(nn.Linear(width, classes))
    batch = 0 if rng.random() < 0.5 else int(rng.choice([32, 64, 128]))
    return NetProblem(
        nn.Sequential(*layers), x[:n_train], y[:n_train], x[n_train:], y[n_train:], batch, seed
    )


def _clip(v: float) -> float:
    return float(min(1.0, max(-1.0, v))) if math.isfinite(v) else -1.0


def finite(v: float) -> float:
    """``v``, or :data:`DIVERGED` when it is not finite."""
    return v if math.isfinite(v) else DIVERGED


def features(
    hyper: float,
    anchor_value: float,
    value: float,
    recent_max: float,
    direction: torch.Tensor,
    neg_grad: torch.Tensor,
    previous: torch.Tensor,
    rank: float,
) -> np.ndarray:
    """The six state features (module docstring), each in [-1, 1]: ``hyper`` is the
    hyperparameter over its reset value, ``value`` the candidate's objective,
    ``neg_grad`` the negative gradient at the candidate, ``previous`` the direction
    before ``direction``, ``rank`` the candidate against the lowest values (1/0/-1).
    Shared with the training loop's controller (:mod:`tune_app.controller.inner`)."""
    base = max(abs(anchor_value), 1e-12)
    denom = float(direction.norm() * neg_grad.norm())
    cosine = float(direction @ neg_grad) / denom if denom > 0 else 0.0
    align = float(torch.sign(direction * previous).mean())
    return np.asarray(
        [
            _clip(math.log2(hyper) / 10),
            _clip((anchor_value - value) / base),
            _clip((recent_max - anchor_value) / base),
            _clip(cosine),
            rank,
            _clip(align),
        ],
        dtype=np.float32,
    )


def action_names(control: str, variant: str = "seed") -> tuple[str, ...]:
    """The environment's actions, in index order; a ValueError for an unknown pair."""
    if variant not in VARIANTS.get(control, {}):
        known = ", ".join(f"{c}: {'/'.join(v)}" for c, v in VARIANTS.items())
        raise ValueError(f"no variant {variant!r} for control {control!r} (known: {known})")
    return VARIANTS[control][variant]


def check_ranges(alpha_range: float, lambda_range: float) -> None:
    """A ValueError unless both reset-value ranges (``QGDEnv``'s) are at least 1."""
    for name, r in (("alpha_range", alpha_range), ("lambda_range", lambda_range)):
        if r < 1:
            raise ValueError(f"{name} must be at least 1, got {r}")


class QGDEnv(gym.Env):
    """One episode: ``steps`` controlled steps on one generated objective net."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        control: str = "lr",
        steps: int = 100,
        memory: int = 5,
        alpha_c: float = 1.0,
        lambda_c: float = 1e-3,
        c1: float = 0.01,
        c2: float = 0.01,
        problems: Any = None,
        reward: str = "seed",
        variant: str = "seed",
        alpha_range: float = 1.0,
        lambda_range: float = 1.0,
        rows: str = "default",
        inputs: str = NET_INPUTS[0],
    ) -> None:
        if control not in CONTROLS:
            raise ValueError(f"control must be one of {CONTROLS}, got {control!r}")
        if reward not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS}, got {reward!r}")
        if rows not in ROWS:
            raise ValueError(f"rows must be one of {tuple(ROWS)}, got {rows!r}")
        if inputs not in NET_INPUTS:
            raise ValueError(f"inputs must be one of {NET_INPUTS}, got {inputs!r}")
        self.actions = action_names(control, variant)
        check_ranges(alpha_range, lambda_range)
        self.reward, self.variant = reward, variant
        self.alpha_range, self.lambda_range = alpha_range, lambda_range
        self.control, self.steps, self.memory = control, steps, memory
        self.alpha_c, self.lambda_c, self.c1, self.c2 = alpha_c, lambda_c, c1, c2
        self.alpha_0 = alpha_c  # the episode's reset rate (alpha_range draws it)
        self.lambda_0 = lambda_c  # and coefficient (lambda_range draws it)
        # problems(rng) -> Problem; default: a generated net with ROWS[rows] rows
        self.problems = problems or (
            lambda rng: generate(rng, rows=ROWS[rows][control], inputs=inputs)
        )
        self.action_space = gym.spaces.Discrete(len(self.actions))
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (N_FEATURES,), np.float32)
        self.rng = np.random.default_rng()

    # -- the objective being driven ----------------------------------------------------
    def _objective_grad(self, x: torch.Tensor) -> torch.Tensor:
        g = self.problem.grad(x)
        self.gradients += 1
        return g + self.lam * x if self.control == "l2" else g

    def _value(self, x: torch.Tensor) -> float:
        """What the reward measures: training loss (lr) or validation error (l2)."""
        self.evaluations += 1
        if self.control == "l2":
            return finite(self.problem.val_error(x))
        return finite(self.problem.loss(x))

    # -- gymnasium ------------------------------------------------------------------------
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """A new objective net; ``memory - 1`` plain steps at ``alpha_c``; the anchor."""
        super().reset(seed=seed)
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self.problem = self.problems(self.rng)
        self.t, self.evaluations, self.gradients = 0, 0, 0
        self.alpha_0, self.lambda_0 = self.alpha_c, self.lambda_c
        if self.alpha_range > 1:
            self.alpha_0 *= self.alpha_range ** float(self.rng.uniform(-1.0, 1.0))
        if self.lambda_range > 1:
            self.lambda_0 *= self.lambda_range ** float(self.rng.uniform(-1.0, 1.0))
        self.alpha, self.lam = self.alpha_0, self.lambda_0
        x = self.problem.init()
        self.recent: deque[float] = deque(maxlen=self.memory)
        self.lowest: list[float] = []
        for _ in range(self.memory - 1):
            self._remember(self._value(x))
            x = x - self.alpha_0 * self._objective_grad(x)
        self.ref = max(self._value(x), 1e-9)
        self._remember(self.ref)
        self.anchor, self.anchor_value = x, self.ref
        self.direction = -self._objective_grad(x)
        self.previous = self.direction
        self._propose()
        return self._observe(), self._info()

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Apply the action (see the module docstring), then propose the next candidate."""
        name = self.actions[int(action)]
        if name in ACCEPTING:
            before = self.anchor_value
            self.anchor, self.anchor_value = self.candidate, self.candidate_value
            if self.variant == "seed":
                self.alpha, self.lam = self.alpha_0, self.lambda_0
            else:
                self._scale(name)
            self.previous, self.direction = self.direction, -self._objective_grad(self.anchor)
            if self.reward == "log":  # the anchor's log-improvement
                reward = math.log(max(before, 1e-12) / max(self.anchor_value, 1e-12))
            else:
                reward = self.c2 * self.ref / max(self.anchor_value, 1e-12)
            self._propose()
        else:  # half or up: retry from the anchor
            self._scale(name)
            if self.control == "l2":  # the regularised objective's direction changed
                self.direction = -self._objective_grad(self.anchor)
            self._propose()
            if self.reward == "log":  # the anchor did not move
                reward = 0.0
            else:
                reward = self.c1 * self.ref / max(self.candidate_value, 1e-12)
        self.t += 1
        truncated = self.t >= self.steps
        reward = max(-REWARD_CAP, min(reward, REWARD_CAP))
        return self._observe(), reward, False, truncated, self._info()

    # -- helpers ----------------------------------------------------------------------------
    def _scale(self, name: str) -> None:
        """Multiply the controlled value by the action's :func:`factor`."""
        if self.control == "lr":
            self.alpha *= factor("lr", name)
        else:
            self.lam *= factor("l2", name)

    def _propose(self) -> None:
        """The candidate ``anchor + alpha d``, its value and the gradient there."""
        self.candidate = self.anchor + self.alpha * self.direction
        self.candidate_value = self._value(self.candidate)
        self.candidate_grad = self.problem.grad(self.candidate)
        self.gradients += 1
        v, lows = self.candidate_value, self.lowest
        self.rank = 1.0 if v <= min(lows) else 0.0 if v <= max(lows) else -1.0
        self._remember(v)

    def _remember(self, v: float) -> None:
        self.recent.append(v)
        self.lowest = sorted([*self.lowest, v])[: self.memory]

    def _observe(self) -> np.ndarray:
        hyper = self.alpha / self.alpha_0 if self.control == "lr" else self.lam / self.lambda_0
        return features(
            hyper,
            self.anchor_value,
            self.candidate_value,
            max(self.recent),
            self.direction,
            -self.candidate_grad,
            self.previous,
            self.rank,
        )

    def _info(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "lambda": self.lam,
            "value": self.candidate_value,
            "anchor_value": self.anchor_value,
            "evaluations": self.evaluations,
            "gradients": self.gradients,
        }
