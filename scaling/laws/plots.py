"""Figures of fitted laws, transfer and effective data transferred, in one paper-ready style.

Every function takes a results table (a pandas DataFrame, one row per run) and the names of its columns, draws
on a fresh :class:`matplotlib.figure.Figure` (no pyplot, so nothing depends on a display or global state) and
returns it; :func:`save_figure` writes PNG and SVG (and PDF when asked). Colours are the Okabe-Ito palette,
which stays distinguishable under the common colour-vision deficiencies; sizes suit a one-column figure (3.4 in
wide).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import matplotlib as mpl
import numpy as np
from matplotlib import cycler
from matplotlib.figure import Figure

from .checks import FitError
from .fitting import Fit, fit
from .transfer import fit_transfer

PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
COLUMN_WIDTH = 3.4  # inches: one column of a two-column paper
STYLE = {
    "font.family": "DejaVu Sans",
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "legend.fontsize": 6.5,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "axes.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.grid.which": "major",
    "grid.linewidth": 0.4,
    "grid.alpha": 0.35,
    "lines.linewidth": 1.2,
    "lines.markersize": 3.5,
    "legend.frameon": False,
    "axes.prop_cycle": cycler(color=PALETTE),
    "savefig.dpi": 300,
    "savefig.bbox": "tight",
    "svg.fonttype": "none",  # text stays text in SVG
    "pdf.fonttype": 42,  # TrueType in PDF, editable and accepted by publishers
}
EXPONENT_SYMBOLS = {"alpha": "α", "beta": "β", "delta": "δ"}
#: what save_figure writes unless told: PDF (twice the time of PNG or SVG) is asked for by the figures papers take
FORMATS = ("png", "svg")

GroupKey = tuple[Any, ...]


@contextmanager
def paper_style() -> Iterator[None]:
    """The rcParams of these figures, for drawing or saving figures of your own in the same style."""
    with mpl.rc_context(STYLE):
        yield


def _figure(ncols: int = 1, legend_rows: int = 0) -> tuple[Figure, np.ndarray]:
    """A figure of ``ncols`` panels sharing y, with room for a legend of ``legend_rows`` entries below them."""
    width = COLUMN_WIDTH if ncols == 1 else min(7.0, 0.5 + 2.3 * ncols)
    fig = Figure(figsize=(width, 2.4 + 0.14 * legend_rows), layout="constrained")
    axes = fig.subplots(1, ncols, sharey=True, squeeze=False)
    return fig, axes.ravel()


def _legend_below(fig: Figure, ax: Any, title: str | None = None) -> None:
    """Legends below the axes keep long labels (exponents with intervals) from covering the data."""
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncols=1, title=title)


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, (float, np.floating)) else str(value)


def _columns(results: Any, *names: str | None) -> None:
    missing = [n for n in names if n is not None and n not in results.columns]
    if missing:
        raise FitError(f"results lack column(s) {missing}; have {list(results.columns)}")


def _groups(results: Any, group_by: Sequence[str]) -> list[tuple[GroupKey, Any]]:
    if not group_by:
        return [((), results)]
    return [((k if isinstance(k, tuple) else (k,)), part)
            for k, part in results.groupby(list(group_by), sort=True, dropna=False)]


def group_label(group_by: Sequence[str], key: GroupKey) -> str:
    """``'source=medical, model=r50'`` for a group key (the value alone when grouping by one column)."""
    if len(group_by) == 1:
        return _fmt(key[0])
    return ", ".join(f"{c}={_fmt(v)}" for c, v in zip(group_by, key)) or "all"


def _exponents(law: Fit) -> str:
    parts = []
    for name, symbol in EXPONENT_SYMBOLS.items():
        if name in law.params:
            lo, hi = law.ci[name]
            parts.append(f"{symbol}={law.params[name]:.2f} [{lo:.2f}, {hi:.2f}]")
    return ", ".join(parts)


def fit_groups(results: Any, x: str, y: str, group_by: Sequence[str] = (), **fit_kwargs: Any
               ) -> dict[GroupKey, Fit | FitError]:
    """Fit ``y`` against ``x`` in each group of ``results``; a group that cannot be fitted maps to its error."""
    _columns(results, x, y, *group_by)
    fits: dict[GroupKey, Fit | FitError] = {}
    for key, part in _groups(results, group_by):
        try:
            fits[key] = fit(part[x].to_numpy(dtype=float), part[y].to_numpy(dtype=float), **fit_kwargs)
        except FitError as err:
            fits[key] = err
    return fits


def _used(law: Fit, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Which rows the fit used (auto skips a transient, frontier_bins keeps the frontier)."""
    kept = set(zip(law.x[0].tolist(), law.y.tolist()))
    return np.array([(a, b) in kept for a, b in zip(xs.tolist(), ys.tolist())], dtype=bool)


def _panels(groups: list[tuple[GroupKey, Any]], group_by: Sequence[str], facet: str | None,
            facet_order: Sequence[Any] | None) -> list[tuple[Any, list[tuple[int, GroupKey, Any]]]]:
    """The groups (numbered in ``groups``) by panel: one panel of all of them, or one per value of ``facet`` (a
    ``group_by`` column), in ``facet_order`` where given."""
    numbered = [(i, key, part) for i, (key, part) in enumerate(groups)]
    if facet is None:
        return [(None, numbered)]
    if facet not in group_by:
        raise FitError(f"facet {facet!r} must be one of the group_by columns {list(group_by)}")
    at = list(group_by).index(facet)
    values = sorted({key[at] for key, _ in groups}, key=str)
    if facet_order is not None:
        rank = {v: i for i, v in enumerate(facet_order)}
        values.sort(key=lambda v: rank.get(v, len(rank)))
    return [(v, [member for member in numbered if member[1][at] == v]) for v in values]


def plot_fits(results: Any, x: str, y: str, group_by: Sequence[str] = (), *,
              fits: Mapping[GroupKey, Fit | FitError] | None = None, extrapolate_to: float | None = None,
              level: float = 0.95, xlabel: str | None = None, ylabel: str | None = None,
              colours: Mapping[Any, str] | None = None, facet: str | None = None,
              facet_order: Sequence[Any] | None = None, **fit_kwargs: Any) -> Figure:
    """Log-log plot of ``y`` against ``x`` per group: every point (faint; hollow where the fit left it out) and
    their mean at each ``x``, the fitted law (dashed beyond the data, up to ``extrapolate_to``), its bootstrap
    band at ``level`` and, in the legend, the form and exponents with their 95% intervals. ``fits`` reuses fits
    from :func:`fit_groups`; otherwise the groups are fitted here with ``fit_kwargs``. ``colours`` maps values of
    the first ``group_by`` column to colours (one colour per source in every figure); the other columns then
    pick the marker. ``facet`` (one of ``group_by``) draws one panel per value of that column, in
    ``facet_order`` if given, so that a dozen curves do not share one panel."""
    _columns(results, x, y, *group_by)
    if fits is None:
        fits = fit_groups(results, x, y, group_by, **fit_kwargs)
    groups = _groups(results, group_by)
    panels = _panels(groups, group_by, facet, facet_order)
    shown = [i for i, c in enumerate(group_by) if c != facet]  # what a legend entry has to tell apart
    title = ", ".join(group_by[j] for j in shown) or None
    with paper_style():
        fig, axes = _figure(ncols=len(panels), legend_rows=max(len(m) for _, m in panels) + 1)
        rests = sorted({key[1:] for key, _ in groups}, key=str)
        for ax, (value, members) in zip(axes, panels):
            for i, key, part in members:
                if colours is not None:
                    colour, marker = colours[key[0]], MARKERS[rests.index(key[1:]) % len(MARKERS)]
                else:
                    colour, marker = PALETTE[i % len(PALETTE)], MARKERS[(i // len(PALETTE)) % len(MARKERS)]
                xs, ys = part[x].to_numpy(dtype=float), part[y].to_numpy(dtype=float)
                law = fits.get(key)
                label = ", ".join(_fmt(key[j]) for j in shown) if shown else (_fmt(value) if facet else y)
                used = _used(law, xs, ys) if isinstance(law, Fit) else np.ones(len(xs), dtype=bool)
                ax.scatter(xs[used], ys[used], color=colour, marker=marker, s=7, alpha=0.4, linewidths=0,
                           zorder=3)
                ax.scatter(xs[~used], ys[~used], facecolors="none", edgecolors=colour, marker=marker, s=7,
                           alpha=0.6, zorder=3)
                means = part.groupby(x)[y].mean()
                ax.scatter(means.index.to_numpy(dtype=float), means.to_numpy(), color=colour, marker=marker,
                           s=20, edgecolors="white", linewidths=0.5, zorder=4)
                if isinstance(law, Fit):
                    top = max(xs.max(), extrapolate_to or 0.0)
                    span = np.geomspace(law.x[0].min(), top, 200)
                    inside = span <= law.x[0].max()
                    curve = law.predict(span)
                    low, high = law.predict_interval(span, level=level)
                    ax.fill_between(span, low, high, color=colour, alpha=0.15, linewidth=0)
                    ax.plot(span[inside], curve[inside], color=colour, marker=marker, markevery=[0],
                            label=f"{label}: {law.form}, {_exponents(law)}")
                    ax.plot(span[~inside], curve[~inside], color=colour, linestyle="--")
                else:
                    reason = f" (not fitted: {law})" if law is not None else ""
                    ax.plot([], [], color=colour, marker=marker, linestyle="none", label=f"{label}{reason}"[:90])
            ax.set(xscale="log", yscale="log", xlabel=xlabel or x)
            if facet:
                ax.set_title(f"{facet} = {_fmt(value)}")
            if len(panels) == 1:
                _legend_below(fig, ax, title=title)
            else:  # each panel's exponents under it
                ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncols=1, title=title)
        axes[0].set_ylabel(ylabel or y)
    return fig


def plot_transfer(results: Any, *, x: str = "pretrain_size", y: str = "test_error", source: str = "source",
                  scratch: str = "scratch", facet: str | None = None, form: str | None = "auto",
                  xlabel: str | None = None, ylabel: str | None = None, colours: Mapping[Any, str] | None = None,
                  facet_order: Sequence[Any] | None = None, **fit_kwargs: Any) -> Figure:
    """Target error against pre-training data size, one colour per source: means over seeds with their spread,
    a law fitted per source (``form``; None draws none), and the from-scratch level as a horizontal line with a
    band over its runs. ``facet`` makes one panel per value of that column (e.g. model size or budget), in
    ``facet_order`` if given (model names by parameter count, not by name); ``colours`` maps sources to colours."""
    _columns(results, x, y, source, facet)
    panels = _groups(results, [facet] if facet else [])
    if facet_order is not None:
        rank = {v: i for i, v in enumerate(facet_order)}
        panels.sort(key=lambda item: rank.get(item[0][0], len(rank)))
    sources = sorted(s for s in results[source].unique() if s != scratch)
    with paper_style():
        fig, axes = _figure(ncols=len(panels), legend_rows=len(sources) + 1)
        for ax, (key, panel) in zip(axes, panels):
            base = panel[panel[source] == scratch][y].to_numpy(dtype=float)
            if base.size:
                ax.axhline(base.mean(), color="0.3", linestyle=":", label=f"from scratch ({base.size} runs)")
                ax.axhspan(base.min(), base.max(), color="0.5", alpha=0.15, linewidth=0)
            exponents = []  # per panel: the shared legend below holds one label per source, not per panel
            for i, name in enumerate(sources):
                part = panel[panel[source] == name]
                if part.empty:
                    continue
                colour = colours[name] if colours is not None else PALETTE[i % len(PALETTE)]
                marker = MARKERS[i % len(MARKERS)]
                stats = part.groupby(x)[y].agg(["mean", "min", "max"]).reset_index()
                xs = stats[x].to_numpy(dtype=float)
                mean = stats["mean"].to_numpy()
                ax.errorbar(xs, mean, yerr=[mean - stats["min"].to_numpy(), stats["max"].to_numpy() - mean],
                            color=colour, marker=marker, linestyle="none", capsize=1.5, elinewidth=0.7)
                label = str(name)
                if form is not None:
                    try:
                        law = fit(part[x].to_numpy(dtype=float), part[y].to_numpy(dtype=float), form=form,
                                  **fit_kwargs)
                        span = np.geomspace(xs.min(), xs.max(), 100)
                        ax.plot(span, law.predict(span), color=colour)
                        label += f": {law.form} law"
                        if "alpha" in law.params:
                            exponents.append(f"{name} α={law.params['alpha']:.3f}")
                    except FitError:
                        label += " (too few points for a law)"
                ax.plot([], [], color=colour, marker=marker, label=label)
            if exponents:
                ax.text(0.02, 0.02, "\n".join(exponents), transform=ax.transAxes, fontsize=6.5, va="bottom")
            ax.set(xscale="log", yscale="log", xlabel=xlabel or x)
            if facet:
                ax.set_title(f"{facet} = {_fmt(key[0])}")
        axes[0].set_ylabel(ylabel or y)
        _legend_below(fig, axes[0])
    return fig


def plot_effective_data(table: Any, *, x: str = "budget", transferred: str = "transferred",
                        source: str = "source", model: str = "params", fit_law: bool = True,
                        xlabel: str | None = None, colours: Mapping[Any, str] | None = None) -> Figure:
    """Effective data transferred ``D_T`` against fine-tuning size or budget ``D_F`` (``x``), colour per
    source, marker per model size, from :func:`scaling.laws.transfer.transfer_table`. With ``fit_law`` each
    source gets ``D_T = k·D_F^α·N^β`` drawn per model size, exponents in the legend. Points with ``D_T <= 0``
    (pre-training hurt) or infinite ``D_T`` cannot sit on log axes; the title counts them."""
    _columns(table, x, transferred, source, model)
    d_t = table[transferred].to_numpy(dtype=float)
    drawable = np.isfinite(d_t) & (d_t > 0)
    sizes = sorted(table[model].unique())
    sources = sorted(table[source].unique())
    with paper_style():
        fig, (ax,) = _figure(legend_rows=len(sources) + len(sizes))
        for i, name in enumerate(sources):
            colour = colours[name] if colours is not None else PALETTE[i % len(PALETTE)]
            rows = (table[source] == name).to_numpy()
            label = str(name)
            if fit_law and (rows & drawable).sum() >= 4:
                try:
                    part = table[rows & drawable]
                    law = fit_transfer(part[x], part[model], part[transferred])
                    label += f": α={law.params['alpha']:.2f}, β={law.params['beta']:.2f}"
                    for size in sizes:
                        span = np.geomspace(part[x].min(), part[x].max(), 50)
                        ax.plot(span, law.predict({"D_F": span, "N": np.full_like(span, size)}), color=colour,
                                linewidth=0.9)
                except FitError:
                    pass
            for j, size in enumerate(sizes):
                sel = rows & drawable & (table[model] == size).to_numpy()
                ax.scatter(table[x].to_numpy(dtype=float)[sel], d_t[sel], color=colour,
                           marker=MARKERS[j % len(MARKERS)], s=14, zorder=3)
            ax.plot([], [], color=colour, label=label)
        for j, size in enumerate(sizes):
            ax.scatter([], [], color="0.3", marker=MARKERS[j % len(MARKERS)], s=14, label=f"{model}={_fmt(size)}")
        off = int((~drawable).sum())
        if off:
            ax.set_title(f"{off} of {len(d_t)} cells off the log scale (D_T ≤ 0 or unbounded)")
        ax.set(xscale="log", yscale="log", xlabel=xlabel or x, ylabel="effective data transferred $D_T$")
        _legend_below(fig, ax)
    return fig


def save_figure(fig: Figure, stem: str | Path, formats: Iterable[str] = FORMATS) -> list[Path]:
    """Write ``fig`` as ``stem.png`` and ``stem.svg`` (``formats``: also ``pdf``, the slowest to write, for papers;
    creating the folder); returns the paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    with paper_style():
        for fmt in formats:
            path = stem.with_suffix(f".{fmt}")
            fig.savefig(path, format=fmt)
            paths.append(path)
    return paths
