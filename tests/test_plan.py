"""The plan: which points a config's grid holds and what they are called, scratch at several target sizes."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from scaling.config import ConfigError, load_config
from scaling.sweep.jobs import StudyJobs, check_target_sizes
from scaling.sweep.plan import SCRATCH, finetune_points, pretrain_jobs

SMOKE = Path(__file__).resolve().parent.parent / "studies" / "configs" / "smoke.yaml"


def test_names_of_full_split_points_do_not_change():
    names = sorted(p.name for p in finetune_points(load_config(SMOKE)))
    assert names == ["ft-w8-medical-300-b20-k0-t0", "ft-w8-scratch-0-b20-k0-t0"]


def test_scratch_target_sizes_add_scratch_points_with_unique_stable_names():
    cfg = load_config(SMOKE, ["sweep.scratch_target_sizes=[40, 80]", "data.shots=[0, 5]",
                              "sweep.trials_per_cell=2"])
    points = finetune_points(cfg)
    names = [p.name for p in points]
    assert len(set(names)) == len(names) and names == [p.name for p in finetune_points(cfg)]
    subsets = [p for p in points if p.target_subset]
    # scratch only, on the full split's axis (not with shots), one per size, budget and sample
    assert {(p.source, p.shots, p.target_subset, p.sample) for p in subsets} == {
        (SCRATCH, 0, n, s) for n in (40, 80) for s in (0, 1)}
    assert "ft-w8-scratch-0-b20-k0-n40-t1" in names
    assert len({p.cell for p in subsets}) == 2  # their own cells: ASHA and best-of compare within a size
    # they need no pre-training
    assert pretrain_jobs(cfg) == pretrain_jobs(load_config(SMOKE, ["data.shots=[0, 5]", "sweep.trials_per_cell=2"]))


def _target(train_size: int):
    recs = pd.DataFrame({"index": np.arange(train_size + 20), "y": np.arange(train_size + 20) % 5 == 0})
    recs["y"] = recs["y"].astype(int)
    target = SimpleNamespace(shards=SimpleNamespace(records=recs, path="/t"), train=np.arange(train_size),
                             val=np.arange(train_size, train_size + 20), test=np.arange(0))
    return SimpleNamespace(target=target)


def test_subsets_are_nested_and_stratified_and_sized_as_asked():
    cfg = load_config(SMOKE, ["sweep.scratch_target_sizes=[20, 60]"])
    jobs = StudyJobs(cfg=cfg, data=_target(100), store_dir="/s", jobs_dir="/j")
    by_size = {p.target_subset: set(map(int, jobs.finetune_train(p))) for p in finetune_points(cfg)
               if p.source == SCRATCH}
    assert {k: len(v) for k, v in by_size.items()} == {0: 100, 20: 20, 60: 60}
    assert by_size[20] < by_size[60] < by_size[0]
    assert sum(i % 5 == 0 for i in by_size[20]) == 4  # the positive fraction of the split (1 in 5)


def test_a_target_size_larger_than_the_split_is_a_config_error_naming_key_value_and_split():
    cfg = load_config(SMOKE, ["sweep.scratch_target_sizes=[20, 101]"])
    with pytest.raises(ConfigError, match=r"sweep\.scratch_target_sizes\[1\]: got 101; expected at most 100, "
                                          r"the size of the target's training split"):
        check_target_sizes(cfg, _target(100))
    check_target_sizes(load_config(SMOKE, ["sweep.scratch_target_sizes=[100]"]), _target(100))


def test_target_sizes_need_the_scratch_source():
    with pytest.raises(ConfigError, match="sweep.scratch_target_sizes: got \\[20\\]; .* no 'scratch'"):
        load_config(SMOKE, ["sweep.scratch_target_sizes=[20]", "sweep.sources=[medical]"])
    with pytest.raises(ConfigError, match=r"sweep\.scratch_target_sizes\[0\]: got 0; expected a value >= 1"):
        load_config(SMOKE, ["sweep.scratch_target_sizes=[0]"])
    assert load_config(SMOKE, ["sweep.scratch_target_sizes=[]"]).sweep.scratch_target_sizes == []
