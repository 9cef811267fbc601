"""The study's figures (PNG + SVG; the laws' figures also PDF, for papers): one colour per source in all of them,
panels by model size. The laws drawn are the ones fits.json holds (fitted once, with their bootstrap bands)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from scaling.analysis.grid import model_order, on_full_target, source_colours
from scaling.config import SCRATCH

ERROR = "test error (1 - ROC-AUC)"
#: the figures of fitted laws are the ones a paper takes; the others are for reading on screen
PAPER_FORMATS = ("png", "svg", "pdf")


def _fitted(laws: list[dict], axis: str, group_by: list[str], cell: dict) -> dict:
    """The fitted laws along ``axis`` at ``cell`` (budget, shots, target size), by their ``group_by`` values,
    as :func:`scaling.laws.plots.plot_fits` takes them; a group without a law is drawn as points."""
    return {tuple(f[k] for k in group_by): f["law"] for f in laws
            if f["axis"] == axis and "law" in f and all(f.get(k, v) == v for k, v in cell.items())}


def draw_figures(points: pd.DataFrame, laws: list[dict], cells: list[dict], out: Path, seed: int) -> list[Path]:
    """Per budget and shots: the transfer curves (one panel per model, by size), the laws against pre-training
    images with their bands extrapolated a decade, error against model size; effective data transferred.
    ``laws`` are the entries of :func:`scaling.analysis.fits.all_laws` with their fitted objects."""
    from scaling.laws import plots

    colours = source_colours(points["source"])
    order = model_order(points)
    paths: list[Path] = []
    for (budget, shots), part in on_full_target(points).groupby(["budget", "shots"]):
        stem = f"b{budget}_shots{shots or 'all'}"
        cell = {"budget": budget, "shots": shots}
        if "target_size" in part:
            cell["target_size"] = part["target_size"].max()
        fig = plots.plot_transfer(part, facet="model", facet_order=order, colours=colours, seed=seed,
                                  xlabel="pre-training images", ylabel=ERROR)
        paths += plots.save_figure(fig, out / f"transfer_{stem}")
        pretrained = part[part["source"] != SCRATCH]
        if pretrained["pretrain_size"].nunique() > 1:
            fig = plots.plot_fits(pretrained, "pretrain_size", "test_error", ["source", "model"], colours=colours,
                                  fits=_fitted(laws, "pretrain_size", ["source", "model"], cell),
                                  facet="model", facet_order=order,
                                  extrapolate_to=10 * pretrained["pretrain_size"].max(),
                                  xlabel="pre-training images", ylabel=ERROR)
            paths += plots.save_figure(fig, out / f"laws_{stem}", PAPER_FORMATS)
        if part["params"].nunique() > 1:
            fig = plots.plot_fits(part, "params", "test_error", ["source", "pretrain_size"], colours=colours,
                                  fits=_fitted(laws, "params", ["source", "pretrain_size"], cell),
                                  extrapolate_to=10 * part["params"].max(), xlabel="model parameters",
                                  ylabel=ERROR)
            paths += plots.save_figure(fig, out / f"model_size_{stem}", PAPER_FORMATS)
    drawable = [c for c in cells if c.get("transferred")]
    if drawable:
        fig = plots.plot_effective_data(pd.DataFrame(drawable), x="pretrain_size", fit_law=False,
                                        colours=colours, xlabel="pre-training images")
        paths += plots.save_figure(fig, out / "effective_data")
    return paths
