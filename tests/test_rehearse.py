"""The rehearsal (`studies/scaling_law.py --rehearse`): its parts (the covering grid, stand-in data read by the
real parsers with planted near-duplicates, stand-in weights loaded by the real loaders, the CPU preflight), and
the covidx_bit rehearsal end to end, asserting on what the study it ran wrote."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from scaling.config import load_config
from scaling.models.weights import check_weights, create_model
from scaling.rehearse import standin_data, standin_weights
from scaling.rehearse.reduce import scaled_sizes
from scaling.sweep.plan import finetune_points, pretrain_jobs
from scaling.train import memory

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "studies" / "configs"


def test_cover_grid_holds_every_axis_value_in_a_few_trials():
    cfg = load_config(CONFIGS / "covidx_bit.yaml", ["sweep.grid=cover", "models.sizes=[R50x1, R101x1]"])
    full = finetune_points(load_config(CONFIGS / "covidx_bit.yaml", ["models.sizes=[R50x1, R101x1]"]))
    points = finetune_points(cfg)
    assert set(points) <= set(full) and len(points) <= 10 < len(full)
    assert {p.shots for p in points} == {0, 1, 5, 10, 100}
    assert {p.budget for p in points} == {500, 2000}
    assert {p.model for p in points} == {"R50x1", "R101x1"}
    assert {(p.source, p.pretrain_size) for p in points if p.source in ("natural", "medical", "scratch")} == {
        ("scratch", 0), ("natural", 1281167), ("natural", 14197122),
        ("medical", 30000), ("medical", 100000), ("medical", 300000)}
    assert any(p.source == "both" for p in points)
    cells = pd.Series([p.cell for p in points]).value_counts()
    assert cells.max() == cfg.sweep.trials_per_cell  # one cell keeps all its samples: the search and ASHA run
    assert pretrain_jobs(cfg) == pretrain_jobs(cfg)  # a pure function of the config: a resume plans the same


def test_projected_disk_counts_each_seeds_weights_and_optimiser_state_of_the_checkpoints_kept():
    from scaling.models import params, rung
    from scaling.rehearse.cost import project

    sizes = ["models.sizes=[R50x1]", "finetune.recipe.optimizer=sgd", "sweep.seeds=[0, 1]"]
    on_workers = project(load_config(CONFIGS / "covidx_bit.yaml", [*sizes, "resources.num_workers=4"]))
    in_trial = project(load_config(CONFIGS / "covidx_bit.yaml", [*sizes, "resources.num_workers=0"]))
    weights = params(rung("bit", "R50x1")) * 4
    # a fine-tuning trial: 2 seeds x (weights + momentum), the last two checkpoints kept on Train workers
    assert on_workers.largest_job_bytes == weights * 2 * 2 * 2
    assert in_trial.largest_job_bytes == weights * 2 * 2
    assert on_workers.checkpoint_bytes > in_trial.checkpoint_bytes > in_trial.finetune_trials * weights * 4


def test_scaled_sizes_keep_order_and_stay_distinct():
    assert scaled_sizes([30000, 100000, 300000], 48) == [5, 16, 48]
    assert scaled_sizes([300, 30, 31], 48) == [48, 5, 6]
    assert scaled_sizes([], 48) == []


def test_planted_near_duplicates_are_found_and_unrelated_images_are_not(tmp_path):
    from scaling.data.leakage import find_leaks
    from scaling.data.preprocess import Preprocess
    from scaling.data.registry import open_dataset
    from scaling.data.shards import prepare_shards

    _, tests = standin_data.covidx(tmp_path / "covidx", per_class=6, test_per_class=4, seed=0)
    nih = standin_data.nih(tmp_path / "nih", n=24, seed=1, plant=dict(sorted(tests.items())[:3]))
    assert len(nih.planted) == 3
    pre = Preprocess(resolution=32, crop="center", clahe=False, storage="uint8", encoding="png")
    target = prepare_shards(open_dataset("covidx", root=str(tmp_path / "covidx")), pre, tmp_path / "cache")
    source = prepare_shards(open_dataset("nih", root=str(tmp_path / "nih")), pre, tmp_path / "cache")
    keys = source.records["key"]
    leaks = find_leaks(target, target.records["index"].to_numpy(), source, source.records["index"].to_numpy(), 8,
                       str, lambda row: keys.loc[row])
    assert sorted({leak.source_file for leak in leaks}) == nih.planted


def test_a_target_without_a_test_split_gets_one_by_patient(tmp_path):
    """Shenzhen/Montgomery (tb_bit's target) put every image in train: the rehearsal of tb_bit found its
    fine-tuning trials without a test set."""
    from scaling.data.preprocess import Preprocess
    from scaling.data.registry import open_dataset
    from scaling.data.shards import prepare_shards
    from scaling.data.stage import split_rows

    standin_data.shenzhen_montgomery(tmp_path / "tb", per_class=20, seed=0)
    shards = prepare_shards(open_dataset("shenzhen-montgomery", root=str(tmp_path / "tb")), Preprocess(resolution=32),
                            tmp_path / "cache")
    target, source = split_rows(shards, 0.15, 0, carve_test=True), split_rows(shards, 0.15, 0)
    assert len(source.test) == 0 and 4 <= len(target.test) <= 8
    patients = shards.records.set_index("index")["patient"]
    parts = [set(patients.loc[rows]) for rows in (target.train, target.val, target.test)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert sum(map(len, (target.train, target.val, target.test))) == len(shards.records)


def test_standin_weights_load_through_the_real_loaders(tmp_path):
    npz = standin_weights.write_npz(tmp_path / "BiT-S-R50x1.npz", "bit", "R50x1")
    check_weights("bit", "R50x1", npz)  # the study's check on the driver
    hub = standin_weights.write_hub(tmp_path / "hf", "bit", "R50x1")
    assert "models--timm--resnetv2_50x1_bit.goog_in21k" in str(hub)
    loaded = create_model("bit", "R50x1", 2, pretrained=hub)
    written = standin_weights.ladders.build(standin_weights.ladders.rung("bit", "R50x1"), 21843, 3, None)
    assert loaded.stem.conv.weight.shape == written.stem.conv.weight.shape
    assert standin_weights.meta_check("bit", "R152x4") == {"hub_tensors": 459, "npz_arrays": 459}


def test_cpu_preflight_grows_with_the_micro_batch_and_restores_batchnorm():
    from scaling.models.ladders import build, rung
    from scaling.train.loop import loss

    model = build(rung("cpu", "w8"), 2, 3, None)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    peak = memory.cpu_peak(model, "multiclass", 2, 30, loss)
    assert peak(1) < peak(4) < peak(8)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    micro, found = memory.choose_micro_batch(8, peak, budget=peak(4) * 1.01)
    assert micro == 4 and found <= peak(4) * 1.01


def _rehearse_until(out: Path, sig: int, *lines: str) -> tuple[int, str]:
    """Run the covidx_bit rehearsal in `out`; send it `sig` once it has printed lines holding each of `lines`, in
    that order. Its exit code and output."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "studies" / "scaling_law.py"), "--config",
                             str(CONFIGS / "covidx_bit.yaml"), "--rehearse", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen, waiting = [], list(lines)
    for text in proc.stdout:
        seen.append(text)
        if waiting and waiting[0] in text:
            waiting.pop(0)
            if not waiting:
                proc.send_signal(sig)
    return proc.wait(timeout=1800), "".join(seen)


@pytest.mark.slow
def test_covidx_bit_rehearsal_runs_every_stage_and_goes_on_after_its_job_is_stopped(tmp_path):
    out = tmp_path / "rehearsal"
    # a job's end (SIGTERM) while the rehearsal's second driver run fine-tunes: the rehearsal stops, resumably
    code, first = _rehearse_until(out, signal.SIGTERM, "rehearsal: the study again, resuming", "] finetune ")
    assert code == 75 and "run it again to go on from here" in first, first[-4000:]
    assert json.loads((out / "rehearsal-state.json").read_text())["exits"] == [75, 75]
    # the resubmitted job goes on from that step (it neither stops its driver at once over the trials that ended
    # before, nor runs the first step again); Slurm's early warning during the DDP job stops nothing: all is done
    code, second = _rehearse_until(out, signal.SIGUSR1, "rehearsal: one job on")
    assert code == 0, second[-4000:]
    assert "going on from an earlier attempt" in second and "to be stopped once" not in second, second[:3000]
    assert "## Projected cost of the real run" in second and (out / "rehearsal.md").is_file()
    report = json.loads((out / "rehearsal.json").read_text())
    stages = {s["stage"]: s for s in report["stages"]}
    assert all(s["ok"] for s in stages.values()), stages
    assert {"stand-in data", "data stage + leakage guard", "published weights", "models", "pre-training",
            "fine-tuning sweep", "DDP job + memory preflight", "stop + resume",
            "tracking, results, analysis, dashboard"} <= set(stages)
    study = out / "study"
    # the leakage guard removed and counted exactly the planted near-duplicates
    assert json.loads((study / "summary.json").read_text())["leakage"]["medical"] == {"near_duplicates": 3,
                                                                                      "removed": 3}
    # stopped once mid-sweep, then resumed (cut once and resumed again): three fine-tuning attempts, nothing
    # ended run twice
    assert json.loads((study / "attempts.json").read_text())["finetune"] == 3
    assert stages["stop + resume"]["what"].startswith("driver exits [75, 0]")
    assert "stopped on request" in (out / "logs" / "driver-1.log").read_text()
    # every value of every axis trained (reduced budgets 2 and 3 stand for 500 and 2000)
    results = pd.read_parquet(study / "results.parquet")
    ended = results[results["status"].isin(["finished", "stopped"])]
    assert set(ended["shots"]) == {0, 1, 5, 10, 100} and set(ended["budget"]) == {2, 3}
    assert set(ended["source"]) == {"scratch", "natural", "medical", "both"}
    assert {1281167, 14197122} <= set(ended["pretrain_size"]) and set(ended["model"]) == {"R50x1", "R101x1"}
    ddp = json.loads((out / "ddp" / "report.json").read_text())
    assert ddp["workers"] == 4 and "preflight_peak_gb" in ddp
    assert report["gpu_hours"] > 1000  # the real grid's projection, not the rehearsal's
