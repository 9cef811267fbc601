"""The answer of a study, first: at most ``ANSWER_LINES`` lines that the study prints last and the dashboard
opens with, and ``summary.md``, which holds the full tables behind them.

Both are built from the files the analysis wrote (``results.parquet``, ``fits.json``, ``findings.json``), so
the screen, the dashboard and a rebuilt dashboard show the same answer. The answer holds the pooled findings
(each with its paired interval and verdict, and how its per-cell verdicts fell), the gain's growth along each
axis per source, the exponents of error against pre-training images by source, the effective-data multipliers,
and where the dashboard and the tables are.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from scaling.analysis import describe_fits, describe_transfer, findings_table, summary_table
from scaling.analysis.findings import GROWTH
from scaling.analysis.grid import model_order
from scaling.analysis.results import best_per_cell
from scaling.analysis.trust import trust_table

ANSWER_LINES = 15
SUMMARY_MD = "summary.md"
VERDICTS = ("supported", "contradicted", "inconclusive")
#: how the answer names a multiplicity control of the per-cell verdicts (findings.json's `multiplicity.method`)
SHORT = {"Benjamini-Hochberg": "BH", "Holm": "Holm"}
#: the largest number of laws a source's exponent row lists one by one; beyond it, their range
LISTED_LAWS = 3


@dataclass
class Outputs:
    """What the analysis wrote into a study directory."""
    path: Path
    results: pd.DataFrame
    fits: dict = field(default_factory=dict)
    findings: dict | None = None

    @classmethod
    def read(cls, study_dir: str | Path) -> "Outputs":
        path = Path(study_dir)
        results = path / "results.parquet"
        return cls(path=path, results=pd.read_parquet(results) if results.exists() else pd.DataFrame(),
                   fits=read_json(path / "fits.json") or {}, findings=read_json(path / "findings.json"))

    def statements(self) -> list[dict]:
        return (self.findings or {}).get("statements", [])


def read_json(path: Path):
    """A JSON file of the study directory, or None when it is absent."""
    return json.loads(path.read_text()) if path.exists() else None


# ---------------------------------------------------------------------------------------------------- the answer


def _num(v: float | None, sign: bool = True) -> str:
    if v is None:
        return "-"
    return f"{v:+.3f}" if sign else f"{v:.2f}"


def _interval(s: dict) -> str:
    lo, hi = s["ci"]
    return f"{_num(s['estimate'])} [{_num(lo)}, {_num(hi)}]"


def _short(reason: str) -> str:
    """A reason up to its first ':' or ';' ('pretrain_size has 1 value(s); a law needs 2' -> 'pretrain_size has
    1 value(s)'); a statement the grid cannot measure for want of values: 'n/a: one value'."""
    if re.search(r"has one .+? value", reason or ""):
        return "n/a: one value"
    return re.split(r"[:;]", reason or "not measured")[0]


def _cell_counts(cells: list[dict], control: str) -> str:
    """How the per-cell verdicts fell, under the multiplicity control findings.json names (its `verdict`)."""
    counts = pd.Series([c["verdict"] for c in cells]).value_counts()
    parts = [f"{counts[v]} {v}" for v in VERDICTS if v in counts]
    return f"{len(cells)} cell{'s' * (len(cells) != 1)}{control}: {', '.join(parts)}" if cells else ""


def _comparison_lines(statements: list[dict], multiplicity: dict) -> list[str]:
    """One line per pooled "a beats b": difference, interval, verdict, and how its per-cell verdicts fell."""
    method = multiplicity.get("method", "")
    control = f" ({SHORT.get(method, method)})" if method else ""
    lines = []
    for s in statements:
        if "compare" not in s:
            continue
        a, b = s["compare"]
        text = f"{_interval(s)} {s['verdict']:<12}" if "ci" in s else f"{s.get('reason', ''):<37}"
        lines.append(f"  {a + ' vs ' + b:<20} {text}  {_cell_counts(s.get('cells', []), control)}".rstrip())
    return lines


def _growth_lines(statements: list[dict]) -> list[str]:
    """A row per source: its gain over scratch at the largest minus the smallest value of each axis."""
    by_source: dict[str, dict[str, dict]] = {}
    for s in statements:
        if "axis" in s and "source" in s:
            by_source.setdefault(s["source"], {})[s["axis"]] = s
    if not by_source:
        return []
    lines = [f"gain over scratch grows with {' / '.join(GROWTH.values())} (largest minus smallest):"]
    for source, axes in by_source.items():
        cells = []
        for axis in GROWTH:
            s = axes.get(axis)
            cells.append("-" if s is None else f"{_interval(s)} {s['verdict']}" if "ci" in s
                         else _short(s.get("reason", "")))
        lines.append(f"  {source:<8}" + " ".join(f"{c:<36}" for c in cells).rstrip())
    return lines


def _main_setting(laws: list[dict]) -> tuple | None:
    """The (budget, shots) with the most laws against pre-training images (the largest budget on a tie): the
    setting whose exponents the answer shows; the others are in summary.md."""
    counts = pd.Series([(f.get("budget"), f.get("shots")) for f in laws]).value_counts()
    if counts.empty:
        return None
    top = counts[counts == counts.max()].index
    return max(top, key=lambda k: (k[0] is not None, k[0] or 0))


def _exponents(laws: list[dict], source: str, order: list[str], absent: str) -> str:
    mine = sorted((f for f in laws if f["source"] == source),
                  key=lambda f: order.index(f["model"]) if f.get("model") in order else len(order))
    if not mine:
        return f"α: no law ({_short(absent)})" if absent else "α: no law"
    fitted = [f for f in mine if "alpha" in f.get("params", {})]
    if len(mine) > LISTED_LAWS:
        alphas = [f["params"]["alpha"] for f in fitted]
        above = sum(1 for f in fitted if (f["ci"]["alpha"][0] or 0) > 0)
        return f"α {min(alphas):.2f}–{max(alphas):.2f} over {len(fitted)} models, {above} intervals above 0" \
            if fitted else "α: no fit"
    parts = []
    for f in mine:
        if f in fitted:
            parts.append(f"{f['model']} {_num(f['params']['alpha'], False)} {_alpha_interval(f)}")
        else:
            parts.append(f"{f['model']} no fit")
    return " · ".join(parts)


def _alpha_interval(law: dict) -> str:
    """The exponent's 95% interval as fits.json states its kind: an end that is only the fit's bound is not shown."""
    lo, hi = law["ci"]["alpha"]
    kind = law.get("ci_kind", {}).get("alpha", "two-sided")
    if kind == "lower bound only":
        return f"[≥ {_num(lo, False)}]"
    if kind == "upper bound only":
        return f"[≤ {_num(hi, False)}]"
    if kind == "not identified":
        return "[not identified]"
    return f"[{_num(lo, False)}, {_num(hi, False)}]"


def _multipliers(cells: list[dict], source: str, absent: str) -> str:
    """The multiplier (D_T + D_target) / D_target of the source's cells on the full target: its range over the
    bounded cells (within the scratch trials' errors, finite interval) and how many cells those are."""
    mine = [c for c in cells if c.get("source") == source and "multiplier" in c]
    if not mine:
        return f"D_T: {_short(absent)}" if absent else "D_T: not measured"
    full = pd.DataFrame(mine)
    full = full[full["target_size"] == full.groupby(["budget", "shots"])["target_size"].transform("max")]
    bounded = full[(full["scratch_range"] == "within") & full["multiplier"].notna()
                   & full["multiplier_ci"].map(lambda ci: None not in ci)]
    if bounded.empty:
        return f"D_T unbounded in all {len(full)} cells"
    m = bounded["multiplier"]
    spread = f"×{m.min():.1f}" if f"{m.min():.1f}" == f"{m.max():.1f}" else \
        f"×{m.min():.1f}–×{m.max():.1f} (median ×{m.median():.1f})"
    return f"D_T {spread}, {len(bounded)} of {len(full)} cells bounded"


def _source_lines(out: Outputs, sources: list[str]) -> list[str]:
    """Per source: its exponents of error against pre-training images, and its D_T multipliers."""
    laws = [f for f in out.fits.get("laws", []) if f.get("axis") == "pretrain_size" and "source" in f]
    setting = _main_setting(laws)
    laws = [f for f in laws if (f.get("budget"), f.get("shots")) == setting]
    absent = out.fits.get("absent", {})
    where = f" (budget {setting[0]}, shots {setting[1] or 'all'})" if setting else ""
    order = model_order(out.results) if len(out.results) else []
    lines = [f"exponent α of error vs pre-training images{where} · D_T multiplier (bounded cells, full target):"]
    for source in sources:
        lines.append(f"  {source:<8}{_exponents(laws, source, order, absent.get('pretrain_size', ''))} · "
                     f"{_multipliers(out.fits.get('effective_data', []), source, absent.get('target_size', ''))}")
    return lines


def answer_lines(study_dir: str | Path, dashboard: str | Path | None = None) -> list[str]:
    """The study's answer in at most ANSWER_LINES lines: pooled findings, growth per axis, exponents and D_T
    multipliers by source, and where the dashboard (when written) and the tables are."""
    out = Outputs.read(study_dir)
    statements = out.statements()
    paths = [*([f"dashboard: {dashboard}"] if dashboard else []),
             f"tables:    {out.path / SUMMARY_MD} (every cell, law, D_T and finding); results.parquet, "
             "fits.json, findings.json"]
    if not statements:
        return ["answer: no finished trials, nothing to answer", *paths]
    sources = list(dict.fromkeys(s["source"] for s in statements if "axis" in s and "source" in s))
    head = "answer (test ROC-AUC difference [95% paired interval], verdict; findings.json):"
    pairs = _comparison_lines(statements, (out.findings or {}).get("multiplicity", {}))
    body = [*pairs, *_growth_lines(statements), *_source_lines(out, sources)]
    if 1 + len(body) + len(paths) > ANSWER_LINES:  # more sources than the screen holds: the pooled ones only
        body = [*pairs, f"the gain's growth, exponents and D_T of {len(sources)} sources: "
                                                f"{SUMMARY_MD}"]
    return [head, *body, *paths][:ANSWER_LINES]


# ---------------------------------------------------------------------------------------------------- summary.md


def _markdown(frame: pd.DataFrame, floats: str = "{:.3f}") -> str:
    if frame.empty:
        return "(none)\n"
    def text(v):
        return floats.format(v) if isinstance(v, float) else str(v).replace("|", "\\|")
    head = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "| " + " | ".join("---" for _ in frame.columns) + " |"
    rows = ["| " + " | ".join(text(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, rule, *rows]) + "\n"


def _block(lines: list[str]) -> str:
    return "```\n" + "\n".join(lines) + "\n```\n" if lines else "(none)\n"


def _findings_rows(statements: list[dict]) -> pd.DataFrame:
    """Every statement, pooled first, then each one's per-cell statements."""
    rows = [findings_table({"statements": [s]}).assign(level="pooled") for s in statements]
    rows += [findings_table({"statements": s["cells"]}).assign(level="cell") for s in statements if s.get("cells")]
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def summary_markdown(study_dir: str | Path, answer: list[str], notes: list[str], timing: str) -> str:
    """summary.md: the answer, then the full tables (tuned test AUC per cell, findings pooled and per cell, laws,
    effective data, what the grid lacks, trust), then the time the study took."""
    out = Outputs.read(study_dir)
    best = best_per_cell(out.results) if len(out.results) else out.results
    parts = [f"# Summary of {out.path.name}\n", "## The answer\n", _block(answer)]
    parts += ["## Tuned test ROC-AUC per cell (mean over seeds, sd between them)\n",
              _markdown(summary_table(best)) if len(best) else "(no finished trial)\n"]
    statements = out.statements()
    parts += [f"## Findings ({(out.findings or {}).get('interval', 'paired bootstrap')})\n",
              _markdown(_findings_rows(statements)) if statements else "(none)\n"]
    parts += ["## Laws of test error (1 - AUC), 95% intervals\n", _block(describe_fits(out.fits.get("laws", [])))]
    parts += ["## Effective data transferred D_T (target images a scratch model would need beyond the fine-tuned "
              "one's), 95% intervals\n", _block(describe_transfer(out.fits.get("effective_data", [])))]
    absent = out.fits.get("absent", {})
    lacks = [f"{axis}: {why}" for axis, why in absent.items()]
    lacks += [n for n in notes if not any(n.endswith(why) for why in absent.values())]  # the analysis' other notes
    parts += ["## What this study's grid lacks\n", "".join(f"- {n}\n" for n in lacks) or "(nothing)\n"]
    trust = trust_table(out.results) if len(best) else pd.DataFrame()
    parts += ["## Trust of the tuned models on test (ECE before / after temperature T; seed-mean AUC against the "
              "seeds' ensemble; pointing game against the lesion-area baseline)\n", _markdown(trust)]
    parts += ["## Time\n", f"{timing}\n"]
    return "\n".join(parts)
