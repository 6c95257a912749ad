"""What the inner controller did in a tracking store's trials: its actions and how
far it moved the rate (or L2 coefficient) from the value each trial started at.

    python benchmarks/inner_actions.py --tracking-uri sqlite:///DIR/mlflow.db

For every experiment and control it prints the trials the controller ran in, its
actions per name (``inner_record.CODES``), and the median, lowest and highest
``log2(last value / first value)`` over the trials: a policy that halves the rate
away (a large negative median) or doubles it past any sensible rate (a large
positive one) shows here. ``inner_service.py`` prints it for its own store.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's tune_app

from tune_app.controller.inner_record import ALPHA, CODES, LAMBDA, action_key

VALUES = {"lr": ALPHA, "l2": LAMBDA}
NAMES = {code: name for name, code in CODES.items()}


def summarise(tracking_uri: str) -> list[str]:
    """One line per experiment and control the inner controller acted in."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    lines = []
    for exp in client.search_experiments():
        runs = client.search_runs([exp.experiment_id], max_results=50_000)
        for control, value_key in VALUES.items():
            actions: Counter[str] = Counter()
            moves = []
            for run in runs:
                if action_key(control) not in run.data.metrics:
                    continue
                history = client.get_metric_history(run.info.run_id, action_key(control))
                actions.update(NAMES.get(m.value, str(m.value)) for m in history)
                values = sorted(
                    client.get_metric_history(run.info.run_id, value_key),
                    key=lambda m: (m.step, m.timestamp),
                )
                if values and values[0].value > 0 and values[-1].value > 0:
                    moves.append(math.log2(values[-1].value / values[0].value))
            if not moves:
                continue
            counts = ", ".join(f"{name} {n}" for name, n in sorted(actions.items()))
            lines.append(
                f"{exp.name}: {control} controller in {len(moves)} trials; actions: {counts}; "
                f"log2(last/first {value_key}) median {statistics.median(moves):+.1f}, "
                f"range {min(moves):+.1f} .. {max(moves):+.1f}"
            )
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tracking-uri", required=True, help="e.g. sqlite:///DIR/mlflow.db")
    args = ap.parse_args()
    lines = summarise(args.tracking_uri)
    print("\n".join(lines) if lines else "no trial of this store ran an inner controller")
    return 0


if __name__ == "__main__":
    sys.exit(main())
