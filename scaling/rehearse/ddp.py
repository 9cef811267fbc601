"""The cluster path of one job: a fine-tuning job of the rehearsal's grid on the real config's
`resources.num_workers` Ray Train workers (DDP over gloo on CPU), with its `micro_batch` (the preflight runs on
rank 0 and is broadcast to the others), from the stand-in BiT-M weights when the grid has them.

The sweep itself trains each job inside its Tune trial (reduce.py): on 2 cores, starting several worker
processes per job for every job would take most of the rehearsal's time. Run as a module, in its own process
(its own Ray, the stand-ins' Hugging Face cache in its environment):

    python -m scaling.rehearse.ddp CONFIG STUDY_DIR WORKERS OUT_JSON [--address HOST:PORT]
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

from scaling.config import load_config
from scaling.data.stage import prepare_study_data
from scaling.sweep.jobs import StudyJobs
from scaling.sweep.plan import finetune_points

#: what the job reports that the checklist shows
REPORTED = ("step", "micro_batch", "grad_accum", "preflight_peak_gb", "val_roc_auc", "test_roc_auc")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scaling.rehearse.ddp", description=__doc__)
    parser.add_argument("config")
    parser.add_argument("study_dir")
    parser.add_argument("workers", type=int)
    parser.add_argument("out_json")
    parser.add_argument("--address")
    args = parser.parse_args(argv)
    import ray

    from scaling.study import start_ray
    from scaling.train.job import run_job

    cfg = load_config(args.config)
    out = Path(args.out_json).resolve().parent
    data = prepare_study_data(cfg, log=lambda line: None)  # the study's shards: a cache hit
    study = Path(args.study_dir).resolve()
    jobs = StudyJobs(cfg=cfg, data=data, store_dir=str(study / "checkpoints"), jobs_dir=str(out / "jobs"))
    points = finetune_points(cfg)
    point = max(points, key=lambda p: p.source == "natural" and p.pretrain_size == max(
        q.pretrain_size for q in points))  # the largest published point (BiT-M), else the first point
    # one seed: four workers of two replicas each would hold eight models on a small shared machine
    spec = jobs.finetune_spec(point, cfg.finetune.lr_range[0], cfg.finetune.weight_decay_range[0])
    spec = replace(spec, seeds=spec.seeds[:1])
    (out / "logs").mkdir(parents=True, exist_ok=True)
    start_ray(args.address, out / "logs")
    resources = replace(cfg.resources, num_workers=args.workers,
                        cpus_per_worker=float(ray.cluster_resources()["CPU"]) / args.workers)
    started = time.perf_counter()
    try:
        result = run_job(spec, name=f"ddp-{point.name}", storage_path=out / "jobs", resources=resources)
    finally:
        ray.shutdown()
    metrics = result.return_value or {}
    report = {"workers": args.workers, "backend": "gloo", "job": point.name, "init": spec.init,
              "seconds": round(time.perf_counter() - started, 1),
              **{k: metrics[k] for k in REPORTED if k in metrics}}
    Path(args.out_json).write_text(json.dumps(report, indent=1))
    print(json.dumps(report))
    return 0 if report.get("step") == spec.recipe.steps else 1


if __name__ == "__main__":
    raise SystemExit(main())
