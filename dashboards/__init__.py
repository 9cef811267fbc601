"""The study dashboard: one self-contained HTML file per study, ``<study>/dashboard.html``.

Written at the end of every study run by ``studies/scaling_law.py``, which hands `build` to
`scaling.study.run_study` as its dashboard hook (the library never imports this package), and rebuilt with
``python -m dashboards build runs/<name>``. Altair (Vega-Lite) with the Vega bundle inlined by vl-convert: about
1 MB, interactive, rendered as SVG (headless browsers need no WebGL), no CDN. Plotly's inline page is about 4.8 MB;
matplotlib figures cannot be filtered.
"""
from __future__ import annotations

import html
import json
from pathlib import Path

from dashboards import charts
from dashboards.data import Study, StudyDirError, load_study
from dashboards.page import render
from scaling.analysis.answer import answer_lines
from scaling.analysis.grid import model_order
from scaling.track.server import DB_FILE, reopen_command

DASHBOARD = "dashboard.html"
HYPER = ("lr", "weight_decay", "sample")
TRIAL_COLUMNS = ("trial", "status", "source", "model", "pretrain_size", "target_size", "budget", "shots",
                 "test_roc_auc", "test_roc_auc_sd", "val_roc_auc", "lr", "weight_decay")

__all__ = ["DASHBOARD", "StudyDirError", "build"]


def _records(frame) -> list[dict]:
    return json.loads(frame.to_json(orient="records"))


def _trials(study: Study) -> tuple[list[dict], list[str]]:
    """Every trial, finished ones first; one that diverged or failed is marked in its status cell, with why."""
    trials = study.results
    if len(trials):
        trials = trials.assign(_order=trials["status"] != "finished").sort_values("_order", kind="stable")
    columns = [c for c in TRIAL_COLUMNS if c in trials] + ["mlflow"]
    runs = study.runs.get("runs", {})
    rows = _records(trials[[c for c in {*columns, *HYPER, *charts.FILTERS, "status_detail"} if c in trials]])
    for row in rows:
        run = runs.get(row["trial"], {})
        row.update(run_id=run.get("run_id", ""), link=run.get("link", ""))
    return rows, columns


def _findings(study: Study) -> list[dict]:
    rows = []
    for s in (study.findings or {}).get("statements", []):
        compare = s.get("compare") or [s.get("source")]
        rows.append({**{k: v for k, v in s.items() if k != "cells"}, "pooled": True, "source": compare})
        rows += [{**c, "source": compare} for c in s.get("cells", [])]
    return rows


def _options(study: Study) -> dict:
    trials = charts.finished(study.results)
    if trials.empty:
        return {f: [] for f in charts.FILTERS}
    options = {f: sorted(trials[f].unique().tolist()) for f in ("source", "budget", "shots")}
    options["model"] = model_order(trials)
    return options


def _provenance(study: Study) -> str:
    version = study.runs.get("version", {})
    commit = version.get("git_commit", "not recorded (no mlflow_runs.json)")
    packages = ", ".join(f"{k.split('.', 1)[1]} {v}" for k, v in version.items() if k.startswith("version."))
    mlflow = study.runs.get("parent_link")
    reopen = f"reopen the study's MLflow store (the links' address) with " \
        f"<code>{html.escape(reopen_command(study.path))}</code>" if (study.path / DB_FILE).exists() else ""
    ended = study.results[study.results["status"] != "finished"] if len(study.results) else study.results
    if len(ended):
        cols = [c for c in ("trial", "status", "source", "model", "pretrain_size", "budget", "shots") if c in ended]
        head = "".join(f"<th>{c}</th>" for c in cols)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(r[c]))}</td>" for c in cols) + "</tr>"
                       for _, r in ended.iterrows())
        unfinished = f"<p>{len(ended)} trials did not finish:</p><table id='unfinished'><tr>{head}</tr>{body}</table>"
    else:
        unfinished = "<p>every trial finished.</p>"
    link = f'<a href="{html.escape(mlflow)}">MLflow parent run</a>; ' if mlflow else ""
    return (f"<p>study <b>{html.escape(study.name)}</b> in <code>{html.escape(str(study.path))}</code>; "
            f"{html.escape(study.when())}.<br>git commit <code>{html.escape(commit)}</code>"
            f"{'; ' + html.escape(packages) if packages else ''}.<br>{link}{reopen}</p>{unfinished}"
            f"<details><summary>configuration (config.yaml)</summary><pre>{html.escape(study.config)}</pre></details>")


def build(study_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the dashboard of the study in ``study_dir`` (to ``<study_dir>/dashboard.html`` by default)."""
    study = load_study(Path(study_dir))
    path = Path(out) if out else study.path / DASHBOARD
    spec, why = charts.effective_data_view(study.fits, study.results)
    panels = "one panel per model (by size)" + (" and setting (budget, shots)" if len(charts.Settings(
        study.results).labels) > 1 else "")
    views = [
        ("view-transfer", "Error against pre-training images", charts.transfer_view(study.results, study.fits),
         "no pre-trained trial finished: nothing to plot against pre-training images",
         f"Log-log, {panels}: each seed's point (small), the trial's mean (diamond), the fitted law with its 95% "
         "band, dashed beyond the largest pre-training set, and the from-scratch level (dotted)."),
        ("view-budget", "Error against fine-tuning budget", charts.budget_view(study.results),
         "no cell of the study has several fine-tuning budgets", "Log-log, a panel per model that the study ran "
         "at several budgets (a budget slice): each seed's point, the tuned trial's mean (diamond) and a line through "
         "each source and pre-training size."),
        ("view-model", "Error against model size", charts.model_view(study.results),
         "no finished trial", "Every finished trial (mean over seeds; hover for its hyper-parameters), a panel per "
         "setting where the study has several; lines join the tuned trial of each source and pre-training size."),
        ("view-effective", "Effective data transferred", spec, why,
         "D_T: how many more target images a model trained from scratch would need to match the fine-tuned one "
         "(Hernandez et al. 2021), with 95% seed-bootstrap intervals; hollow where the fine-tuned error lies "
         "outside the scratch trials' range (read off the scratch law beyond its data)."),
        ("view-trust", "Trust: calibration, uncertainty, saliency", charts.trust_view(study.results),
         "no calibration, ensemble or saliency metrics in the results",
         "Metrics of the tuned trials against pre-training size, a panel per metric (and setting)."),
    ]
    trials, columns = _trials(study)
    data = {"trials": trials, "trial_columns": columns, "hyper": [h for h in HYPER if h in study.results],
            "findings": _findings(study), "options": _options(study)}
    notes = [f"{axis}: {why}" for axis, why in study.fits.get("absent", {}).items()]
    page = render(f"Study {study.name}", answer_lines(study.path, path), views, data, _provenance(study), notes)
    path.write_text(page, encoding="utf-8")
    return path
