"""The plan: which points a config's grid holds and what they are called, scratch at several target sizes."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from scaling.config import ConfigError, load_config
from scaling.sweep.jobs import StudyJobs, check_target_sizes
from scaling.sweep.plan import SCRATCH, budgets, finetune_points, pretrain_jobs
from scaling.sweep.search import GridSpace

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
    return SimpleNamespace(target=target, reference=None)


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


# -- a study as a union of grids (sweep.slices) ------------------------------------------------------------------

SLICED = ["models.sizes=[w8, w16]", "data.source_sizes=[100, 300]", "sweep.trials_per_cell=2",
          "sweep.scratch_target_sizes=[40]"]


def test_a_budget_slice_adds_its_cells_once_without_multiplying_the_grid():
    base = load_config(SMOKE, SLICED)
    budget = "sweep.slices=[{sizes: [w16], source_sizes: [300], budgets: [20, 40, 80], scratch_target_sizes: []}]"
    cfg = load_config(SMOKE, [*SLICED, budget])
    points, before = finetune_points(cfg), finetune_points(base)
    assert len({p.name for p in points}) == len(points)  # budget 20 is in both grids: each point once
    assert set(before) < set(points)
    added = {(p.model, p.source, p.pretrain_size, p.budget, p.target_subset) for p in set(points) - set(before)}
    # only the slice's rung and pre-training size, at its new budgets, for every source; no subsets
    assert added == {("w16", s, n, b, 0) for s, n in ((SCRATCH, 0), ("medical", 300)) for b in (40, 80)}
    assert len(points) == len(before) + 2 * len(added)  # two samples per cell
    # the whole grid at three budgets instead: what the slice saves
    assert len(points) < len(finetune_points(load_config(SMOKE, [*SLICED, "finetune.budgets=[20, 40, 80]"])))
    assert pretrain_jobs(cfg) == pretrain_jobs(base)  # nothing new to pre-train
    assert budgets(cfg) == [20, 40, 80] and budgets(base) == [20]


def test_slices_that_overlap_or_repeat_the_grid_add_nothing_and_the_search_space_holds_every_axis_value():
    base = load_config(SMOKE, SLICED)
    same = load_config(SMOKE, [*SLICED, "sweep.slices=[{}, {sizes: [w8], budgets: [20]}, {source_sizes: [300]}]"])
    assert finetune_points(same) == finetune_points(base)
    cfg = load_config(SMOKE, [*SLICED, "sweep.slices=[{sources: [scratch], budgets: [60], "
                                       "scratch_target_sizes: [40, 120]}]"])
    space = GridSpace(cfg)
    assert space.choices["budget"] == [20, 60] and space.choices["target_subset"] == [0, 40, 120]
    for p in finetune_points(cfg):  # every point's axes are among the choices Optuna is told
        assert all(getattr(p, axis) in space.choices[axis] for axis in space.choices)
    assert {p.target_subset for p in finetune_points(cfg) if p.budget == 60} == {0, 40, 120}
    assert {p.source for p in finetune_points(cfg) if p.budget == 60} == {SCRATCH}


def test_a_slice_target_size_larger_than_the_split_names_the_slice_and_the_reference_set_lifts_the_limit():
    cfg = load_config(SMOKE, ["sweep.slices=[{budgets: [40], scratch_target_sizes: [20, 150]}]"])
    with pytest.raises(ConfigError, match=r"sweep\.slices\[0\]\.scratch_target_sizes\[1\]: got 150; expected at "
                                          r"most 100, the size of the target's training split"):
        check_target_sizes(cfg, _target(100))
    data = _target(100)
    data.reference = SimpleNamespace(train=np.arange(400))
    check_target_sizes(cfg, data)
    with pytest.raises(ConfigError, match=r"got 500; expected at most 400, the images of the target's scratch "
                                          r"reference set"):
        check_target_sizes(load_config(SMOKE, ["sweep.scratch_target_sizes=[500]"]), data)


def test_points_beyond_the_split_train_on_the_reference_set_with_the_targets_evaluation_images():
    cfg = load_config(SMOKE, ["sweep.scratch_target_sizes=[60, 200]", "sweep.scratch_reference_images=400"])
    data = _target(100)
    recs = pd.DataFrame({"index": np.arange(420), "y": (np.arange(420) % 5 == 0).astype(int)})
    data.reference = SimpleNamespace(shards=SimpleNamespace(records=recs, path="/r"), train=np.arange(300),
                                     val=np.arange(300, 320), test=np.arange(320, 340))
    jobs = StudyJobs(cfg=cfg, data=data, store_dir="/s", jobs_dir="/j")
    by_size = {p.target_subset: p for p in finetune_points(cfg) if p.source == SCRATCH}
    assert not jobs.on_reference(by_size[60]) and jobs.on_reference(by_size[200])
    spec = jobs.finetune_spec(by_size[200], 0.1, 1e-5)
    assert spec.shards == "/r" and len(spec.train) == 200 and set(spec.train) <= set(range(300))
    assert spec.val == tuple(range(300, 320)) and spec.test == tuple(range(320, 340))
    assert jobs.finetune_spec(by_size[60], 0.1, 1e-5).shards == "/t"
