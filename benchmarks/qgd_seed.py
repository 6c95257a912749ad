"""The seed's experiment: Q-gradient descent on the 3072-100-50-10 sigmoid MLP.

    python benchmarks/qgd_seed.py --lr-policy DIR [--l2-policy DIR] [--seeds 10] [--first-seed 0]
        [--data cifar10,digits,breast_cancer,wine] [--data-dir DIR] [--inputs pixels] [--plot DIR]

The objective net of seed 001 (:mod:`tune_app.controller.qgd_seed`): an
``inputs-100-50-classes`` MLP with sigmoid hidden layers, plain full-batch gradient
descent, the policy's ``steps`` (100) at its ``alpha_c`` (1). Every controller
plays the same episodes (seed ``i``: the same training rows and initial weights);
a rejected step costs one objective evaluation, as an accepted one does.

* ``lr`` (``--lr-policy``): Q-gradient descent against plain gradient descent at
  ``alpha_c`` (the policy's, or ``--alpha-c``), Armijo backtracking (Hansen's
  baseline) and the best of ``--grid`` fixed rates *per net* by the final
  training loss (an oracle), on ``--rows`` training rows;
* ``l2`` (``--l2-policy``): the lambda controller in the seed's overfitting setting
  (``--l2-rows`` 1,000 training rows) against a fixed ``lambda_c``, the best of
  ``--lambda-grid`` per net by the final validation error (an oracle), and
  ``lower every step`` (lambda halved after every step: a check of whether the
  net overfits within the episode at all).

It prints, per data set, each controller's mean final training loss, validation
error, test accuracy, evaluations and accepted steps, and Q-gradient descent against each
baseline: wins/ties/losses over the episodes and the paired Wilcoxon p-value, on
the training loss (``lr``) or validation error (``l2``), and on test accuracy.

``--plot DIR`` also draws the seed's figures 10 and 11 per data set and control
(``DIR/qgd_seed_<control>_<data>.png``): the mean test accuracy and training
loss (``l2``: validation error) of the anchor after every step, Q-gradient
descent against its baselines, and the hyperparameter Q-gradient descent chose
in its first episode (the seed's "adjusting pattern" figures).

``cifar10`` reads CIFAR-10's python batches from ``--data-dir``; without one it
writes synthetic batches in the real format (``inner_service``'s noisy fixtures)
and the table says so: those numbers are not CIFAR-10's. ``digits``,
``breast_cancer`` and ``wine`` are scikit-learn's bundled real data sets. Inputs are
standardised; ``--inputs pixels`` keeps the image sets' own scale (``cifar10``,
``digits``: pixels / 255, / 16), where plain descent is slower.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's tune_app, and tests.tasks.fixtures

from inner_service import SYNTHETIC_NOISE  # noqa: E402
from qgd_controller import paired  # noqa: E402

from tune_app.controller import qgd_eval  # noqa: E402
from tune_app.controller.qgd_seed import DATASETS, INPUTS, load_data, seed_problems  # noqa: E402
from tune_app.controller.qgd_train import load  # noqa: E402


def _table(
    title: str, runs: dict[str, list[dict[str, float]]], measure: str, evaluations: bool = True
) -> None:
    """One data set's table: means, and qgd against every other controller."""
    col = {k: {m: np.array([r[m] for r in v]) for m in runs["qgd"][0]} for k, v in runs.items()}
    print(title)
    print(
        f"| controller | training loss | validation error | test accuracy | evaluations "
        f"| accepted steps | qgd vs it: {measure} (W/T/L, p) "
        f"| qgd vs it: test accuracy (W/T/L, p) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, c in col.items():
        versus = ("", "")
        if name != "qgd":
            q = col["qgd"]
            versus = (
                paired(q[measure], c[measure]),
                paired(-q["test_accuracy"], -c["test_accuracy"]),
            )
        print(
            f"| {name} | {c['loss'].mean():.4f} | {c['val_error'].mean():.4f} "
            f"| {c['test_accuracy'].mean():.4f} | {c['evaluations'].mean():.0f} "
            f"| {c['accepts'].mean():.0f} | {versus[0]} | {versus[1]} |"
        )
    print(flush=True)


def _plot(path: Path, title: str, traces: qgd_eval.Traces, control: str) -> None:
    """Mean anchor curves over the episodes per controller, and qgd's first episode's
    hyperparameter: the seed's figures 10-11 and 7-9."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measure = "loss" if control == "lr" else "val_error"
    label = "training loss" if control == "lr" else "validation error"
    fig, axes = plt.subplots(1, 3, figsize=(15, 4), layout="constrained")
    styles = {  # the seed's colours: red Q-gradient descent, blue plain gradient descent
        "qgd": {"color": "tab:red"},
        "plain": {"color": "tab:blue"},
        "fixed lambda_c": {"color": "tab:blue"},
        "armijo": {"color": "tab:green", "linestyle": "--"},
    }
    for name, episodes in traces.items():
        steps = np.arange(1, len(episodes[0]) + 1)
        for ax, key in zip(axes[:2], ("test_accuracy", measure), strict=True):
            mean = np.mean([[t[key] for t in ep] for ep in episodes], axis=0)
            ax.plot(steps, mean, label=name, **styles.get(name, {}))
    first = traces["qgd"][0]
    axes[2].step(np.arange(1, len(first) + 1), [t["hyper"] for t in first], color="tab:red")
    axes[0].set_ylabel("test accuracy")
    axes[1].set_ylabel(label)
    axes[1].set_yscale("log")
    axes[2].set_ylabel("alpha" if control == "lr" else "lambda")
    axes[2].set_yscale("log")
    axes[2].set_title("Q-gradient descent, episode 0", fontsize=10)
    for ax in axes:
        ax.set_xlabel("step (objective evaluations)")
    axes[0].legend()
    n = len(traces["qgd"])
    fig.suptitle(f"{title}: mean over {n} episodes", fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    print(f"figure: {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lr-policy", type=Path, default=None)
    ap.add_argument("--l2-policy", type=Path, default=None)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument(
        "--first-seed", type=int, default=0, help="episodes use seeds first..first+seeds-1"
    )
    ap.add_argument("--data", default=",".join(DATASETS))
    ap.add_argument("--data-dir", type=Path, default=None, help="holds cifar-10-batches-py")
    ap.add_argument("--inputs", default=INPUTS[0], choices=INPUTS, help="how inputs are scaled")
    ap.add_argument("--rows", type=int, default=2000, help="training rows per lr episode")
    ap.add_argument("--l2-rows", type=int, default=1000, help="training rows per l2 episode")
    ap.add_argument(
        "--alpha-c", type=float, default=None, help="the reset rate (default: the policy's)"
    )
    ap.add_argument("--grid", default="0.1,0.3,1,3,10", help="fixed rates of the lr oracle")
    ap.add_argument("--lambda-grid", default="0.0001,0.001,0.01,0.03,0.1")
    ap.add_argument("--plot", type=Path, default=None, help="draw the seed's figures here")
    args = ap.parse_args()
    if args.lr_policy is None and args.l2_policy is None:
        raise SystemExit("give --lr-policy DIR, --l2-policy DIR or both")
    names, first = args.data.split(","), args.first_seed
    unknown = sorted(set(names) - set(DATASETS))
    if unknown:
        raise SystemExit(f"--data: unknown {unknown}; choose from {', '.join(DATASETS)}")
    data_dir, cifar_source = args.data_dir, "real CIFAR-10"
    if "cifar10" in names and data_dir is None:
        from tests.tasks.fixtures import write_cifar10

        tmp = Path(tempfile.mkdtemp(prefix="qgd-seed-"))
        data_dir = write_cifar10(tmp / "data", per_batch=1000, noise=SYNTHETIC_NOISE)
        cifar_source = f"synthetic CIFAR-10-format batches, noise {SYNTHETIC_NOISE}"
    lr_policy = load(args.lr_policy) if args.lr_policy is not None else None
    l2_policy = load(args.l2_policy) if args.l2_policy is not None else None
    t0 = time.perf_counter()
    for name in names:
        data = load_data(name, data_dir, args.inputs)
        source = cifar_source if name == "cifar10" else "real, bundled with scikit-learn"
        tag = name
        if args.inputs != INPUTS[0]:
            source, tag = f"{source}; inputs {args.inputs}", f"{name}_{args.inputs}"
        shape = f"{data.x_pool.shape[1]}-100-50-{data.classes}"
        if lr_policy is not None:
            env = qgd_eval.policy_env(lr_policy)
            env.update(
                problems=seed_problems(data, args.rows), alpha_c=args.alpha_c or env["alpha_c"]
            )
            traces: qgd_eval.Traces | None = {} if args.plot else None
            runs = {"qgd": qgd_eval.play(lr_policy, args.seeds, env, first, False, traces)}
            baselines = {"plain": qgd_eval.plain, "armijo": qgd_eval.armijo}
            runs.update(qgd_eval.compare(baselines, args.seeds, env, first, False, traces))
            grid = [float(a) for a in args.grid.split(",")]
            runs["best fixed rate"] = qgd_eval.best_fixed(
                args.seeds, env, "alpha_c", grid, "loss", first, False
            )
            _table(
                f"lr, {name} ({source}), net {shape}, {min(args.rows, len(data.y_pool))} "
                f"training rows, {env['steps']} steps, alpha_c {env['alpha_c']}, {args.seeds} "
                f"seeds, policy {args.lr_policy} ({time.perf_counter() - t0:.0f} s)",
                runs,
                "loss",
            )
            if args.plot and traces:
                _plot(args.plot / f"qgd_seed_lr_{tag}.png", f"lr, {name} ({source})", traces, "lr")
        if l2_policy is not None:
            env = {**qgd_eval.policy_env(l2_policy), "problems": seed_problems(data, args.l2_rows)}
            traces = {} if args.plot else None
            runs = {"qgd": qgd_eval.play(l2_policy, args.seeds, env, first, False, traces)}
            fixed = {"fixed lambda_c": qgd_eval.plain}
            runs.update(qgd_eval.compare(fixed, args.seeds, env, first, False, traces))
            steer = {**env, "variant": "steer"}  # lambda halved at every step
            lower = {"lower every step": qgd_eval.lower}
            runs.update(qgd_eval.compare(lower, args.seeds, steer, first, False, traces))
            grid = [float(a) for a in args.lambda_grid.split(",")]
            runs["best fixed lambda"] = qgd_eval.best_fixed(
                args.seeds, env, "lambda_c", grid, "val_error", first, False
            )
            _table(
                f"l2, {name} ({source}), net {shape}, {min(args.l2_rows, len(data.y_pool))} "
                f"training rows, {env['steps']} steps, alpha_c {env['alpha_c']}, lambda_c "
                f"{env['lambda_c']}, {args.seeds} seeds from {first}, "
                f"policy {args.l2_policy} "
                f"({time.perf_counter() - t0:.0f} s)",
                runs,
                "val_error",
            )
            low, fix = (
                [r["val_error"] for r in runs[k]] for k in ("lower every step", "fixed lambda_c")
            )
            versus = paired(np.array(low), np.array(fix))
            print(f"lower every step vs fixed lambda_c: val_error {versus}\n")
            if args.plot and traces:
                _plot(args.plot / f"qgd_seed_l2_{tag}.png", f"l2, {name} ({source})", traces, "l2")
    print(f"wall time: {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
