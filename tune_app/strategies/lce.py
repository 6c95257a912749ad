"""``lce``: learning-curve extrapolation (after Domhan, Springenberg and Hutter,
IJCAI 2015) as a Tune scheduler that stops trials unlikely to win.

After each epoch from ``min_epochs`` on, the trial's curve so far is fitted with a
small ensemble of parametric learning-curve models (:data:`MODELS`: power law,
exponential saturation, Hill, inverse-log), each by least squares
(:func:`scipy.optimize.curve_fit`). Each model predicts the value at the last
epoch (``max_epochs``) as a Gaussian: its extrapolation, with the variance of the
extrapolation from the fit's parameter covariance (delta method), the residual
noise, and at least the last step's size continued as a random walk over the
epochs left. The ensemble's prediction is the mixture of the models that fitted,
weighted by their fits' BIC (a model that misses the curve counts for little).
The trial is stopped when the probability that its final value beats the
*incumbent* (the best value any trial reached at the last epoch) is below
``threshold``; until some trial has finished its last epoch, nothing is stopped.
Values are compared as "higher is better" (a ``min`` metric is negated).

Named as the strategy it runs random search; it composes with any searcher
(``--strategy optuna --scheduler lce``), as ``asha`` does. numpy and scipy only.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler
from scipy import optimize, stats

from tune_app.spaces import SearchSpace
from tune_app.strategies.base import StrategyPlugin, metric_value
from tune_app.strategies.options import LCEOptions as Options
from tune_app.strategies.options import parse_options

Curve = Callable[..., Any]


@dataclass(frozen=True)
class CurveModel:
    """One parametric family ``f(t, *theta)`` with a start point and bounds for
    ``theta`` (on the scaled axes: ``t`` in (0, 1], values centred and scaled)."""

    name: str
    f: Curve
    p0: tuple[float, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]


def _pow3(t: Any, c: float, a: float, alpha: float) -> Any:
    return c - a * np.power(t, -alpha)


def _exp3(t: Any, c: float, a: float, b: float) -> Any:
    return c - a * np.exp(-b * t)


def _hill3(t: Any, c: float, eta: float, kappa: float) -> Any:
    return c * np.power(t, eta) / (np.power(kappa, eta) + np.power(t, eta))


def _ilog2(t: Any, c: float, a: float) -> Any:
    return c - a / np.log(t * 10.0 + 1.0)


INF = np.inf
FLOOR = 1.0
MSE_FLOOR = 1e-4  # (1% of the curve's range)^2: fits closer than this all tie
MODELS: tuple[CurveModel, ...] = (
    CurveModel("pow3", _pow3, (1.0, 0.1, 0.5), (-INF, -INF, 1e-3), (INF, INF, 5.0)),
    CurveModel("exp3", _exp3, (1.0, 1.0, 2.0), (-INF, -INF, 1e-3), (INF, INF, 50.0)),
    CurveModel("hill3", _hill3, (1.0, 1.0, 0.5), (-INF, 1e-2, 1e-3), (INF, 10.0, 10.0)),
    CurveModel("ilog2", _ilog2, (1.0, 1.0), (-INF, -INF), (INF, INF)),
)


def predict(
    epochs: Sequence[float], values: Sequence[float], horizon: float
) -> list[tuple[str, float, float, float]]:
    """Each model's prediction of the value at ``horizon``: ``(name, mean, sd,
    weight)``, the weights from the fits' BIC (summing to 1).

    ``values`` are "higher is better". Models whose fit fails or whose prediction is
    not finite are left out.
    """
    t = np.asarray(epochs, dtype=float) / horizon
    y = np.asarray(values, dtype=float)
    centre = float(y[-1])
    scale = float(max(np.ptp(y), 1e-3 * max(abs(centre), 1.0), 1e-9))
    z = (y - centre) / scale
    out = []
    for m in MODELS:
        k = len(m.p0)
        if len(z) <= k:  # no residual left to estimate the noise from
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                theta, cov = optimize.curve_fit(
                    m.f, t, z, p0=m.p0, bounds=(m.lower, m.upper), maxfev=2000
                )
        except (RuntimeError, ValueError, optimize.OptimizeWarning):
            continue
        resid = z - m.f(t, *theta)
        dof = max(len(z) - k, 1)
        noise = float(resid @ resid) / dof
        mean = float(m.f(1.0, *theta))
        # Delta method: variance of f(1) from the parameters' covariance.
        grad = np.array(
            [
                (m.f(1.0, *(theta + e)) - m.f(1.0, *(theta - e))) / (2 * h)
                for h, e in ((h, h * np.eye(k)[i]) for i, h in enumerate(_steps(theta)))
            ]
        )
        var = float(grad @ cov @ grad) if np.all(np.isfinite(cov)) else math.inf
        # Few points say little of the noise: at least the last step's size, as a
        # random walk over the steps left (variance growing with their number).
        steps_left = (1.0 - t[-1]) / max(t[-1] - t[-2], 1e-9)
        floor = FLOOR * (z[-1] - z[-2]) ** 2 * steps_left
        sd = math.sqrt(min(var, 1e6) + noise + floor + 1e-12)
        if math.isfinite(mean) and math.isfinite(sd):
            mse = max(float(resid @ resid) / len(z), MSE_FLOOR)
            bic = len(z) * math.log(mse) + k * math.log(len(z))
            out.append((m.name, centre + scale * mean, scale * sd, bic))
    if not out:
        return []
    # BIC weights: a model that fits the curve badly counts for little.
    best = min(b for *_, b in out)
    weights = [math.exp(-0.5 * (b - best)) for *_, b in out]
    total = sum(weights)
    return [(n, mu, sd, w / total) for (n, mu, sd, _), w in zip(out, weights, strict=True)]


def _steps(theta: Any) -> list[float]:
    return [1e-6 * max(abs(float(x)), 1.0) for x in theta]


def p_beats(predictions: Sequence[tuple[str, float, float, float]], incumbent: float) -> float:
    """P(final value > ``incumbent``) under the weighted mixture of ``predictions``."""
    if not predictions:
        return 1.0
    return float(
        sum(w * stats.norm.sf(incumbent, loc=mu, scale=sd) for _, mu, sd, w in predictions)
    )


class LearningCurveScheduler(FIFOScheduler):
    """Stops a trial when its extrapolated final value is unlikely to beat the incumbent."""

    def __init__(
        self,
        metric: str,
        mode: str,
        max_t: int,
        min_epochs: int = 3,
        threshold: float = 0.05,
        time_attr: str = "epoch",
    ) -> None:
        super().__init__()
        self._metric, self._mode = metric, mode
        self._time_attr = time_attr
        self.max_t, self.min_epochs, self.threshold = max_t, min_epochs, threshold
        self.curves: dict[str, dict[int, float]] = {}  # trial_id -> epoch -> value (higher=better)
        self.incumbent: float | None = None  # best value reached at max_t (higher=better)
        self.decisions: dict[str, dict[str, Any]] = {}  # trial_id -> last prediction

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        """Metric and mode come from the space; keep Tune's only where none is set."""
        self._metric = self._metric or metric or ""
        self._mode = self._mode or mode or "max"
        return True

    def _sign(self) -> float:
        return -1.0 if self._mode == "min" else 1.0

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict[str, Any]) -> str:
        """Record the epoch; stop the trial if it cannot be expected to win."""
        value = metric_value(result, self._metric or "")
        if value is None or self._time_attr not in result:
            return TrialScheduler.CONTINUE
        epoch = int(result[self._time_attr])
        curve = self.curves.setdefault(trial.trial_id, {})
        curve[epoch] = self._sign() * value
        if epoch >= self.max_t:
            if self.incumbent is None or curve[epoch] > self.incumbent:
                self.incumbent = curve[epoch]
            return TrialScheduler.CONTINUE
        if epoch < self.min_epochs or self.incumbent is None:
            return TrialScheduler.CONTINUE
        xs = sorted(curve)
        preds = predict(xs, [curve[x] for x in xs], self.max_t)
        p = p_beats(preds, self.incumbent)
        self.decisions[trial.trial_id] = {"epoch": epoch, "p_beats": p, "models": len(preds)}
        return TrialScheduler.STOP if p < self.threshold else TrialScheduler.CONTINUE

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        """Forget a removed trial's curve."""
        self.curves.pop(trial.trial_id, None)

    def debug_string(self) -> str:
        """One line for Tune's status output."""
        stopped = sum(1 for d in self.decisions.values() if d["p_beats"] < self.threshold)
        return f"LearningCurveScheduler: {stopped} trial(s) stopped by extrapolation"

    def save(self, checkpoint_path: str) -> None:
        """The curves, incumbent and last predictions as JSON (no pickle)."""
        curves = {t: {str(e): v for e, v in c.items()} for t, c in self.curves.items()}
        state = {"curves": curves, "incumbent": self.incumbent, "decisions": self.decisions}
        with open(checkpoint_path, "w") as fh:
            json.dump(state, fh)

    def restore(self, checkpoint_path: str) -> None:
        """Read what :meth:`save` wrote."""
        with open(checkpoint_path) as fh:
            state = json.load(fh)
        self.curves = {
            t: {int(e): float(v) for e, v in c.items()} for t, c in state["curves"].items()
        }
        self.incumbent = state["incumbent"]
        self.decisions = state["decisions"]


def min_epochs(space: SearchSpace, options: Mapping[str, Any] | None) -> int:
    """The fewest epochs a trial can run under this scheduler."""
    return min(parse_options(Options, "lce", options).min_epochs, space.max_epochs)


def build(
    space: SearchSpace, metric: str, mode: str, seed: int, options: Mapping[str, Any] | None
) -> TrialScheduler:
    """A :class:`LearningCurveScheduler` over the epoch axis, up to ``max_epochs``."""
    opts = parse_options(Options, "lce", options)
    return LearningCurveScheduler(
        metric, mode, space.max_epochs, min_epochs=opts.min_epochs, threshold=opts.threshold
    )


PLUGIN = StrategyPlugin(build=build, options=Options, min_epochs=min_epochs)
