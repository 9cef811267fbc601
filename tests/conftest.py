import os
from pathlib import Path

import pytest

# no usage reports, no hub look-ups, no token auth written into the user's home by local clusters
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The team's real reference files (../shared/data); tests that need them skip where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture(scope="session")
def smoke_study(tmp_path_factory):
    """One run of the smoke study (studies/configs/smoke.yaml), shared by the tests that read what it wrote:
    (its directory, the finished process). It runs the cluster path (a TorchTrainer with a Train worker per job);
    the resume test of test_study.py runs the default's (each job in its Tune trial's process)."""
    import subprocess
    import sys

    root = tmp_path_factory.mktemp("smoke-study")
    out = root / "smoke"
    result = subprocess.run([sys.executable, str(PROJECT_ROOT / "studies" / "scaling_law.py"), "--config",
                             str(PROJECT_ROOT / "studies" / "configs" / "smoke.yaml"), "--out", str(out),
                             f"data.cache_dir={root / 'cache'}", "resources.num_workers=1"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            timeout=900)
    return out, result
