"""Q-gradient descent against gradient descent, Armijo line search and the best
fixed learning rate, on held-out generated objective nets (paired by net).

    .venv/bin/python benchmarks/qgd_controller.py --policy DIR --episodes 20
    .venv/bin/python benchmarks/qgd_controller.py --policy DIR --train 30   # train first

``DIR`` is a policy from :func:`tune_app.controller.qgd_train.train` (with
``--train N``: N iterations of it on an embedded Ray, written to ``DIR``, with
``--set KEY=VALUE`` for any other ``QGDSettings`` field). Every controller plays
the same nets (seeds from ``--first-seed``, by default ``qgd_eval.HELD_OUT``, never
used in pretraining), the same number of steps from the same start:

* ``plain``: gradient descent at ``alpha_c``;
* ``armijo``: backtracking line search (Hansen's baseline);
* ``descent``: ``half`` while the candidate is worse than the anchor, else ``accept``;
* ``best fixed``: gradient descent at the best of ``--grid`` rates *for each net*
  (an oracle: it sees the results of every rate);
* ``qgd``: the policy's greedy actions.

It prints the mean final training loss (the final anchor's cross-entropy on all
the training rows), its geometric mean ratio to plain gradient descent's (per
net), the mean final anchor value the environment saw (for a mini-batch net one
batch's loss: a noisy measure, shown for comparison with earlier tables), the
mean objective evaluations, and for ``qgd`` against each baseline the
wins/ties/losses of the final training loss over the nets and the paired Wilcoxon
p-value.

A policy pretrained on the training loop's blocks (``--set env=block``,
:mod:`tune_app.controller.qgd_block`: ``every`` Adam or SGD steps per decision)
plays against ``plain`` (always ``accept``: the optimizer at its reset rate) and
``descent`` on held-out block episodes, compared by the final training loss
(the geometric mean ratio floors a loss at ``FLOOR``: a net can fit its rows
exactly) and validation error; "blocks kept" counts the decisions that kept
their block (``accept`` or ``grow``).

``--control l2`` (a policy trained for ``l2``, on the overfitting nets ``generate``
makes for it): the lambda controller against a fixed ``lambda_c`` (``plain``)
and the best of ``--lambda-grid`` fixed coefficients per net by the final
validation error (an oracle), compared on the final validation error.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's tune_app, as the other benchmarks do

from tune_app.controller import qgd_eval  # noqa: E402
from tune_app.controller.qgd_train import load  # noqa: E402

FLOOR = 1e-6  # the block table's smallest loss in a ratio


def paired(a: np.ndarray, b: np.ndarray) -> str:
    """Wins/ties/losses of ``a`` against ``b`` (lower is better) and Wilcoxon's p."""
    wins, losses = int((a < b).sum()), int((a > b).sum())
    ties = len(a) - wins - losses
    p = stats.wilcoxon(a, b, zero_method="zsplit").pvalue if wins + losses else 1.0
    return f"{wins}/{ties}/{losses} p={p:.3g}"


def overrides(pairs: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs as QGDSettings fields, typed like the field's default."""
    from tune_app.controller.qgd_train import QGDSettings

    defaults = asdict(QGDSettings())
    out: dict[str, Any] = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key not in defaults or key in ("control", "iterations"):
            raise SystemExit(f"--set {pair}: not a QGDSettings field one may set")
        kind = type(defaults[key])
        if kind is tuple:
            out[key] = tuple(int(v) for v in value.split(","))
        else:
            out[key] = kind(value)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policy", type=Path, required=True)
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--control", default="lr", choices=["lr", "l2"])
    parser.add_argument("--grid", default="0.03,0.1,0.3,1,3")
    parser.add_argument("--lambda-grid", default="0.0001,0.001,0.01,0.03,0.1")
    parser.add_argument("--train", type=int, default=0, help="pretrain N iterations first")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a QGDSettings field for --train (e.g. reward=log, gamma=0.99, hidden=64,64)",
    )
    parser.add_argument("--num-cpus", type=int, default=None, help="the embedded Ray's CPUs")
    parser.add_argument("--tracking-uri", default=None, help="log --train to this MLflow store")
    parser.add_argument(
        "--first-seed",
        type=int,
        default=qgd_eval.HELD_OUT,
        help="the first held-out net's seed (keep the nets you choose on apart from the "
        "nets you report on)",
    )
    args = parser.parse_args()
    if args.train:
        from tune_app.controller.qgd_train import QGDSettings, train
        from tune_app.run.placement import ensure_ray

        settings = QGDSettings(control=args.control, iterations=args.train, **overrides(args.set))
        ensure_ray(num_cpus=args.num_cpus)
        train(settings, out=args.policy, tracking_uri=args.tracking_uri)
    policy = load(args.policy)
    if policy.manifest["control"] != args.control:
        raise SystemExit(f"{args.policy} controls {policy.manifest['control']}, not {args.control}")
    s = policy.manifest["settings"]
    env = qgd_eval.policy_env(policy)
    t0 = time.perf_counter()
    if args.control == "l2":
        _lambda_table(args, policy, env, t0)
        return
    if env.get("env") == "block":
        _block_table(args, policy, env, t0)
        return
    controllers = {
        "plain": qgd_eval.plain,
        "armijo": qgd_eval.armijo,
        "descent": qgd_eval.descent,
    }
    runs = qgd_eval.compare(controllers, args.episodes, env, args.first_seed)
    runs["qgd"] = qgd_eval.play(policy, args.episodes, env, args.first_seed)
    grid = [float(a) for a in args.grid.split(",")]
    # best by the measure reported: the full training loss
    runs["best fixed"] = qgd_eval.best_fixed(
        args.episodes, env, "alpha_c", grid, "loss", args.first_seed
    )
    loss = {k: np.array([r["loss"] for r in v]) for k, v in runs.items()}
    value = {k: np.mean([r["value"] for r in v]) for k, v in runs.items()}
    evals = {k: np.mean([r["evaluations"] for r in v]) for k, v in runs.items()}
    # the geometric mean of the final loss over plain gradient descent's, per net
    ratio = {k: float(np.exp(np.mean(np.log(v / loss["plain"])))) for k, v in loss.items()}
    print(
        f"lr controller, {args.episodes} held-out nets (seeds {args.first_seed}-"
        f"{args.first_seed + args.episodes - 1}), {s['steps']} steps, alpha_c {s['alpha_c']}, "
        f"policy {args.policy} (reward {s.get('reward', 'seed')})"
    )
    print(
        "| controller | final training loss | geo. mean ratio to plain | final anchor value "
        "| evaluations | qgd vs it (W/T/L, p) |"
    )
    print("|---|---|---|---|---|---|")
    for name in ("plain", "armijo", "descent", "best fixed", "qgd"):
        versus = "" if name == "qgd" else paired(loss["qgd"], loss[name])
        print(
            f"| {name} | {loss[name].mean():.4f} | {ratio[name]:.3f} | {value[name]:.4f} "
            f"| {evals[name]:.0f} | {versus} |"
        )
    print(f"wall time: {time.perf_counter() - t0:.0f} s")


def _block_table(args: argparse.Namespace, policy: Any, env: dict[str, Any], t0: float) -> None:
    """A policy pretrained on the training loop's blocks (``env=block``) against
    plain training at the reset rate and ``descent``, by the final training loss."""
    runs = qgd_eval.compare(
        {"plain": qgd_eval.plain, "descent": qgd_eval.descent}, args.episodes, env, args.first_seed
    )
    runs["qgd"] = qgd_eval.play(policy, args.episodes, env, args.first_seed)
    loss = {k: np.array([r["loss"] for r in v]) for k, v in runs.items()}
    error = {k: np.array([r["val_error"] for r in v]) for k, v in runs.items()}
    kept = {k: np.mean([r["accepts"] for r in v]) for k, v in runs.items()}
    # a net fitted exactly (loss 0 in float32) counts as FLOOR: the ratio stays finite
    floored = {k: np.maximum(v, FLOOR) for k, v in loss.items()}
    ratio = {k: float(np.exp(np.mean(np.log(v / floored["plain"])))) for k, v in floored.items()}
    print(
        f"lr controller on blocks of {env['every']} optimizer steps "
        f"({'/'.join(env['optimizers'])}), {args.episodes} held-out nets (seeds "
        f"{args.first_seed}-{args.first_seed + args.episodes - 1}), {env['steps']} decisions, "
        f"policy {args.policy}"
    )
    print(
        "| controller | final training loss | geo. mean ratio to plain | validation error "
        "| blocks kept | qgd vs it: loss (W/T/L, p) | qgd vs it: validation error (W/T/L, p) |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in ("plain", "descent", "qgd"):
        versus = (
            ("", "")
            if name == "qgd"
            else (
                paired(loss["qgd"], loss[name]),
                paired(error["qgd"], error[name]),
            )
        )
        print(
            f"| {name} | {loss[name].mean():.4f} | {ratio[name]:.3f} | {error[name].mean():.4f} "
            f"| {kept[name]:.0f} | {versus[0]} | {versus[1]} |"
        )
    print(f"wall time: {time.perf_counter() - t0:.0f} s")


def _lambda_table(args: argparse.Namespace, policy: Any, env: dict[str, Any], t0: float) -> None:
    """The l2 controller against a fixed and the best fixed coefficient, by the final
    validation error."""
    runs = qgd_eval.compare({"fixed lambda_c": qgd_eval.plain}, args.episodes, env, args.first_seed)
    runs["qgd"] = qgd_eval.play(policy, args.episodes, env, args.first_seed)
    grid = [float(v) for v in args.lambda_grid.split(",")]
    runs["best fixed lambda"] = qgd_eval.best_fixed(
        args.episodes, env, "lambda_c", grid, "val_error", args.first_seed
    )
    error = {k: np.array([r["val_error"] for r in v]) for k, v in runs.items()}
    loss = {k: np.mean([r["loss"] for r in v]) for k, v in runs.items()}
    print(
        f"l2 controller, {args.episodes} held-out nets (seeds {args.first_seed}-"
        f"{args.first_seed + args.episodes - 1}), {env['steps']} steps, alpha_c "
        f"{env['alpha_c']}, lambda_c {env['lambda_c']}, policy {args.policy}"
    )
    print("| controller | final validation error | final training loss | qgd vs it (W/T/L, p) |")
    print("|---|---|---|---|")
    for name in ("fixed lambda_c", "best fixed lambda", "qgd"):
        versus = "" if name == "qgd" else paired(error["qgd"], error[name])
        print(f"| {name} | {error[name].mean():.4f} | {loss[name]:.4f} | {versus} |")
    print(f"wall time: {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
