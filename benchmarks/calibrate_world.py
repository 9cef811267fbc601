"""How the synthetic world of a study behaves, without the sweep: pre-train, fine-tune at fixed learning rates,
and print test ROC-AUC per model x source x pre-training size (mean, sd and standard error over the fine-tuning
seeds), the pre-training validation metrics, and how much a second pre-training seed adds to a cell's spread.

It runs the study's own jobs (scaling.sweep.jobs.StudyJobs, the loop in Train's local mode, one thread each) in this
process: no Tune, no MLflow. Use it to calibrate a world before spending a whole study on it, and to measure what
the default study cannot afford, e.g. several pre-training seeds:

    python benchmarks/calibrate_world.py --models w8 --sources scratch,medical --sizes 4096 --pretrain-seeds 0,1

The spread a second pre-training seed adds: for each (model, source, size), the fine-tuning seeds' mean AUC per
pre-training seed; `pre sd` is the sd of those means, `ft sd` the mean over pre-training seeds of the sd over
fine-tuning seeds. A cell of the study (one pre-training seed) sees only `ft sd`; `pre sd` is what it leaves out.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import torch  # noqa: E402  (Ray reads the settings above)

from scaling.config import load_config  # noqa: E402
from scaling.data.stage import prepare_study_data  # noqa: E402
from scaling.sweep.jobs import StudyJobs  # noqa: E402
from scaling.sweep.plan import SCRATCH, FinetunePoint, PretrainJob  # noqa: E402
from scaling.train.job import export_weights, run_local  # noqa: E402
from scaling.train.store import WEIGHTS_FILE, CheckpointStore  # noqa: E402


def _sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else float("nan")


def _csv(text: str) -> list[str]:
    return [t for t in text.split(",") if t]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="studies/configs/default.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--models", default="", help="rungs (default: the config's)")
    parser.add_argument("--sources", default="", help="sources, scratch included (default: the config's)")
    parser.add_argument("--sizes", default="", help="pre-training sizes (default: the config's)")
    parser.add_argument("--lrs", default="", help="fine-tuning learning rates (default: the geometric "
                                                  "middle of each source's lr range)")
    parser.add_argument("--pretrain-seeds", default="", help="pre-training seeds (default: the study seed)")
    parser.add_argument("--work", default="", help="folder for checkpoints and jobs (default: a new temp dir); "
                                                   "pre-training checkpoints there are reused")
    args = parser.parse_args()

    torch.set_num_threads(1)
    import ray.train  # noqa: F401  (configures Ray's loggers, which are quietened next)

    for name in ("ray", "ray.train"):
        logging.getLogger(name).setLevel(logging.WARNING)  # not every report of every job
    cfg = load_config(args.config, args.set)
    models = _csv(args.models) or cfg.models.sizes
    sources = _csv(args.sources) or cfg.sweep.sources
    sizes = [int(s) for s in _csv(args.sizes)] or cfg.data.source_sizes
    lrs = [float(x) for x in _csv(args.lrs)]
    wd = (cfg.finetune.weight_decay_range[0] * cfg.finetune.weight_decay_range[1]) ** 0.5
    pre_seeds = [int(s) for s in _csv(args.pretrain_seeds)] or [cfg.seed]
    work = Path(args.work or tempfile.mkdtemp(prefix="calibrate-"))
    work.mkdir(parents=True, exist_ok=True)
    data = prepare_study_data(cfg)
    jobs = StudyJobs(cfg=cfg, data=data, store_dir=str(work / "checkpoints"), jobs_dir=str(work / "jobs"))
    store = CheckpointStore(jobs.store_dir)
    budget = cfg.finetune.budgets[0]

    def pretrain(job: PretrainJob) -> dict:
        """The job's checkpoint (built unless stored) and its final validation metrics."""
        if job.source == "both":
            pretrain(jobs.first_stage(job))
        metrics_file = work / "pretrain" / f"{job.name}.json"

        def build(tmp: Path) -> None:
            started = time.perf_counter()
            result = run_local(jobs.pretrain_spec(job), name=job.name, storage_path=jobs.jobs_dir)
            export_weights(result, tmp / WEIGHTS_FILE)
            metrics_file.parent.mkdir(exist_ok=True)
            metrics_file.write_text(json.dumps({**{k: v for k, v in result.metrics.items()
                                                  if k.startswith("val_") and isinstance(v, float)},
                                                "seconds": time.perf_counter() - started}))

        store.get_or_create(jobs.pretrain_parts(job), build)
        return json.loads(metrics_file.read_text()) if metrics_file.exists() else {}

    rows = []
    for model in models:
        for source in sources:
            for size in ([0] if source == SCRATCH else sizes):
                lo, hi = cfg.finetune.lr_range_for(source)
                for lr in lrs or [(lo * hi) ** 0.5]:
                    per_seed = []  # per pre-training seed: the fine-tuning seeds' AUCs
                    pre_metrics = {}
                    started = time.perf_counter()
                    for pseed in (pre_seeds[:1] if source == SCRATCH else pre_seeds):
                        point = FinetunePoint(model, source, size, budget, 0, 0)
                        spec = jobs.finetune_spec(point, lr, wd)
                        if source != SCRATCH:
                            job = PretrainJob(model, source, size, pseed)
                            pre_metrics = pretrain(job)
                            spec = replace(spec, init=jobs.pretrained_weights(job))
                        name = f"{point.name}-lr{lr:g}-p{pseed}"
                        result = run_local(spec, name=name, storage_path=jobs.jobs_dir)
                        per_seed.append(json.loads(result.metrics["test_roc_auc_seeds"]))
                    means = [statistics.mean(a) for a in per_seed]
                    ft_sd = statistics.mean(_sd(a) for a in per_seed)
                    rows.append((model, source, size, lr, statistics.mean(means), ft_sd,
                                 ft_sd / len(per_seed[0]) ** 0.5,
                                 _sd(means),
                                 pre_metrics, time.perf_counter() - started))
                    print_row(rows[-1], flush=True)
    print(f"\n{cfg.name}: budget {budget} steps, {len(cfg.sweep.seeds)} fine-tuning seeds, pre-training seeds "
          f"{pre_seeds}, work {work}")
    print(HEAD)
    for row in rows:
        print_row(row)


HEAD = (f"{'model':<6} {'source':<8} {'size':>5} {'lr':>6} {'test AUC':>8} {'ft sd':>6} {'ft se':>6} {'pre sd':>6} "
        f"{'s':>5}  pre-training validation")


def print_row(row, flush: bool = False) -> None:
    model, source, size, lr, auc, sd, se, pre_sd, pre, seconds = row
    shown = " ".join(f"{k[4:]}={v:.3f}" for k, v in pre.items() if k in ("val_roc_auc", "val_accuracy"))
    print(f"{model:<6} {source:<8} {size:>5} {lr:>6.3g} {auc:>8.3f} {sd:>6.3f} {se:>6.3f} {pre_sd:>6.3f} "
          f"{seconds:>5.0f}  {shown}", flush=flush)


if __name__ == "__main__":
    main()
