"""Training jobs on a real local Ray cluster: 2-worker DDP over gloo, pre-train then fine-tune, and a worker
process killed for real mid-job; a job in one process (Train's local mode) killed for real and resumed."""
from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from scaling.config import ResourcesConfig, Recipe
from scaling.data.registry import open_dataset
from scaling.data.shards import Preprocess, prepare_shards
from scaling.train.job import export_weights, run_job, run_local
from scaling.train.spec import JobSpec
from scaling.train.outputs import final_predictions, final_state
from scaling.train.session import KEEP

pytestmark = pytest.mark.slow

RESOLUTION = 32


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(num_cpus=2, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    cache = tmp_path_factory.mktemp("shards")
    pre = Preprocess(resolution=RESOLUTION)
    medical = prepare_shards(open_dataset("synthetic-medical", size=256, image_size=RESOLUTION), pre, cache)
    target = prepare_shards(open_dataset("synthetic-covidx", size=192, test_size=64, image_size=RESOLUTION), pre, cache)
    return medical, target


def _indices(shards, split):
    recs = shards.records
    return tuple(int(i) for i in recs["index"][recs["split"] == split])


def _spec(shards, kind, steps, **kw):
    train = _indices(shards, "train")
    recipe = Recipe(steps=steps, batch_size=16, lr=0.05, eval_every=kw.pop("eval_every", steps), warmup_steps=2)
    return JobSpec(kind=kind, ladder="cpu", model=kw.pop("model", _smallest_rung()), shards=str(shards.path),
                   train=train[:-32], val=train[-32:], test=_indices(shards, "test"), recipe=recipe,
                   seeds=kw.pop("seeds", (0,)), **kw)


def _smallest_rung():
    from scaling.models import LADDERS

    return LADDERS["cpu"].rungs[0].name


def test_two_workers_pretrain_then_finetune(ray_cluster, shards, tmp_path):
    medical, target = shards
    two = ResourcesConfig(num_workers=2)
    pre = run_job(_spec(medical, "pretrain", 12), name="pre", storage_path=tmp_path, resources=two)
    assert pre.error is None and pre.metrics["step"] == 12
    assert 0 <= pre.metrics["val_roc_auc"] <= 1
    weights = tmp_path / "weights.pt"
    export_weights(pre, weights)

    fine = run_job(_spec(target, "finetune", 12, init=str(weights), seeds=(0, 1)), name="fine",
                   storage_path=tmp_path, resources=two)
    assert fine.error is None and fine.metrics["step"] == 12
    assert {"test_roc_auc", "test_roc_auc_sd", "test_accuracy", "test_ece"} <= set(fine.metrics)
    assert len(json.loads(fine.return_value["test_confusion"])) == 2  # one matrix per seed
    # rank 0's return value holds the same final metrics
    assert fine.return_value["test_roc_auc"] == pytest.approx(fine.metrics["test_roc_auc"])
    # calibration and the seeds as an ensemble, from the final logits; the predictions beside the final state
    trust = ("test_ece_calibrated", "test_ece_debiased", "test_brier_calibrated", "test_nll_calibrated",
             "test_temperature", "test_temperature_at_bound", "test_ensemble_roc_auc", "test_mutual_information",
             "test_aurc", "test_auroc_at_80", "test_roc_auc_low", "test_roc_auc_high", "test_trust_seconds")
    assert set(trust) <= set(fine.metrics)
    assert fine.metrics["test_roc_auc_low"] <= fine.metrics["test_roc_auc"] <= fine.metrics["test_roc_auc_high"]
    assert set(json.loads(fine.metrics["test_reliability"])) == {"raw", "calibrated"}
    with np.load(final_predictions(tmp_path, "fine")) as saved:
        test = _indices(target, "test")
        assert saved["probs"].shape == (2, len(test)) and list(saved["index"]) == list(test)  # both ranks, in order
        np.testing.assert_array_equal(saved["labels"], target.records.loc[list(test), "y"].to_numpy())
        assert list(saved["seeds"]) == [0, 1]
    assert len(final_state(tmp_path, "fine")["replicas"]) == 2


def test_seeds_of_one_job_train_as_their_own_jobs_would(shards, tmp_path):
    _, target = shards
    alone = [run_local(_spec(target, "scratch", 6, seeds=(s,)), name=f"s{s}", storage_path=tmp_path).return_value
             for s in (3, 4)]
    together = run_local(_spec(target, "scratch", 6, seeds=(3, 4)), name="both", storage_path=tmp_path).return_value
    assert alone[0]["val_nll"] != alone[1]["val_nll"]  # the seeds differ
    for key in ("val_roc_auc", "val_nll", "test_roc_auc", "train_loss"):
        assert together[key] == pytest.approx((alone[0][key] + alone[1][key]) / 2, rel=1e-5)
    assert together["test_roc_auc_sd"] == pytest.approx(abs(alone[0]["test_roc_auc"] - alone[1]["test_roc_auc"])
                                                        / 2 ** 0.5, rel=1e-5)
    assert json.loads(together["test_confusion"]) == [json.loads(a["test_confusion"])[0] for a in alone]
    assert json.loads(together["test_roc_auc_seeds"]) == pytest.approx([a["test_roc_auc"] for a in alone], rel=1e-5)


def _kill_a_worker_after_first_checkpoint(run_dir: Path, killed: dict) -> None:
    deadline = time.time() + 240
    while time.time() < deadline:
        if any(run_dir.glob("checkpoint_*")):
            for proc in psutil.process_iter(["cmdline"]):
                if "RayTrainWorker" in " ".join(proc.info["cmdline"] or []):
                    proc.kill()
                    killed["at"] = time.time()
                    return
        time.sleep(0.2)


def test_job_survives_a_killed_worker_and_finishes_all_steps(ray_cluster, shards, tmp_path):
    _, target = shards
    steps = 60
    spec = _spec(target, "scratch", steps, eval_every=10)
    killed: dict = {}
    watcher = threading.Thread(target=_kill_a_worker_after_first_checkpoint, args=(tmp_path / "killed", killed))
    watcher.start()
    result = run_job(spec, name="killed", storage_path=tmp_path, resources=ResourcesConfig(num_workers=2, max_failures=2))
    watcher.join()
    assert "at" in killed, "no worker was killed: the job ended before its first checkpoint was seen"
    assert result.error is None
    assert result.metrics["step"] == steps
    # the attempt that finished started after the kill, from a checkpoint (not from step 0)
    assert result.metrics["first_step_at"] > killed["at"]

    uninterrupted = run_job(spec, name="clean", storage_path=tmp_path, resources=ResourcesConfig(num_workers=2))
    assert uninterrupted.metrics["step"] == steps
    # batches and augmentation are functions of (seed, step): the resumed job ends where the clean one does
    assert result.metrics["val_nll"] == pytest.approx(uninterrupted.metrics["val_nll"], rel=1e-4)


def test_local_job_killed_for_real_resumes_from_its_own_checkpoint(shards, tmp_path):
    _, target = shards
    steps = 40
    spec = _spec(target, "scratch", steps, eval_every=5)
    (tmp_path / "spec.pkl").write_bytes(pickle.dumps(spec))
    code = ("import pickle, sys; from scaling.train.job import run_local; "
            "run_local(pickle.load(open(sys.argv[1], 'rb')), name='local', storage_path=sys.argv[2])")
    job = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "spec.pkl"), str(tmp_path)],
                           env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    folder = tmp_path / "local"
    deadline = time.time() + 240
    while time.time() < deadline and not list(folder.glob("checkpoint_*/manifest.json")) and job.poll() is None:
        time.sleep(0.1)
    job.send_signal(signal.SIGKILL)
    job.wait()
    saved = sorted(p.parent.name for p in folder.glob("checkpoint_*/manifest.json"))
    assert saved and int(saved[-1].split("_")[1]) < steps, "the job ended before it could be killed"

    resumed = run_local(spec, name="local", storage_path=tmp_path)
    assert resumed.metrics["start_step"] == int(saved[-1].split("_")[1]) > 0
    assert resumed.metrics["step"] == steps
    # while it trained it kept KEEP; once ended, only its final one
    assert len(saved) <= KEEP
    kept = sorted(p.name for p in folder.glob("checkpoint_*"))
    assert kept == [f"checkpoint_{steps:09d}"] and not list(folder.glob(".tmp-*"))
    # the checkpoint a Result hands on (e.g. to export_weights) is the job's persisted last one
    export_weights(resumed, tmp_path / "weights.pt")

    clean = run_local(spec, name="clean", storage_path=tmp_path)
    assert clean.metrics["start_step"] == 0
    assert resumed.metrics["val_nll"] == pytest.approx(clean.metrics["val_nll"], rel=1e-4)
    again = run_local(spec, name="clean", storage_path=tmp_path)  # a finished job reports its end again
    assert again.metrics["start_step"] == steps and again.metrics["val_nll"] == pytest.approx(clean.metrics["val_nll"])
    assert again.metrics["train_loss"] == pytest.approx(clean.metrics["train_loss"])  # the last step's, kept
