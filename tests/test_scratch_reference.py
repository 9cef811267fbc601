"""The scratch reference set (more images of a synthetic target, for from-scratch runs beyond its training split)
and how the results and the analysis treat its trials: marked, read by effective data transferred alone."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from scaling.analysis import analyse
from scaling.analysis.grid import per_seed
from scaling.analysis.results import best_per_cell
from scaling.analysis.transfer import transfer_cells
from scaling.config import load_config
from scaling.data.stage import prepare_study_data
from scaling.sweep.reference import reference_set
import study_tables
from test_plan import SMOKE


def test_the_reference_set_holds_the_targets_evaluation_images_and_a_larger_pool_without_them(tmp_path):
    small = [f"data.cache_dir={tmp_path}", "data.sources={}", "sweep.sources=[scratch]"]
    cfg = load_config(SMOKE, [*small, "sweep.scratch_reference_images=300"])
    data = prepare_study_data(cfg, log=lambda _: None)
    ref = reference_set(cfg, data, log=lambda _: None)
    target, keys = data.target, data.target.shards.records["key"]
    ref_keys = ref.shards.records["key"]
    # validation and test: the target's own images, the same pixels in the same order
    assert list(ref_keys.loc[ref.val]) == list(keys.loc[target.val])
    assert [int(k) - 300 for k in ref_keys.loc[ref.test]] == [int(k) - 240 for k in keys.loc[target.test]]
    assert np.array_equal(ref.shards.read(ref.val), target.shards.read(target.val))
    assert np.array_equal(ref.shards.read(ref.test), target.shards.read(target.test))
    # the pool: every other training image, the target's split among them, none of its evaluation images
    assert len(ref.train) == 300 - len(target.val)
    assert set(keys.loc[target.train]) < set(ref_keys.loc[ref.train])
    assert not set(ref_keys.loc[ref.train]) & set(keys.loc[target.val])
    assert (ref.shards.records.loc[ref.train, "split"] == "train").all()  # a test key would be another image
    first = ref.train[np.isin(ref_keys.loc[ref.train], keys.loc[target.train])][:5]
    same = target.train[:5]
    assert np.array_equal(ref.shards.read(first), target.shards.read(same))
    assert reference_set(load_config(SMOKE, small), data, log=lambda _: None) is None


def _with_reference(table: pd.DataFrame, budget: int, sizes: list[int], split: int) -> pd.DataFrame:
    """`table` plus a converged scratch curve at `budget` (error 0.6 x the table's scratch curve) on target sizes
    up to beyond the split, the sizes above `split` marked reference."""
    ref = study_tables.table(models=("w8",), sources=("scratch",), budgets=(budget,), target_sizes=sizes, seeds=2)
    ref["test_error"] = 0.6 * ref["test_error"]
    ref["test_roc_auc"] = 1 - ref["test_error"]
    ref["val_roc_auc"] = ref["test_roc_auc"]
    ref["test_roc_auc_seeds"] = [f"[{a}, {a}]" for a in ref["test_roc_auc"]]
    ref["reference"] = ref["target_size"] > split
    return pd.concat([table.assign(reference=False), ref], ignore_index=True)


def test_reference_rows_feed_the_scratch_curve_of_effective_data_and_nothing_else(tmp_path):
    table = study_tables.table(models=("w8",), target_sizes=[50, 100, 200], seeds=2)
    full = _with_reference(table, 400, [50, 100, 200, 800, 1600, 3200], split=200)
    # the tuned results (findings, figures, trust, saliency) never see them
    assert not best_per_cell(full)["reference"].any()
    assert best_per_cell(full, reference=True)["reference"].sum() == 3
    cells, reason = transfer_cells(per_seed(best_per_cell(full, reference=True)), seed=0)
    assert reason is None
    # every fine-tuned cell (budget 20) is read off the reference curve (budget 400), which reaches far enough
    assert {(c["scratch_budget"], c["scratch_reference"]) for c in cells} == {(400, True)}
    without, _ = transfer_cells(per_seed(best_per_cell(full)), seed=0)
    assert {(c["scratch_budget"], c["scratch_reference"]) for c in without} == {(20, False)}
    within = lambda cs: sum(c["scratch_range"] == "within" for c in cs)  # noqa: E731
    assert within(cells) > within(without)  # fewer cells read off the law beyond its data
    # the whole analysis, on a smaller grid (its figures cost the time)
    small = _with_reference(study_tables.table(models=("w8",), sizes=(300, 1000), target_sizes=[100, 200], seeds=2),
                            400, [100, 200, 800, 1600, 3200], split=200)
    report = analyse(small, tmp_path, seed=0, log=lambda _: None)
    reference = [f"w8-scratch-0-b400-t{n}" for n in (800, 1600, 3200)]
    assert not any(name in json.dumps(report["findings"]) for name in reference)
    assert 3200 not in set(report["table"]["target_size"])
    assert {c["scratch_budget"] for c in report["effective_data"]} == {400}


def test_results_of_ledgers_without_the_mark_are_not_reference():
    from scaling.analysis.results import results_table
    from scaling.config import Recipe
    entry = {"status": "finished", "model": "w8", "source": "scratch", "pretrain_size": 0, "budget": 20, "shots": 0,
             "sample": 0, "target_subset": 0, "target_size": 100, "lr": 0.1, "weight_decay": 1e-5, "params": 10,
             "flops_per_image": 5, "metrics": {"val_roc_auc": 0.7, "test_roc_auc": 0.7, "step": 20}}
    table = results_table({"a": entry, "b": {**entry, "reference": True}}, Recipe(), Recipe())
    assert table["reference"].tolist() == [False, True]
    with pytest.raises(KeyError):
        results_table({"c": {k: v for k, v in entry.items() if k != "model"}}, Recipe(), Recipe())
