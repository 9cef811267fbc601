"""Two faults of a training job, caused for real: a learning rate so high that the loss overflows, and a worker
that runs out of memory because the kernel refuses an allocation (an address-space limit, as a shared node's
memory limit would). The job-level tests train in one process (Train's local mode); the study test runs a
smoke-sized study on a real local Ray cluster with a real MLflow server."""
from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from scaling.config import Recipe
from scaling.data.registry import open_dataset
from scaling.data.shards import Preprocess, prepare_shards
from scaling.train.faults import DIVERGED_IN, DIVERGED_STEP, DIVERGED_VALUE
from scaling.train.job import run_local
from scaling.train.spec import JobSpec
from test_study import CONFIGS, runs, study

ROOT = Path(__file__).resolve().parent.parent
RESOLUTION = 32


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    cache = tmp_path_factory.mktemp("shards")
    return prepare_shards(open_dataset("synthetic-covidx", size=192, test_size=64, image_size=RESOLUTION),
                          Preprocess(resolution=RESOLUTION), cache)


def _spec(shards, *, lr: float, steps: int, eval_every: int, batch_size: int = 32, grad_accum: int = 1):
    """A fine-tuning job of the smallest rung, one seed."""
    recs = shards.records
    train = tuple(int(i) for i in recs["index"][recs["split"] == "train"])
    recipe = Recipe(steps=steps, batch_size=batch_size, grad_accum=grad_accum, lr=lr, eval_every=eval_every,
                    warmup_steps=1, balanced_sampling=True)
    return JobSpec(kind="finetune", ladder="cpu", model="w8", shards=str(shards.path), train=train[:-32],
                   val=train[-32:], test=tuple(int(i) for i in recs["index"][recs["split"] == "test"]),
                   recipe=recipe, seeds=(0,))


def test_a_loss_that_overflows_ends_the_job_as_diverged_with_its_step_and_value(target, tmp_path):
    # at lr 1e4 each step multiplies the loss, until the loss or the evaluation overflows float32
    hot = run_local(_spec(target, lr=1e4, steps=12, eval_every=1), name="hot", storage_path=tmp_path).metrics
    assert 1 < hot[DIVERGED_STEP] == hot["step"] < 12  # evaluating every step, it stopped at that step
    assert not math.isfinite(hot[DIVERGED_VALUE]) and hot[DIVERGED_IN] in ("train_loss", "val_logits")
    assert math.isnan(hot["val_roc_auc"])
    # what diverged was not checkpointed: a resumed job starts from an evaluation before the divergence
    kept = [int(p.name.split("_")[1]) for p in (tmp_path / "hot").glob("checkpoint_*")]
    assert kept and max(kept) < hot[DIVERGED_STEP]


#: run in a process of its own under an address-space limit a little above what it has mapped once warm, so the
#: kernel refuses the large micro-batch's activations before any of them is touched
UNDER_A_MEMORY_LIMIT = textwrap.dedent("""
    import pickle, resource, sys, psutil
    from scaling.train.job import run_local
    warm, big, fixed, folder = pickle.loads(bytes.fromhex(sys.argv[1]))
    run_local(warm, name="warm", storage_path=folder)  # every lazy import and thread pool, before the limit
    limit = psutil.Process().memory_info().vms + 2**25  # 32 MiB more
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.RLIM_INFINITY))
    try:
        run_local(big, name="big", storage_path=folder)
        print("big: fitted")
    except Exception as e:
        print("big:", type(e).__name__, e)
    print("fixed:", run_local(fixed, name="fixed", storage_path=folder).metrics["step"])
""")


def test_out_of_memory_names_the_memory_asked_for_and_the_grad_accum_that_fits(target, tmp_path):
    import pickle

    warm = _spec(target, lr=0.05, steps=1, eval_every=1)
    big = _spec(target, lr=0.05, steps=1, eval_every=1, batch_size=1024)  # ~60-120 MiB of activations per pass
    fixed = _spec(target, lr=0.05, steps=1, eval_every=1, batch_size=1024, grad_accum=16)
    arg = pickle.dumps((warm, big, fixed, str(tmp_path))).hex()
    run = subprocess.run([sys.executable, "-c", UNDER_A_MEMORY_LIMIT, arg], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    big_line = next(line for line in run.stdout.splitlines() if line.startswith("big:"))
    assert big_line.startswith("big: OutOfMemory finetune job out of memory at step 1"), big_line
    asked = int(big_line.split(" bytes)")[0].rsplit("(", 1)[1])
    assert asked > 2**20 and f"{asked / 2**30:.2f} GiB" in big_line
    assert "micro-batch of 1024 images" in big_line and "set finetune.recipe.grad_accum=2" in big_line
    assert "fixed: 1" in run.stdout  # the same effective batch in smaller passes fits under the same limit


@pytest.mark.slow
def test_a_study_whose_learning_rates_reach_divergence_records_it_and_goes_on(tmp_path):
    """A smoke-sized study from scratch with a learning-rate range of 60 decades: the trial sampled high diverges
    for real, the others end (finished, or stopped by ASHA); the study writes its results and dashboard. (The cell's
    Latin hypercube puts its three samples at about 1e-13, 1e-3 and 1e26, far from where divergence starts: with
    TPE and 1e-2..1e8 they fell at 172, 3e3 and 1e4, and 172 diverged at the last step on one machine and not on
    another.)"""
    import optuna
    import pandas as pd

    out = tmp_path / "study"
    run = study("--config", str(CONFIGS / "smoke.yaml"), "--out", str(out), "sweep.sources=[scratch]",
                "sweep.trials_per_cell=3", "finetune.lr_range=[1.0e-30, 1.0e+30]", cache=tmp_path / "cache")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    table = pd.read_parquet(out / "results.parquet")
    # ASHA may also stop one of the two that do not diverge, depending on which reaches its rung first
    assert {"finished", "diverged"} <= set(table["status"]) <= {"finished", "stopped", "diverged"}, \
        table[["trial", "status", "lr"]]
    diverged, finished = table[table["status"] == "diverged"], table[table["status"] == "finished"]
    ended = table[table["status"] != "diverged"]
    assert diverged["lr"].min() > 10  # only learning rates far above the recipe's 0.01-0.2 diverge
    assert (diverged[DIVERGED_STEP] >= 1).all() and diverged["status_detail"].str.startswith("diverged at step").all()
    assert diverged["test_roc_auc"].isna().all() and finished["test_roc_auc"].notna().all()
    for _, row in diverged.iterrows():
        assert f"{row['status_detail']} {row['trial']}" in run.stdout  # the live view said so

    children = runs(out / "mlflow.db").set_index("job")
    assert (children.loc[diverged["trial"], "status"] == "FAILED").all()
    assert (children.loc[finished["trial"], "status"] == "FINISHED").all()

    # Optuna was told: pruned (TPE ranks those below every complete trial), never failed
    search = optuna.load_study(study_name="finetune", storage=f"sqlite:///{out / 'optuna.db'}")
    states = sorted(t.state.name for t in search.trials)
    assert states == sorted(["PRUNED"] * len(diverged) + ["COMPLETE"] * len(ended))

    page = (out / "dashboard.html").read_text()
    data = json.loads(page.split('id="dashboard-data">')[1].split("</script>")[0])
    marked = {r["trial"]: r for r in data["trials"] if r["status"] == "diverged"}
    assert set(marked) == set(diverged["trial"]) and "status" in data["trial_columns"]
    assert all(r["status_detail"].startswith("diverged at step") for r in marked.values())


@pytest.mark.slow
def test_a_diverged_pretraining_job_fails_its_stage_naming_the_job_step_and_value(tmp_path):
    """On the cluster path (a Train worker per job): a learning rate of 1e30 makes the first updates
    overflow the activations; the stage stops before fine-tuning, with nothing stored for the job."""
    out = tmp_path / "study"
    run = study("--config", str(CONFIGS / "smoke.yaml"), "--out", str(out), "sweep.sources=[medical]",
                "pretrain.lr=1.0e+30", "resources.num_workers=1", cache=tmp_path / "cache")
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    said = next(line for line in run.stdout.splitlines() if "pre-training failed for" in line)
    assert re.search(r"pre-training job pre-w8-medical-300-s0 diverged at step \d+ \((train_loss|val_logits) "
                     r"(nan|-?inf)\); lower pretrain.lr \(now 1e\+30\)", said), said
    entry = json.loads((out / "pretrain" / "pre-w8-medical-300-s0.json").read_text())
    assert entry["status"] == "diverged" and entry["error"].startswith("PretrainDiverged: pre-training job")
    assert not list((out / "checkpoints").rglob("state.pt")) and not (out / "trials").exists()
