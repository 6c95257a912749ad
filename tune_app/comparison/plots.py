"""The comparison report's plots, sized for MLflow's artifact preview.

Anytime curves (best so far against epochs or wall time), the metric heatmap over
two hyperparameters, and the values each strategy chose, trial by trial. Every PNG
is at most 1400 x 1200 px with text >= 9 pt, one colour scale (and one colour
bar) per figure where colour is a value, and one marker and line style per
strategy so that identical curves stay visible.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable, Sequence
from numbers import Integral, Real
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec

import numpy as np
import pandas as pd

from tune_app.comparison.report import Study, anytime
from tune_app.errors import ConfigError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

P = ParamSpec("P")

# Sized for MLflow's artifact preview (about 900 px wide): every PNG is at most
# 1400 x 1200 px and no text is under 9 pt, so it stays >= 8 px when scaled down.
DPI = 100
MAX_W_IN, MAX_H_IN = 13.5, 11.5
TEXT_PT = 9  # tick labels, legends, colour bars, cell values
STYLE = {
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "xtick.labelsize": TEXT_PT,
    "ytick.labelsize": TEXT_PT,
    "legend.fontsize": TEXT_PT,
    "legend.title_fontsize": TEXT_PT,
    "figure.titlesize": 11,
}
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
LINESTYLES = ("-", "--", "-.", ":")
HEATMAP_COLS = 3  # panels per row before wrapping
CHOSEN_COLS = 4  # strategies per row before wrapping


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _styled(build: Callable[P, Figure]) -> Callable[P, Figure]:
    """Build a figure in the report's style; every axes (colour bars too) gets its tick size."""

    @functools.wraps(build)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> Figure:
        with _plt().rc_context(STYLE):
            fig = build(*args, **kwargs)
        for ax in fig.axes:
            ax.tick_params(labelsize=TEXT_PT)
        return fig

    return wrapper


def _figure(rows: int, cols: int, width: float, height: float) -> tuple[Figure, Any]:
    """A constrained-layout grid of axes, capped at the maximum size."""
    size = (min(width, MAX_W_IN), min(height, MAX_H_IN))
    return _plt().subplots(rows, cols, figsize=size, squeeze=False, layout="constrained")


def save_figure(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as a PNG at the report's resolution."""
    fig.savefig(path, dpi=DPI)
    return path


def _render(fig: Figure, path: Path) -> Path:
    try:
        return save_figure(fig, path)
    finally:
        _plt().close(fig)


def _fmt(value: Any) -> str:
    """A compact label: ``64``, ``0.25``, ``1e-4``, ``3.2e-4``."""
    if isinstance(value, bool | np.bool_ | Integral) or not isinstance(value, Real):
        return str(value)
    v = float(value)
    if v == 0 or not math.isfinite(v) or 1e-2 <= abs(v) < 1e4:
        return f"{v:.3g}"
    return _sci(v)


def _sci(value: float) -> str:
    """Two significant digits in compact scientific notation: ``1e-4``, ``3.2e-4``."""
    mantissa, exponent = f"{value:.1e}".split("e")
    return f"{mantissa.removesuffix('.0')}e{int(exponent)}"


def _edge_labels(edges: np.ndarray) -> list[str]:
    """Bin edges as labels; a log range is written in one (scientific) notation."""
    log = edges[0] > 0 and edges[-1] / edges[0] > 50
    return [_sci(float(e)) if log else _fmt(float(e)) for e in edges]


def _is_log(values: pd.Series) -> bool:
    """Whether a numeric range is positive and spans more than 50x (plotted on log scale)."""
    num = pd.to_numeric(values, errors="coerce").dropna()
    return bool(len(num)) and float(num.min()) > 0 and float(num.max() / num.min()) > 50


def _band_note(seeds: int) -> str:
    if seeds < 2:
        return "1 seed: no band (a spread needs >= 2 seeds)"
    return f"mean over {seeds} seeds, band = ±1 standard error"


@_styled
def anytime_figure(study: Study, x: str = "epochs_spent") -> Figure:
    """Best-so-far vs budget (or wall time), one line per strategy, mean over seeds.

    Each strategy has its own marker and line style, so identical curves (shared
    random start-up) stay visible; with >= 2 seeds a +-1 standard-error band.
    """
    curves = anytime(study, x)
    seeds = int(study.runs["seed"].nunique())
    fig, axes = _figure(1, 1, 9.0, 5.0)
    ax = axes[0][0]
    names = study.strategies
    for k, name in enumerate(names):
        _anytime_line(ax, curves[curves.strategy == name], x, name, k, len(names), seeds > 1)
    if study.optimum is not None:
        ax.axhline(study.optimum, color="k", linestyle=":", linewidth=1, label="optimum")
    ax.set_xlabel("epochs spent (budget)" if x == "epochs_spent" else "wall time (s)")
    ax.set_ylabel(f"best {study.metric} so far")
    ax.set_title(f"{study.title}\n{_band_note(seeds)}")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), title="strategy")
    return fig


def _anytime_line(
    ax: Axes, c: pd.DataFrame, x: str, name: str, k: int, count: int, band: bool
) -> None:
    """One strategy's mean curve; markers offset per strategy so overlaps show."""
    if c.empty:
        return
    every = max(1, len(c) // 8)
    (line,) = ax.step(
        c[x],
        c["mean"],
        where="post",
        label=name,
        linewidth=1.8,
        linestyle=LINESTYLES[k % len(LINESTYLES)],
        marker=MARKERS[k % len(MARKERS)],
        markersize=6,
        markevery=((k * every) // count, every),
    )
    if band:
        lo, hi = c["mean"] - c["se"], c["mean"] + c["se"]
        ax.fill_between(c[x], lo, hi, step="post", alpha=0.15, color=line.get_color())


def plot_anytime(study: Study, path: Path, x: str = "epochs_spent") -> Path:
    """Write :func:`anytime_figure` as a PNG."""
    return _render(anytime_figure(study, x), path)


def _edges(reference: pd.Series, max_bins: int = 6) -> np.ndarray | None:
    """Bin edges for a numeric range with many values; None when values are their own bins.

    The range is cut into equal-width bins, on a log scale when it spans more
    than 50x; the outer edges are exactly the smallest and largest values.
    """
    ref = reference.dropna()
    if ref.nunique() <= 8 or not pd.api.types.is_numeric_dtype(ref):
        return None
    lo, hi = float(ref.min()), float(ref.max())
    if _is_log(ref):
        edges = np.geomspace(lo, hi, max_bins + 1)
    else:
        edges = np.linspace(lo, hi, max_bins + 1)
    edges[0], edges[-1] = lo, hi
    return edges


def _bins(values: pd.Series, reference: pd.Series) -> tuple[pd.Series, list[str]]:
    """Bin ``values`` into categories fixed by ``reference`` (all trials' values).

    Few distinct values (value boxes, choices) are their own bins; otherwise the
    bins of :func:`_edges`, labelled ``low..high``, so every panel of a heatmap
    shares the same axes.
    """
    edges = _edges(reference)
    if edges is None:
        ref = reference.dropna()
        distinct = sorted(ref.unique(), key=lambda v: (str(type(v)), v))
        labels = [_fmt(v) for v in distinct]
        return values.map(dict(zip(distinct, labels, strict=True))), labels
    labels = [f"{a}..{b}" for a, b in itertools.pairwise(_edge_labels(edges))]
    cut = pd.cut(values.astype(float), edges, labels=labels, include_lowest=True)
    return cut.astype(str), labels


def heatmap_frame(study: Study, x: str, y: str, epoch: int) -> pd.DataFrame:
    """Mean metric per (x bin, y bin) over every trial that reported ``epoch``."""
    for p in (x, y):
        if p not in study.params:
            raise ConfigError(
                f"heatmap parameter {p!r} was not searched; pick two of {', '.join(study.params)}"
            )
    h = study.history
    at = h[h["epoch"] == epoch][["strategy", "seed", "trial_id", study.metric]]
    cfg = study.trials[["strategy", "seed", "trial_id", f"config.{x}", f"config.{y}"]]
    joined = at.merge(cfg, on=["strategy", "seed", "trial_id"])
    bx, lx = _bins(joined[f"config.{x}"], study.trials[f"config.{x}"])
    by, ly = _bins(joined[f"config.{y}"], study.trials[f"config.{y}"])
    if joined.empty:
        return pd.DataFrame(index=ly, columns=lx, dtype=float)
    grid = joined.assign(bx=bx.to_numpy(), by=by.to_numpy()).pivot_table(
        index="by", columns="bx", values=study.metric, aggfunc="mean"
    )
    return grid.reindex(index=ly, columns=lx)


def _shared_norm(arrays: Sequence[Any]) -> Normalize | None:
    """One colour scale over every finite value of ``arrays`` (None when there is none)."""
    from matplotlib.colors import Normalize

    flat = np.concatenate([np.ravel(np.asarray(a, dtype=float)) for a in arrays] + [np.empty(0)])
    flat = flat[np.isfinite(flat)]
    return Normalize(float(flat.min()), float(flat.max())) if len(flat) else None


def _cmap(study: Study) -> str:
    """Viridis with its bright end at the better values."""
    return "viridis" if study.mode == "max" else "viridis_r"


def _colour_bar(fig: Figure, axes: list[Axes], norm: Normalize, cmap: str, label: str) -> None:
    """One colour bar for ``axes``, which all use ``norm`` and ``cmap``."""
    from matplotlib.cm import ScalarMappable

    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=axes, label=label, shrink=0.9)


def _grid_shape(panels: int, max_cols: int) -> tuple[int, int]:
    cols = max(1, min(panels, max_cols))
    return -(-panels // cols), cols


@_styled
def heatmap_figure(study: Study, x: str, y: str, epochs: Sequence[int]) -> Figure:
    """Heatmaps of the metric over two hyperparameters, one panel per epoch.

    All panels share one colour scale and one colour bar; binned (numeric) axes
    are labelled with their bin edges, which are real values of the range.
    """
    epochs = list(epochs)
    grids = [heatmap_frame(study, x, y, e) for e in epochs]
    rows, cols = _grid_shape(len(epochs), HEATMAP_COLS)
    fig, axes = _figure(rows, cols, 4.0 * cols + 1.2, 3.7 * rows + 0.3)
    norm = _shared_norm([g.to_numpy(float) for g in grids])
    edges = (_edges(study.trials[f"config.{x}"]), _edges(study.trials[f"config.{y}"]))
    drawn = []
    for ax, epoch, grid in zip(axes.flat, epochs, grids, strict=False):
        if norm is None or grid.isna().all().all():
            ax.set_title(f"epoch {epoch}: no trial reached it")
            ax.axis("off")
            continue
        _heat_panel(ax, grid, norm, study, edges)
        ax.set(xlabel=x, ylabel=y, title=f"mean {study.metric} at epoch {epoch}")
        drawn.append(ax)
    for ax in list(axes.flat)[len(epochs) :]:
        ax.axis("off")
    if drawn and norm is not None:
        label = f"mean {study.metric} (brighter = better)"
        _colour_bar(fig, drawn, norm, _cmap(study), label)
    return fig


def _heat_panel(
    ax: Axes,
    grid: pd.DataFrame,
    norm: Normalize,
    study: Study,
    edges: tuple[np.ndarray | None, np.ndarray | None],
) -> None:
    """One heatmap panel: cells, their values, and the axes' ticks."""
    values = grid.to_numpy(float)
    ax.imshow(values, cmap=_cmap(study), norm=norm, aspect="auto", origin="lower")
    _cell_ticks(ax.xaxis, list(grid.columns), edges[0], rotation=45, ha="right")
    _cell_ticks(ax.yaxis, list(grid.index), edges[1])
    for (i, j), v in np.ndenumerate(values):
        if not math.isnan(v):
            dark = (norm(v) < 0.5) == (study.mode == "max")  # dark end of the colormap
            colour = "w" if dark else "k"
            ax.text(j, i, f"{v:.3g}", ha="center", va="center", fontsize=TEXT_PT, color=colour)


def _cell_ticks(axis: Any, labels: list[str], edges: np.ndarray | None, **text: Any) -> None:
    """Ticks at the cells (own-value bins) or at the bin edges (binned ranges)."""
    if edges is None:
        axis.set_ticks(range(len(labels)), labels, **text)
    else:
        axis.set_ticks(np.arange(len(edges)) - 0.5, _edge_labels(edges), **text)


def plot_heatmap(study: Study, x: str, y: str, epochs: Sequence[int], path: Path) -> Path:
    """Write :func:`heatmap_figure` as a PNG."""
    return _render(heatmap_figure(study, x, y, epochs), path)


@_styled
def chosen_values_figure(study: Study, seed: int | None = None) -> Figure:
    """The value of every hyperparameter each strategy chose, trial by trial (one seed).

    One column per strategy (wrapped after :data:`CHOSEN_COLS`), one row per
    parameter with the same y range for every strategy; the colour is the trial's
    best metric on one scale for all panels, with a colour bar.
    """
    params, names = study.params, study.strategies
    seed = int(study.runs["seed"].iloc[0]) if seed is None else seed
    trials = study.trials[study.trials.seed == seed]
    blocks, cols = _grid_shape(len(names), CHOSEN_COLS)
    rows = blocks * len(params)
    fig, axes = _figure(rows, cols, 2.8 * cols + 1.4, 1.75 * rows + 0.6)
    best = f"best_{study.metric}"
    norm = _shared_norm([trials[best]]) if best in trials else None
    panels = [divmod(j, cols) for j in range(len(names))]  # (block, column) per strategy
    for (block, col), name in zip(panels, names, strict=True):
        t = trials[trials.strategy == name].sort_values("trial")
        for i, p in enumerate(params):
            ax = axes[block * len(params) + i][col]
            _chosen_panel(ax, t, study.trials[f"config.{p}"], best, norm, _cmap(study))
            ax.set(title=name if i == 0 else "", ylabel=p if col == 0 else "")
            ax.set_xlabel("trial" if i == len(params) - 1 else "")
    used = [axes[b * len(params) + i][c] for b, c in panels for i in range(len(params))]
    for ax in set(axes.flat) - set(used):
        ax.axis("off")
    if norm is not None:
        label = f"trial's best {study.metric} (brighter = better)"
        _colour_bar(fig, used, norm, _cmap(study), label)
    fig.suptitle(f"values chosen, trial by trial (seed {seed})")
    return fig


def _chosen_panel(
    ax: Axes, t: pd.DataFrame, every: pd.Series, best: str, norm: Normalize | None, cmap: str
) -> None:
    """One strategy's values of one parameter; ``every`` (all trials' values) fixes the y axis."""
    from matplotlib.ticker import MaxNLocator

    col = str(every.name)
    if pd.api.types.is_numeric_dtype(every):
        ys = t[col].astype(float)
        _numeric_axis(ax, every.astype(float))
    else:
        cats = sorted(every.dropna().astype(str).unique())
        ys = t[col].astype(str).map({c: i for i, c in enumerate(cats)}).astype(float)
        ax.set_yticks(range(len(cats)), cats)
        ax.set_ylim(-0.5, len(cats) - 0.5)
    if norm is None or best not in t:
        ax.scatter(t["trial"], ys, s=22, color="C0")
    else:
        ok = t[best].notna().to_numpy()
        ax.scatter(t["trial"][ok], ys[ok], c=t[best][ok], s=22, norm=norm, cmap=cmap)
        ax.scatter(t["trial"][~ok], ys[~ok], marker="x", s=22, color="0.5")  # no result
    ax.xaxis.set_major_locator(MaxNLocator(nbins=5, integer=True))


def _numeric_axis(ax: Axes, every: pd.Series) -> None:
    """Log scale for wide positive ranges; limits that fit every trial's value."""
    if every.isna().all():
        return
    lo, hi = float(every.min()), float(every.max())
    if _is_log(every):
        ax.set_yscale("log")
        ax.set_ylim(lo / 1.5, hi * 1.5)
    else:
        pad = (hi - lo) * 0.08 or 0.5
        ax.set_ylim(lo - pad, hi + pad)


def plot_chosen_values(study: Study, path: Path, seed: int | None = None) -> Path:
    """Write :func:`chosen_values_figure` as a PNG."""
    return _render(chosen_values_figure(study, seed), path)


# ---------------------------------------------------------------- the report
