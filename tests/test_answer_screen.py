"""The answer first: the study's last screen (at most 15 lines), summary.md with the full tables, and the
dashboard that opens with the same answer, on a small analysed study with a budget slice (tests/answer_study.py)
and on the smoke study's own run."""
from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from answer_study import analysed_study
from dashboards import build
from scaling.analysis.answer import ANSWER_LINES, SUMMARY_MD, answer_lines, summary_markdown


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return analysed_study(tmp_path_factory.mktemp("answer") / "sliced")


def test_the_answer_holds_pooled_findings_exponents_multipliers_and_paths_in_15_lines(study):
    lines = answer_lines(study, study / "dashboard.html")
    text = "\n".join(lines)
    assert len(lines) <= ANSWER_LINES
    findings = json.loads((study / "findings.json").read_text())["statements"]
    for s in findings:  # every pooled statement with its estimate, interval and verdict
        shown = f"{s['estimate']:+.3f} [{s['ci'][0]:+.3f}, {s['ci'][1]:+.3f}] {s['verdict']}"
        assert shown in text, shown
    medical = next(s for s in findings if s.get("compare") == ["medical", "scratch"])
    counts = pd.Series([c["verdict"] for c in medical["cells"]]).value_counts()
    assert re.search(rf"{len(medical['cells'])} cells[^:]*: {counts['supported']} supported", text)
    # the exponents by source and model, at the budget with laws on every rung
    laws = json.loads((study / "fits.json").read_text())["laws"]
    for law in (f for f in laws if f["axis"] == "pretrain_size"):
        assert law["budget"] == 20
        lo, hi = ("-" if v is None else f"{v:.2f}" for v in law["ci"]["alpha"])  # None: an unbounded end
        row = next(line for line in lines if line.startswith(f"  {law['source']} ") and "D_T" in line)
        assert f"{law['model']} {law['params']['alpha']:.2f} [{lo}, {hi}]" in row
    assert "(budget 20, shots all)" in text
    # natural at 300 images is worth half the target: the one bounded multiplier; medical lies beyond scratch
    assert re.search(r"natural .*D_T ×0\.5, 2 of 6 cells bounded", text)
    assert re.search(r"medical .*D_T unbounded in all 6 cells", text)
    assert lines[-2] == f"dashboard: {study / 'dashboard.html'}"
    assert lines[-1].startswith(f"tables:    {study / SUMMARY_MD} ")


def test_summary_md_holds_every_cell_finding_law_and_d_t(study):
    text = summary_markdown(study, answer_lines(study), ["analysis: a note of its own"], "12 s of training")
    results = pd.read_parquet(study / "results.parquet")
    auc = text.split("## Tuned test ROC-AUC per cell")[1].split("##")[0]
    assert len([r for r in auc.splitlines() if r.startswith("| w")]) == len(results)  # one finished trial a cell
    for s in json.loads((study / "findings.json").read_text())["statements"]:
        assert s["statement"] in text and all(c["statement"] in text for c in s.get("cells", []))
    fits = json.loads((study / "fits.json").read_text())
    assert text.count("error vs pretrain_size") == sum(f["axis"] == "pretrain_size" for f in fits["laws"])
    assert text.count(" target: D_T ") == len(fits["effective_data"])
    assert "params: params has 2 value(s)" in text and "- analysis: a note of its own" in text
    assert text.startswith("# Summary of sliced") and "12 s of training" in text


def test_the_dashboard_opens_with_the_answer_and_a_panel_per_model_and_budget(study):
    page = build(study).read_text()
    answer = "\n".join(answer_lines(study, study / "dashboard.html"))
    body = page[page.index("<body>"):]
    assert body.index('id="answer"') < body.index("What this study's grid lacks") < body.index('id="filters"')
    shown = re.search(r'<section id="answer"><h2>The answer</h2><pre>(.*?)</pre>', body, re.S).group(1)
    assert re.sub(r"<[^>]+>", "", shown) == answer.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    specs = json.loads(re.search(r'id="dashboard-data">(.*?)</script>', page, re.S).group(1))["specs"]
    transfer = specs["view-transfer"]
    assert transfer["facet"]["field"] == "panel"
    # the budget slice (w16 at 40 and 80 steps) has panels of its own, never a curve overlaid on budget 20's
    assert transfer["facet"]["sort"] == ["w8 · budget 20", "w16 · budget 20", "w8 · budget 40", "w16 · budget 40",
                                         "w8 · budget 80", "w16 · budget 80"]
    panels = {row["panel"] for rows in transfer["datasets"].values() for row in rows}
    assert panels == {"w8 · budget 20", "w16 · budget 20", "w16 · budget 40", "w16 · budget 80"}
    budget = specs["view-budget"]
    rows = [r for rows in budget["datasets"].values() for r in rows]
    assert {r["panel"] for r in rows} == {"w16"} and {r["budget"] for r in rows} == {20, 40, 80}
    assert {r["pretrain_size"] for r in rows} == {0, 3000}  # the cells the study ran at several budgets


@pytest.mark.slow
def test_the_smoke_study_ends_with_its_answer_and_logs_summary_md(smoke_study):
    out, result = smoke_study
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    after = result.stdout.split(f"results: 2 trials -> {out / 'results.parquet'}\n")[1].splitlines()
    steps, after = after[:2], after[2:]  # the post-sweep steps say when they end, then the answer
    assert "] analysis: laws, effective data, findings and" in steps[0] and "] MLflow: " in steps[1], steps
    answer = json.loads((out / "summary.json").read_text())["answer"]
    assert len(answer) <= ANSWER_LINES and after[0].endswith("] " + answer[0]) and after[1:len(answer)] == answer[1:]
    assert after[len(answer)].endswith("MLflow server stopped; browse the runs again with:")  # then the command
    assert len(after) == len(answer) + 2
    text = (out / SUMMARY_MD).read_text()
    assert "| w8 | 20 | 0 | scratch |" in text and "trust of the tuned models" in text.lower()
    assert "saliency" not in result.stdout.split("results: ")[1]  # the trust table left the screen
    logged = [p for p in (out / "mlartifacts").rglob(SUMMARY_MD)]
    assert len(logged) == 1 and logged[0].read_text() == text


def test_an_exponent_bounded_on_one_side_shows_only_its_bound():
    from scaling.analysis.answer import _alpha_interval

    law = {"ci": {"alpha": [0.84, 5.0]}, "ci_kind": {"alpha": "lower bound only"}}
    assert _alpha_interval(law) == "[≥ 0.84]"
    assert _alpha_interval({"ci": {"alpha": [0.07, 0.23]}, "ci_kind": {"alpha": "two-sided"}}) == "[0.07, 0.23]"
