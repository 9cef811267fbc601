"""The study's figures (PNG + SVG + PDF): one colour per source in all of them, panels by model size."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from scaling.analysis.grid import SCRATCH, model_order, on_full_target, source_colours

ERROR = "test error (1 - ROC-AUC)"


def draw_figures(points: pd.DataFrame, cells: list[dict], out: Path, seed: int) -> list[Path]:
    """Per budget and shots: the transfer curves (one panel per model, by size), the laws against pre-training
    images with their bands extrapolated a decade, error against model size; effective data transferred."""
    from scaling.laws import plots

    colours = source_colours(points["source"])
    order = model_order(points)
    paths: list[Path] = []
    for (budget, shots), part in on_full_target(points).groupby(["budget", "shots"]):
        stem = f"b{budget}_shots{shots or 'all'}"
        fig = plots.plot_transfer(part, facet="model", facet_order=order, colours=colours, seed=seed,
                                  xlabel="pre-training images", ylabel=ERROR)
        paths += plots.save_figure(fig, out / f"transfer_{stem}")
        pretrained = part[part["source"] != SCRATCH]
        if pretrained["pretrain_size"].nunique() > 1:
            fig = plots.plot_fits(pretrained, "pretrain_size", "test_error", ["source", "model"], colours=colours,
                                  extrapolate_to=10 * pretrained["pretrain_size"].max(), seed=seed,
                                  xlabel="pre-training images", ylabel=ERROR)
            paths += plots.save_figure(fig, out / f"laws_{stem}")
        if part["params"].nunique() > 1:
            fig = plots.plot_fits(part, "params", "test_error", ["source", "pretrain_size"], colours=colours,
                                  extrapolate_to=10 * part["params"].max(), seed=seed, xlabel="model parameters",
                                  ylabel=ERROR)
            paths += plots.save_figure(fig, out / f"model_size_{stem}")
    drawable = [c for c in cells if c.get("transferred")]
    if drawable:
        fig = plots.plot_effective_data(pd.DataFrame(drawable), x="pretrain_size", fit_law=False,
                                        colours=colours, xlabel="pre-training images")
        paths += plots.save_figure(fig, out / "effective_data")
    return paths
