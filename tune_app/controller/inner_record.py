"""What the inner controller records, and its plot (no torch: the driver reads it).

Each controller step is one row ``{"step": optimizer step, "inner_alpha": lr,
"inner_lambda": weight_decay, "inner_action_<control>": code}`` (the values the
block ran with, of the first param group; the action's code is -1 ``half``, 0
``accept``, +1 ``up``; the departures' +2 ``grow``, -2 ``lower``, +3 ``raise``).
The trial sends the rows since its last report under
:data:`REPORT_KEY` in each epoch's report, as one JSON string (Tune's own result
loggers skip a string quietly; a list makes its TensorBoard logger warn); the
tracking callback journals them
with the epoch's result, the outbox logs each value as an MLflow metric with
``step`` = the optimizer step, and at the trial's end :func:`plot` draws them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPORT_KEY = "inner_steps"
ALPHA, LAMBDA = "inner_alpha", "inner_lambda"
CODES = {"half": -1.0, "accept": 0.0, "up": 1.0, "grow": 2.0, "lower": -2.0, "raise": 3.0}
MARKS = (  # code, marker, colour, name
    (-1.0, "v", "tab:red", "half"),
    (1.0, "^", "tab:green", "up"),
    (2.0, "^", "tab:purple", "grow"),
    (-2.0, "v", "tab:orange", "lower"),
    (3.0, "^", "tab:olive", "raise"),
)


def action_key(control: str) -> str:
    """The metric name of ``control``'s action."""
    return f"inner_action_{control}"


def encode(rows: Sequence[dict[str, float]]) -> str:
    """Rows as the report's :data:`REPORT_KEY` value."""
    return json.dumps(list(rows), separators=(",", ":"))


def clean(text: Any) -> list[dict[str, float]]:
    """The well-formed rows of a report's :data:`REPORT_KEY` value (finite numbers
    only, each with its ``step``); anything malformed: no rows."""
    try:
        rows = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        return []
    out = []
    for row in rows if isinstance(rows, list) else []:
        if not isinstance(row, dict) or not isinstance(row.get("step"), int | float):
            continue
        out.append(
            {
                str(k): float(v)
                for k, v in row.items()
                if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
            }
        )
    return out


def plot(rows: Sequence[dict[str, float]], path: Path, title: str) -> Path:
    """The controlled values over optimizer steps (log scale), in the seed's style
    (its "adjusting pattern" figures: alpha against steps), with every
    action but ``accept`` marked; one panel per value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(ALPHA, "alpha (lr)", "lr"), (LAMBDA, "lambda (weight_decay)", "l2")]
    shown = [p for p in panels if any(action_key(p[2]) in r for r in rows)] or panels[:1]
    fig, axes = plt.subplots(len(shown), 1, figsize=(8, 3 * len(shown)), sharex=True, dpi=100)
    axes = list(axes) if len(shown) > 1 else [axes]
    steps = [r["step"] for r in rows]
    for ax, (key, label, control) in zip(axes, shown, strict=True):
        values = [r.get(key, math.nan) for r in rows]
        # A row ends its block: each value spans the K steps before its row's step.
        start = max(0.0, 2 * steps[0] - steps[1]) if len(steps) > 1 else 0.0
        ax.step([start, *steps], [values[0], *values], where="pre", color="tab:blue", lw=1.2)
        if any(v > 0 for v in values):
            ax.set_yscale("log")
        for code, marker, colour, name in MARKS:
            codes = [r.get(action_key(control)) for r in rows]
            hits = [(s, v) for s, v, c in zip(steps, values, codes, strict=True) if c == code]
            if hits:
                ax.scatter(*zip(*hits, strict=True), marker=marker, color=colour, s=18, label=name)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize=9)
    axes[-1].set_xlabel("optimizer step")
    axes[0].set_title(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
