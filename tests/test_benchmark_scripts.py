"""Benchmark scripts that must keep running: the GPU check on the CPU with tiny sizes (so that it works when a GPU
is at hand), the world calibration on the smoke study."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_gpu_check_runs_on_cpu_with_tiny_sizes():
    result = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--ladder", "cpu", "--model", "w8", "--resolutions", "32",
         "--steps", "3", "--batch", "8", "--images", "48"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    header, row = result.stdout.strip().splitlines()[-2:]
    assert header.split()[:4] == ["px", "job", "img/s", "plain"]
    px, job, plain, ratio = row.split()[:4]
    assert px == "32" and float(job) > 0 and float(plain) > 0 and float(ratio) > 0


@pytest.mark.slow
def test_calibrate_world_reports_each_cell_and_the_pretraining_seed_spread(tmp_path):
    result = subprocess.run(
        [sys.executable, "benchmarks/calibrate_world.py", "--config", "studies/configs/smoke.yaml",
         "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", "pretrain.steps=10", "--sources",
         "scratch,medical", "--pretrain-seeds", "0,1", "--work", str(tmp_path / "work")],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    table = result.stdout.strip().splitlines()
    rows = [line.split() for line in table[table.index(next(t for t in table if t.startswith("model"))) + 1:]]
    assert [(r[0], r[1], r[2]) for r in rows] == [("w8", "scratch", "0"), ("w8", "medical", "300")]
    auc, ft_sd, ft_se, pre_sd = map(float, rows[1][4:8])
    assert 0 <= auc <= 1 and ft_sd >= 0 and 0 <= ft_se <= ft_sd and pre_sd >= 0  # two pre-training seeds: a spread
    assert rows[0][7] == "nan"  # scratch has no pre-training seed
    assert len(list((tmp_path / "work" / "checkpoints").glob("*/manifest.json"))) == 2


@pytest.mark.slow
def test_bench_data_stage_prints_its_table_and_the_projection():
    result = subprocess.run(
        [sys.executable, "benchmarks/bench_data_stage.py", "--png", "2", "--jpeg", "2", "--side", "200",
         "--resolution", "32", "--rows-per-shard", "1", "--no-ray-data"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    rows = {(line[:18].strip(), line.split()[-4]): line.split()[-3:] for line in
            lines[lines.index(next(t for t in lines if t.startswith("engine"))) + 1:][:3]}
    assert set(rows) == {("in this process", "1"), ("Ray tasks", "1"), ("Ray tasks", "2")}
    assert all(float(images_per_s) > 0 for _, images_per_s, _ in rows.values())
    assert any(line.startswith("leakage hash, one process: ") for line in lines)
    assert lines[-1].split()[-1] == "min" and float(lines[-1].split()[-2]) > 0
