"""The dashboard's charts as Vega-Lite specs (Altair), each filtered by the page's one filter bar.

Every spec declares the filter parameters ``f_source``, ``f_model``, ``f_budget``, ``f_shots`` (null: all); the
page sets them on every view when a filter changes. Colours per source and the order of models (by parameter
count) are the figures' own (:mod:`scaling.analysis.grid`).

A study may hold several fine-tuning budgets and shots (a budget slice on one rung, say): no panel overlays two of
them. Each panel holds one ``setting`` (budget and shots, named only where the study varies them), and a panel
exists only where the study has data for it, so a budget that only some cells have adds panels, not gaps.
"""
from __future__ import annotations

import altair as alt
import numpy as np
import pandas as pd

from scaling.analysis.grid import SCRATCH, TRUST_COLUMNS, model_order, on_full_target, per_seed, source_colours
from scaling.analysis.results import best_per_cell

FILTERS = ["source", "model", "budget", "shots"]
ERROR = "test error (1 − ROC-AUC)"
WIDTH = 260
#: log axes label the powers of ten only: Vega labels 10, 20, 100, 200... and at this width 20 runs into 100
DECADES = alt.Axis(labelExpr="abs(log(datum.value) / LN10 - round(log(datum.value) / LN10)) < 1e-6 "
                             "? format(datum.value, ',') : ''")


def _where(*skip: str) -> str:
    """The filter bar as a Vega expression; ``skip`` leaves columns out (the scratch level under a source
    filter stays as the reference)."""
    return " && ".join(f"(f_{c} == null || datum.{c} == f_{c})" for c in FILTERS if c not in skip)


class Settings:
    """The (budget, shots) settings of a study, in order, and the label of each: "budget 50", "budget 50, 10
    shots", or "" when the study has one setting."""

    def __init__(self, results: pd.DataFrame):
        done = finished(results)
        pairs = sorted({(b, s) for b, s in zip(done["budget"], done["shots"])}) if len(done) else []
        self.several_budgets = len({b for b, _ in pairs}) > 1
        self.several_shots = len({s for _, s in pairs}) > 1
        self.labels = [self.label(b, s) for b, s in pairs]

    def label(self, budget, shots) -> str:
        parts = ([f"budget {budget}"] if self.several_budgets else []) + \
            ([f"{shots or 'all'} shots"] if self.several_shots else [])
        return ", ".join(parts)

    def mark(self, frame: pd.DataFrame, by: str | None = None, order: list[str] | None = None) -> pd.DataFrame:
        """`frame` with its `setting`, and its `panel`: the value of column `by` (e.g. the model) and the
        setting."""
        frame = frame.assign(setting=[self.label(b, s) for b, s in zip(frame["budget"], frame["shots"])])
        if by:
            frame["panel"] = [" · ".join(p for p in (str(v), st) if p) for v, st in zip(frame[by], frame["setting"])]
        return frame

    def panels(self, values: list) -> list[str]:
        """Every panel name in order: setting by setting, `values` (e.g. models by size) within each."""
        return [" · ".join(p for p in (str(v), st) if p) for st in self.labels for v in values]


def _spec(chart: alt.TopLevelMixin) -> dict:
    spec = chart.to_dict()
    spec["params"] = spec.get("params", []) + [{"name": f"f_{c}", "value": None} for c in FILTERS]
    return spec


def _colour(sources) -> alt.Color:
    colours = source_colours(sources)
    domain = [s for s in colours if s in set(sources)]
    return alt.Color("source:N", scale=alt.Scale(domain=domain, range=[colours[s] for s in domain]),
                     title="source")


def finished(results: pd.DataFrame) -> pd.DataFrame:
    """The trials the table lists and the model-size view plots: finished, with a test error."""
    if results.empty:
        return results
    return results[(results["status"] == "finished") & results["test_error"].notna()].reset_index(drop=True)


def _curves(fits: dict) -> pd.DataFrame:
    """The fitted laws against pre-training images, sampled, split at their largest x into the fitted part and
    the dashed extrapolation (the two share the point where they meet)."""
    rows = []
    for i, law in enumerate(f for f in fits.get("laws", []) if f.get("axis") == "pretrain_size" and "curve" in f):
        c = law["curve"]
        last = int((np.asarray(c["x"]) <= c["data_max"] * (1 + 1e-9)).sum()) - 1
        for segment, idx in (("fitted", range(0, last + 1)), ("extrapolated", range(max(last, 0), len(c["x"])))):
            rows += [{"kind": "fit", "curve": f"{i}-{segment}", "segment": segment, "x": c["x"][j], "y": c["y"][j],
                      "low": c["low"][j], "high": c["high"][j], **{k: law[k] for k in FILTERS}} for j in idx]
    return pd.DataFrame(rows)


def transfer_view(results: pd.DataFrame, fits: dict) -> dict | None:
    """Log-log error against pre-training images, a panel per model (by size) and setting: every seed's point,
    the mean, the fitted law with its band and dashed extrapolation, and the scratch level."""
    best = on_full_target(best_per_cell(results))
    if best.empty:
        return None
    points = per_seed(best)
    tuned = points[points["source"] != SCRATCH]
    if tuned.empty:
        return None
    seeds = tuned.assign(kind="seed", x=tuned["pretrain_size"], y=tuned["test_error"])
    means = seeds.groupby([*FILTERS, "trial", "x"], as_index=False)["y"].mean().assign(kind="mean")
    scratch = points[points["source"] == SCRATCH].groupby(FILTERS, as_index=False)["test_error"].mean()
    scratch = scratch.rename(columns={"test_error": "y"}).assign(kind="scratch")
    keep = [*FILTERS, "kind", "x", "y", "trial", "seed_index"]
    data = pd.concat([seeds[keep], means, scratch, _curves(fits)], ignore_index=True)
    settings, order = Settings(results), model_order(points)
    data = settings.mark(data, by="model")
    colour = _colour(points["source"].unique())
    x = alt.X("x:Q", scale=alt.Scale(type="log"), axis=DECADES, title="pre-training images")
    y = alt.Y("y:Q", scale=alt.Scale(type="log"), title=ERROR)
    kind = lambda k: f"datum.kind == '{k}'"  # noqa: E731
    base = alt.Chart().transform_filter(_where("model", "budget", "shots"))  # the panels are filtered outside
    layers = [
        base.transform_filter(kind("fit")).mark_area(opacity=0.15).encode(x=x, y="low:Q", y2="high:Q", color=colour,
                                                                           detail="curve:N"),
        base.transform_filter(kind("fit")).mark_line().encode(
            x=x, y=y, color=colour, detail="curve:N",
            strokeDash=alt.StrokeDash("segment:N", scale=alt.Scale(domain=["fitted", "extrapolated"],
                                                                   range=[[1, 0], [5, 3]]), title="law")),
        base.transform_filter(kind("seed")).mark_point(size=14, opacity=0.6).encode(
            x=x, y=y, color=colour, tooltip=["trial:N", "seed_index:Q", alt.Tooltip("y:Q", format=".3f")]),
        base.transform_filter(kind("mean")).mark_point(size=60, filled=True, shape="diamond").encode(
            x=x, y=y, color=colour, tooltip=["trial:N", alt.Tooltip("y:Q", format=".3f", title="mean error")]),
        alt.Chart().transform_filter(kind("scratch")).mark_rule(
            strokeDash=[2, 2], color=source_colours([])[SCRATCH]).encode(
            y="y:Q", tooltip=[alt.Tooltip("y:Q", format=".3f", title="scratch error")]),
    ]
    chart = alt.layer(*layers, data=data).properties(width=WIDTH, height=220).facet(
        facet=alt.Facet("panel:N", sort=settings.panels(order), title=None), columns=min(len(order), 4))
    return _spec(chart.transform_filter(_where("source")))  # a panel without data (filtered out) is not drawn


def budget_view(results: pd.DataFrame) -> dict | None:
    """Error against fine-tuning budget, a panel per model (and shots) that the study ran at several budgets:
    every seed's point, the tuned trial's mean, a line through each (source, pre-training size); none where no
    cell has several budgets."""
    best = on_full_target(best_per_cell(results))
    if best.empty:
        return None
    curve = ["source", "model", "pretrain_size", "shots"]
    best = best[best.groupby(curve)["budget"].transform("nunique") > 1]  # the cells of a budget slice
    if best.empty:
        return None
    points = per_seed(best)
    seeds = points.assign(kind="seed", y=points["test_error"])
    means = seeds.groupby([*FILTERS, "trial", "pretrain_size"], as_index=False)["y"].mean().assign(kind="mean")
    data = pd.concat([seeds[[*FILTERS, "kind", "y", "trial", "pretrain_size", "seed_index"]], means],
                     ignore_index=True)
    several_shots = points["shots"].nunique() > 1
    data["panel"] = [f"{m}, {s or 'all'} shots" if several_shots else str(m)
                     for m, s in zip(data["model"], data["shots"])]
    panels = [p for m in model_order(points) for p in dict.fromkeys(data.loc[data["model"] == m, "panel"])]
    colour = _colour(points["source"].unique())
    budgets = sorted(int(b) for b in points["budget"].unique())
    x = alt.X("budget:Q", scale=alt.Scale(type="log"), axis=alt.Axis(values=budgets, format="d"),
              title="fine-tuning budget (steps)")
    y = alt.Y("y:Q", scale=alt.Scale(type="log"), title=ERROR)
    tip = ["trial:N", "pretrain_size:Q", alt.Tooltip("y:Q", format=".3f")]
    mean = alt.Chart().transform_filter("datum.kind == 'mean'")
    layers = [
        mean.mark_line(opacity=0.7).encode(x=x, y=y, color=colour, detail="pretrain_size:N"),
        alt.Chart().transform_filter("datum.kind == 'seed'").mark_point(size=14, opacity=0.5).encode(
            x=x, y=y, color=colour, tooltip=[*tip, "seed_index:Q"]),
        mean.mark_point(size=60, filled=True, shape="diamond").encode(x=x, y=y, color=colour, tooltip=tip),
    ]
    chart = alt.layer(*layers, data=data).properties(width=WIDTH, height=220).facet(
        facet=alt.Facet("panel:N", sort=panels, title=None), columns=min(len(panels), 4))
    return _spec(chart.transform_filter(_where()))


def model_view(results: pd.DataFrame) -> dict | None:
    """Error against model parameters, a panel per setting: one point per finished trial (the table's rows),
    lines through the tuned trial of each (source, pre-training size)."""
    trials = finished(results)
    if trials.empty:
        return None
    settings = Settings(results)
    best = on_full_target(best_per_cell(results))
    cols = [*FILTERS, "trial", "params", "test_error", "pretrain_size", "lr", "weight_decay", "test_roc_auc"]
    data = settings.mark(pd.concat([trials[cols].assign(kind="trial"), best[cols].assign(kind="tuned")],
                                   ignore_index=True))
    colour = _colour(trials["source"].unique())
    x = alt.X("params:Q", scale=alt.Scale(type="log"), axis=DECADES, title="model parameters")
    y = alt.Y("test_error:Q", scale=alt.Scale(type="log"), title=ERROR)
    hover = ["trial:N", "source:N", "model:N", "pretrain_size:Q", "budget:Q", "shots:Q",
             alt.Tooltip("lr:Q", format=".3g"), alt.Tooltip("weight_decay:Q", format=".2g"),
             alt.Tooltip("test_roc_auc:Q", format=".3f")]
    base = alt.Chart().transform_filter(_where())
    points = base.transform_filter("datum.kind == 'trial'").mark_point(
        size=40, filled=True, opacity=0.8).encode(x=x, y=y, color=colour, tooltip=hover).properties(name="trialpoints")
    lines = base.transform_filter("datum.kind == 'tuned'").mark_line(opacity=0.6).encode(
        x=x, y=y, color=colour, detail="pretrain_size:N")
    chart = alt.layer(lines, points, data=data).properties(width=2 * WIDTH, height=220)
    if len(settings.labels) > 1:
        chart = chart.properties(width=WIDTH).facet(facet=alt.Facet("setting:N", sort=settings.labels, title=None),
                                                    columns=min(len(settings.labels), 3))
    return _spec(chart)


def effective_data_view(fits: dict, results: pd.DataFrame) -> tuple[dict | None, str]:
    """D_T against pre-training images with 95% intervals, a panel per setting; hollow where the fine-tuned
    error lies outside the scratch trials' range (read off the law beyond its data). Or none, and why."""
    cells = [c for c in fits.get("effective_data", []) if c.get("transferred") and c["transferred"] > 0]
    if not cells:
        return None, fits.get("absent", {}).get("target_size", "no cell with a positive, finite D_T")
    settings = Settings(results)
    data = settings.mark(pd.DataFrame(cells))
    data["lo"] = [max(c[0], 1e-3) if c[0] is not None else 1e-3 for c in data["transferred_ci"]]
    data["hi"] = [c[1] if c[1] is not None else np.nan for c in data["transferred_ci"]]
    data["inside"] = data["scratch_range"] == "within"
    colour = _colour(data["source"].unique())
    x = alt.X("pretrain_size:Q", scale=alt.Scale(type="log"), axis=DECADES, title="pre-training images")
    base = alt.Chart().transform_filter(_where())
    bars = base.mark_rule().encode(x=x, y=alt.Y("lo:Q", scale=alt.Scale(type="log")), y2="hi:Q", color=colour)
    dots = base.mark_point(size=60).encode(
        x=x, y=alt.Y("transferred:Q", scale=alt.Scale(type="log"), axis=DECADES, title="effective data transferred D_T"),
        color=colour, shape=alt.Shape("model:N", sort=model_order(data)),
        fill=alt.condition("datum.inside", colour, alt.value("white")),
        tooltip=["trial:N", alt.Tooltip("transferred:Q", format=".0f"), alt.Tooltip("multiplier:Q", format=".2f"),
                 "target_size:Q", "scratch_range:N"])
    chart = alt.layer(bars, dots, data=data.drop(columns=["transferred_ci", "multiplier_ci", "scratch_error_range"]))
    chart = chart.properties(width=2 * WIDTH, height=220)
    present = [label for label in settings.labels if label in set(data["setting"])]
    if len(present) > 1:
        chart = chart.properties(width=WIDTH).facet(facet=alt.Facet("setting:N", sort=present, title=None),
                                                    columns=min(len(present), 3))
    return _spec(chart), ""


def trust_view(results: pd.DataFrame) -> dict | None:
    """Calibration, ensemble and saliency metrics of the tuned trials against pre-training size, for whichever
    of them the results hold: a panel per metric (and setting, where the study has several)."""
    best = on_full_target(best_per_cell(results))
    present = [c for c in TRUST_COLUMNS if c in best and best[c].notna().any()]
    if best.empty or not present:
        return None
    settings = Settings(results)
    long = best.melt(id_vars=[*FILTERS, "pretrain_size", "trial"], value_vars=present, var_name="metric")
    long = settings.mark(long, by="metric")
    several = len(settings.labels) > 1  # a row of metrics per setting
    chart = alt.Chart(long).mark_line(point=True).encode(
        x=alt.X("pretrain_size:O", title="pre-training images"), y=alt.Y("value:Q", title=None),
        color=_colour(best["source"].unique()), detail="model:N",
        tooltip=["trial:N", "metric:N", "setting:N", alt.Tooltip("value:Q", format=".3f")],
    ).properties(width=110 if several else 180, height=140).facet(
        facet=alt.Facet("panel:N", sort=settings.panels(present), title=None),
        columns=len(present) if several else 4).resolve_scale(y="independent")
    return _spec(chart.transform_filter(_where()))
