"""The GPU check must run anywhere: here on the CPU with tiny sizes, so that it works when a GPU is at hand."""
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
