"""The dashboard page: one self-contained HTML file, every script inlined (no CDN: it opens from a cluster
file system without internet).

Vega, Vega-Lite and vega-embed come from vl-convert's bundle (the one ``altair.Chart.save(inline=True)`` uses);
the filter bar, the findings and trial tables and their sorting are a little hand-written JavaScript, because
they must drive several independent Vega views and HTML tables from one set of controls.
"""
from __future__ import annotations

import html
import json
import re

from altair.utils._importers import vl_version_for_vl_convert

SCRIPT = r"""
(() => {  // its own scope: the Vega bundle defines globals of its own
const D = JSON.parse(document.getElementById('dashboard-data').textContent);
const FILTERS = ['source', 'model', 'budget', 'shots'];
const state = {source: null, model: null, budget: null, shots: null};
const views = {};
const sortBy = {key: null, up: true};

function matches(row, skip) {
  return FILTERS.every(f => skip.includes(f) || state[f] === null || row[f] === undefined || row[f] === null
                       || row[f] === state[f] || (Array.isArray(row[f]) && row[f].includes(state[f])));
}
function cell(v, digits) {
  if (v === null || v === undefined || (typeof v === 'number' && isNaN(v))) return '';
  if (typeof v !== 'number' || Number.isInteger(v)) return String(v);
  return Math.abs(v) < 0.01 ? v.toPrecision(2) : v.toFixed(digits);
}
function renderTrials() {
  const body = document.querySelector('#trials tbody');
  let rows = D.trials.filter(r => matches(r, []));
  if (sortBy.key) {
    const k = sortBy.key, s = sortBy.up ? 1 : -1;
    rows = rows.slice().sort((a, b) => (a[k] > b[k] ? 1 : a[k] < b[k] ? -1 : 0) * s);
  }
  body.innerHTML = '';
  for (const r of rows) {
    const tr = document.createElement('tr');
    tr.title = D.hyper.map(h => h + ' = ' + cell(r[h], 5)).join('\n');
    if (r.status && r.status !== 'finished') tr.className = 'unfinished status-' + r.status;
    for (const c of D.trial_columns) {
      const td = document.createElement('td');
      if (c === 'status' && r.status !== 'finished') {
        td.textContent = '\u26a0 ' + r.status + (r.status_detail ? ': ' + r.status_detail : '');
      } else if (c === 'mlflow') {
        if (r.link) { const a = document.createElement('a'); a.href = r.link; a.textContent = r.run_id.slice(0, 8);
                      a.target = '_blank'; td.appendChild(a); }
      } else { td.textContent = cell(r[c], 3); }
      tr.appendChild(td);
    }
    body.appendChild(tr);
  }
  document.getElementById('trial-count').textContent = rows.length + ' of ' + D.trials.length + ' trials';
}
function renderFindings() {
  const body = document.querySelector('#findings tbody');
  body.innerHTML = '';
  for (const s of D.findings) {
    if (!matches(s, s.pooled ? ['model', 'budget', 'shots'] : [])) continue;
    const tr = document.createElement('tr');
    tr.className = 'verdict-' + s.verdict + (s.pooled ? ' pooled' : '');
    const ci = s.ci ? '[' + s.ci[0].toFixed(3) + ', ' + s.ci[1].toFixed(3) + ']' : (s.reason || '');
    for (const v of [s.statement, s.estimate === undefined ? '' : s.estimate.toFixed(3), ci,
                     s.n_seeds === undefined ? '' : s.n_seeds, s.bootstrap || '', s.verdict]) {
      const td = document.createElement('td'); td.textContent = v; tr.appendChild(td);
    }
    body.appendChild(tr);
  }
}
async function applyFilters() {
  for (const f of FILTERS) {
    const v = document.getElementById('filter-' + f).value;
    state[f] = v === '' ? null : JSON.parse(v);
  }
  await Promise.all(Object.values(views).map(view => {
    for (const f of FILTERS) view.signal('f_' + f, state[f]);
    return view.runAsync();
  }));
  renderTrials(); renderFindings();
  document.body.dataset.filtered = JSON.stringify(state);
}
async function main() {
  for (const f of FILTERS) {
    const select = document.getElementById('filter-' + f);
    for (const v of D.options[f]) {
      const o = document.createElement('option'); o.value = JSON.stringify(v);
      o.textContent = f === 'shots' && v === 0 ? '0 (every target image)' : String(v); select.appendChild(o);
    }
    select.addEventListener('change', applyFilters);
  }
  document.querySelectorAll('#trials th').forEach((th, i) => th.addEventListener('click', () => {
    const k = D.trial_columns[i]; sortBy.up = sortBy.key === k ? !sortBy.up : true; sortBy.key = k; renderTrials();
  }));
  for (const [id, spec] of Object.entries(D.specs)) {
    const result = await vegaEmbed('#' + id, spec, {renderer: 'svg', actions: false});
    views[id] = result.view;
  }
  renderTrials(); renderFindings();
  document.body.dataset.ready = 'true';
}
main().catch(e => { console.error(e); document.body.dataset.ready = 'error'; });
})();
"""

STYLE = """
body { font: 13px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
#filters { position: sticky; top: 0; background: #f6f6f6; padding: .5em; border: 1px solid #ddd; z-index: 2; }
#filters label { margin-right: 1.2em; }
table { border-collapse: collapse; font-size: 12px; }
td, th { border-bottom: 1px solid #eee; padding: 2px 8px; text-align: left; }
#trials th { cursor: pointer; background: #fafafa; }
#trials tr.unfinished td { color: #a11; }
.note { color: #7a4b00; background: #fff6e0; padding: .4em .6em; display: inline-block; }
.verdict-supported td:last-child, span.verdict-supported { color: #0a6b2b; font-weight: 600; }
.verdict-contradicted td:last-child, span.verdict-contradicted { color: #a11; font-weight: 600; }
#answer pre { background: #f3f7fb; border: 1px solid #d6e2ee; max-height: none; font-size: 12px; }
tr.pooled td:first-child { font-weight: 600; }
pre { background: #f8f8f8; padding: .5em; max-height: 24em; overflow: auto; }
"""


def _view(view_id: str, title: str, spec: dict | None, absent: str, intro: str) -> tuple[str, dict]:
    body = f'<div id="{view_id}" class="view"></div>' if spec else f'<p class="note">{html.escape(absent)}</p>'
    return f"<h2>{html.escape(title)}</h2><p>{intro}</p>{body}", ({view_id: spec} if spec else {})


def _answer(lines: list[str]) -> str:
    """The study's answer, the lines its run printed last (`scaling.analysis.answer`), verdicts coloured."""
    text = html.escape("\n".join(lines))
    text = re.sub(r"\b(supported|contradicted)\b", r'<span class="verdict-\1">\1</span>', text)
    return f'<section id="answer"><h2>The answer</h2><pre>{text}</pre></section>'


def render(title: str, answer: list[str], views: list[tuple[str, str, dict | None, str, str]], data: dict,
           provenance: str, notes: list[str]) -> str:
    """The page: the study's answer, what its grid lacks, the filter bar, the views in order (or, where a view
    cannot be drawn, what is absent), the tables, provenance. ``data`` holds trials, findings, options and
    hyper-parameter names for the script."""
    import vl_convert

    sections, specs = [], {}
    for view in views:
        text, spec = _view(*view)
        sections.append(text)
        specs.update(spec)
    payload = json.dumps({**data, "specs": specs}, default=str).replace("</", "<\\/")
    filters = "".join(f'<label>{f} <select id="filter-{f}"><option value="">all</option></select></label>'
                      for f in ("source", "model", "budget", "shots"))
    header = "".join(f"<th>{html.escape(c)}</th>" for c in data["trial_columns"])
    absent = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    bundle = vl_convert.javascript_bundle(vl_version=vl_version_for_vl_convert())
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>{STYLE}</style>
<script>{bundle}</script></head>
<body><h1>{html.escape(title)}</h1>
{_answer(answer)}
{"<section id='lacks'><h2>What this study's grid lacks</h2><ul>" + absent + "</ul></section>" if notes else ""}
<div id="filters">{filters}</div>
{"".join(sections)}
<h2>Findings</h2><p>Each statement of the question, the difference of mean test ROC-AUC with its 95% paired
bootstrap interval, the number of seeds, what the bootstrap resampled, and the verdict (supported: the interval
lies above 0; contradicted: below; inconclusive: it holds 0).</p>
<table id="findings"><thead><tr><th>statement</th><th>AUC difference</th><th>95% interval</th><th>seeds</th>
<th>bootstrap</th><th>verdict</th></tr></thead><tbody></tbody></table>
<h2>Trials</h2><p><span id="trial-count"></span>; click a column to sort, hover a row for its hyper-parameters,
follow its run to MLflow. A trial that did not finish is marked &#9888; with its status and why (e.g. the step
where its loss diverged).</p>
<table id="trials"><thead><tr>{header}</tr></thead><tbody></tbody></table>
<h2>Provenance</h2>{provenance}
<script type="application/json" id="dashboard-data">{payload}</script>
<script>{SCRIPT}</script>
</body></html>
"""
