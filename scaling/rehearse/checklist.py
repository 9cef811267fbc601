"""The rehearsal's checklist: each stage with what it exercised (read back from what the study wrote: ledgers,
summary, results, MLflow index, the DDP job's report), what the real run needs (data roots, weights, with the
commands that check, prepare and fetch them) and its projected cost (cost.py)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from scaling.config import StudyConfig
from scaling.models import params, rung
from scaling.models.published import DOWNLOAD, needed
from scaling.rehearse import cost
from scaling.rehearse.reduce import RESOLUTION
from scaling.sweep.ledger import ENDED, Ledger
from scaling.sweep.plan import pretrain_sizes
from scaling.train.augment import crop_size


def build(cfg: StudyConfig, plan, study: Path, runs, seconds: float, config_path: str = "<config>") -> dict:
    """The checklist as plain data: `stages` (name, ok, what it exercised), `needs`, `cost`, `passed`."""
    summary = _json(study / "summary.json")
    trials = Ledger(study / "trials").entries() if (study / "trials").is_dir() else {}
    pretrain = Ledger(study / "pretrain").entries() if (study / "pretrain").is_dir() else {}
    stages = [
        _stage("config", True, f"{cfg.name} loaded and checked; rehearsal config {study.parent / 'rehearsal.yaml'} "
               f"({cfg.data.resolution} -> {RESOLUTION} px, {len(plan.trained)} rungs trained, grid: cover)"),
        stand_in_data(plan),
        data_stage(cfg, plan, summary),
        weights_stage(plan, trials),
        models_stage(cfg, plan),
        _stage("pre-training", bool(pretrain) and all(e.get("status") == "finished" for e in pretrain.values()),
               ", ".join(f"{name} {e.get('status')}" for name, e in pretrain.items()) or "no job ran"),
        *sweep_stages(cfg, plan, trials),
        ddp_stage(cfg, runs.ddp),
        resume_stage(runs, trials, study),
        outputs_stage(study, summary),
    ]
    projected = cost.project(cfg)
    return {"study": cfg.name, "seconds": round(seconds), "stages": stages,
            "passed": all(s["ok"] for s in stages), "needs": needs(cfg, config_path),
            "cost": cost.describe(projected, nodes=16), "gpu_hours": round(projected.gpu_hours)}


def _stage(name: str, ok: bool, what: str) -> dict:
    return {"stage": name, "ok": bool(ok), "what": what}


def _json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def stand_in_data(plan) -> dict:
    parts = [f"{name} {s.images} images ({s.root})" for name, s in plan.data.items()]
    return _stage("stand-in data", bool(plan.data), "real layouts, read by the real parsers: " + "; ".join(parts))


def data_stage(cfg: StudyConfig, plan, summary: dict) -> dict:
    planted = sum(len(s.planted) for s in plan.data.values())
    leakage = summary.get("leakage", {})
    found = sum(c.get("near_duplicates", 0) for c in leakage.values())
    removed = sum(c.get("removed", 0) for c in leakage.values())
    ok = bool(summary) and (removed == planted if cfg.data.leakage.policy == "remove" else True)
    return _stage("data stage + leakage guard", ok,
                  f"shards built under {plan.raw['data']['cache_dir']}; leakage policy {cfg.data.leakage.policy}: "
                  f"{planted} near-duplicates planted in the NIH stand-in, {found} found, {removed} removed")


def weights_stage(plan, trials: dict) -> dict:
    natural = [e for e in trials.values() if e.get("source") in ("natural", "both") and e.get("status") in ENDED]
    files = len(plan.weights)
    meta = ", ".join(f"{m} ({c['hub_tensors']} hub tensors, {c['npz_arrays']} npz arrays)"
                     for m, c in plan.meta_weights.items())
    return _stage("published weights", files > 0 and bool(natural) if plan.weights else True,
                  f"{files} stand-in files (HF cache layout, Google .npz) loaded by {len(natural)} natural/both "
                  f"trials" + (f"; names and shapes checked on the meta device: {meta}" if meta else ""))


def models_stage(cfg: StudyConfig, plan) -> dict:
    rungs = [f"{m} {params(rung(cfg.models.ladder, m)) / 1e6:.0f}M{' (trained)' if m in plan.trained else ''}"
             for m in cfg.models.sizes]
    return _stage("models", True, f"every rung built ({', '.join(rungs)} parameters); the untrained ones on the "
                                  f"meta device, FLOPs counted at the {crop_size(cfg.data.resolution)} px crop")


def sweep_stages(cfg: StudyConfig, plan, trials: dict) -> list[dict]:
    """The sweep's outcome, and each configured axis value against the values of trials that ended."""
    ended = [e for e in trials.values() if e.get("status") in ENDED]
    statuses = pd.Series([e.get("status") for e in trials.values()]).value_counts().to_dict()
    budgets = dict(zip(plan.raw["finetune"]["budgets"], cfg.finetune.budgets))
    sizes = dict(zip(plan.raw["data"]["source_sizes"], cfg.data.source_sizes))
    axes = {"model": (plan.trained, {e["model"] for e in ended}),
            "source": (cfg.sweep.sources, {e["source"] for e in ended}),
            "pre-training point": ([(s, n) for s in cfg.sweep.sources if s not in ("scratch", "both")
                                    for n in pretrain_sizes(cfg, s)],
                                   {(e["source"], sizes.get(e["pretrain_size"], e["pretrain_size"])) for e in ended}),
            "budget": (cfg.finetune.budgets, {budgets[e["budget"]] for e in ended}),
            "shots": (cfg.data.shots, {e["shots"] for e in ended})}
    lines, ok = [], bool(ended)
    for axis, (wanted, got) in axes.items():
        missing = [v for v in wanted if v not in got]
        ok &= not missing
        lines.append(f"{axis}: {len(wanted) - len(missing)}/{len(wanted)}" + (f" (missing {missing})" if missing else ""))
    both = [e for e in ended if e["source"] == "both"]
    lines.append(f"both from {cfg.sweep.both_from or 'own natural'}: {len(both)} trial(s)")
    return [_stage("fine-tuning sweep", ok, f"{len(trials)} trials ({statuses}); every axis value trained: "
                   + "; ".join(lines))]


def ddp_stage(cfg: StudyConfig, ddp: dict) -> dict:
    if "error" in ddp:
        return _stage("DDP job + memory preflight", False, f"failed: {ddp['error']} (see {ddp.get('log')})")
    auto = cfg.finetune.recipe.micro_batch == "auto"
    ok = "step" in ddp and (not auto or "preflight_peak_gb" in ddp)
    return _stage("DDP job + memory preflight", ok,
                  f"{ddp.get('job')} on {ddp.get('workers')} Ray Train workers ({ddp.get('backend')}), "
                  f"{ddp.get('step')} steps in {ddp.get('seconds')} s; micro_batch {cfg.finetune.recipe.micro_batch}"
                  f" -> {ddp.get('micro_batch')} x {ddp.get('grad_accum')} accumulation"
                  + (f", preflight estimate {ddp['preflight_peak_gb']:.2f} GB" if "preflight_peak_gb" in ddp else ""))


def resume_stage(runs, trials: dict, study: Path) -> dict:
    kept = [n for n, e in runs.ended_before_stop.items() if trials.get(n, {}).get("started_at") == e.get("started_at")]
    attempts = _json(study / "attempts.json").get("finetune", 0)
    ok = runs.exits[:2] == [75, 0] and bool(runs.ended_before_stop) and len(kept) == len(runs.ended_before_stop)
    return _stage("stop + resume", ok,
                  f"driver exits {runs.exits} ({', '.join(f'{s:.0f} s' for s in runs.seconds)}); stopped by SIGTERM "
                  f"after {len(runs.ended_before_stop)} trial(s) ended, {len(kept)} of them kept (not run again); "
                  f"fine-tuning started {attempts} times")


def outputs_stage(study: Path, summary: dict) -> dict:
    files = ["results.parquet", "fits.json", "findings.json", "dashboard.html", "mlflow_runs.json", "summary.json"]
    present = [f for f in files if (study / f).is_file()]
    runs = len(_json(study / "mlflow_runs.json"))
    return _stage("tracking, results, analysis, dashboard", len(present) == len(files),
                  f"{', '.join(present)} written" + (f"; missing {sorted(set(files) - set(present))}"
                                                     if len(present) < len(files) else "")
                  + f"; {runs} MLflow runs indexed; {summary.get('finished', 0)} trials finished")


def needs(cfg: StudyConfig, config_path: str) -> dict:
    """What the real run reads: each dataset root (and whether it exists here) with its check and prepare
    commands, and each published weights file or repository with the download command."""
    data = []
    for ref in cost.dataset_refs(cfg):
        root = ref.options.get("root", "")
        opts = " ".join(f"--option {k}={v}" for k, v in ref.options.items() if k not in ("root", "version"))
        version = f" --version {ref.options['version']}" if "version" in ref.options else ""
        args = f"{ref.dataset} --root {root}{version}{(' ' + opts) if opts else ''}"
        data.append({"dataset": ref.dataset, "root": root, "present": bool(root) and Path(root).is_dir(),
                     "describe": f"python -m scaling.data describe {args}",
                     "prepare": f"python -m scaling.data prepare {args} --resolution {cfg.data.resolution} "
                                f"--encoding {cfg.data.encoding} --cache {cfg.data.cache_dir}"})
    weights = []
    for role, point, model in needed(cfg):
        r = rung(cfg.models.ladder, model)
        where = (f"Hugging Face {r.hub_repo(point.tag or None)}" if point.weights == "hf"
                 else point.weights.format(model=model))
        weights.append({"point": point.name, "model": model, "where": where,
                        "present": point.weights != "hf" and Path(where).is_file()})
    return {"data": data, "weights": weights, "download": DOWNLOAD.replace("<this study's config>", config_path)}


def render(report: dict) -> str:
    """The checklist as Markdown (printed at the end of the rehearsal and written to rehearsal.md)."""
    minutes, secs = divmod(report["seconds"], 60)
    lines = [f"# Rehearsal of {report['study']}: {'PASSED' if report['passed'] else 'FAILED'} in {minutes} min "
             f"{secs} s", "", "## Stages", ""]
    lines += [f"- [{'x' if s['ok'] else ' '}] **{s['stage']}**: {s['what']}" for s in report["stages"]]
    lines += ["", "## What the real run needs", "", "Data (check each with `describe`; `prepare` builds a "
              "dataset's shards ahead of the study; a merged source is built by the study's data stage):"]
    for d in report["needs"]["data"]:
        lines += [f"- {d['dataset']} at {d['root']} ({'present' if d['present'] else 'absent here'})",
                  f"  `{d['describe']}`", f"  `{d['prepare']}`"]
    lines += ["", f"Published weights, fetched on a login node with `{report['needs']['download']}`:"]
    lines += [f"- {w['point']} {w['model']}: {w['where']}{' (present)' if w['present'] else ''}"
              for w in report["needs"]["weights"]]
    lines += ["", "## Projected cost of the real run", "", *[f"    {line}" for line in report["cost"]], ""]
    return "\n".join(lines)
