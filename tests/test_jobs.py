"""What a job is (jobs.py) and the sweep's Optuna study (search.py): store keys that follow the model's
definition, and an optuna.db that a resumed sweep continues without duplicating trials."""
from __future__ import annotations

import sqlite3
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from scaling.sweep import jobs as jobs_mod
from scaling import models
from scaling.config import load_config
from scaling.sweep.jobs import StudyJobs
from scaling.sweep.plan import PretrainJob, finetune_points
from scaling.sweep.search import METRIC, make_searcher, point_of

SMOKE = Path(__file__).resolve().parent.parent / "studies" / "configs" / "smoke.yaml"


def _jobs(cfg) -> StudyJobs:
    # the store key needs only the name of each source's shard set (its content hash)
    data = SimpleNamespace(sources={"medical": SimpleNamespace(shards=SimpleNamespace(path="/cache/medical-abc"))})
    return StudyJobs(cfg=cfg, data=data, store_dir="/store", jobs_dir="/jobs")


def test_store_key_changes_with_the_rung_definition_and_the_checkpoint_format(monkeypatch):
    cfg = load_config(SMOKE)
    job = PretrainJob("w8", "medical", 300, 0)
    key = _jobs(cfg).pretrain_key(job)
    assert _jobs(cfg).pretrain_key(job) == key  # stable
    assert _jobs(cfg).pretrain_key(replace(job, size=299)) != key

    ladder = models.LADDERS["cpu"]
    w8 = models.rung("cpu", "w8")
    wider = replace(w8, kwargs={**w8.kwargs, "channels": (8, 16, 48)})  # same name, another model
    monkeypatch.setitem(models.LADDERS, "cpu",
                        replace(ladder, rungs=tuple(wider if r.name == "w8" else r for r in ladder.rungs)))
    changed = _jobs(cfg).pretrain_key(job)
    assert changed != key
    monkeypatch.setattr(jobs_mod, "CHECKPOINT_FORMAT", jobs_mod.CHECKPOINT_FORMAT + 1)
    assert _jobs(cfg).pretrain_key(job) not in (key, changed)


def _trials(db: Path) -> list[tuple]:
    with sqlite3.connect(db) as con:
        return con.execute(
            "select t.number, t.state, v.value, "
            "(select group_concat(param_name || '=' || param_value, ',') from trial_params p "
            " where p.trial_id = t.trial_id) "
            "from trials t left join trial_values v on v.trial_id = t.trial_id order by t.number").fetchall()


def test_resumed_search_holds_each_grid_trial_once_with_its_final_value(tmp_path):
    cfg = load_config(SMOKE, ["finetune.budgets=[20, 30]"])
    points = finetune_points(cfg)
    assert len(points) == 4
    db = tmp_path / "optuna.db"
    url = f"sqlite:///{db}"
    ledger: dict = {}

    # attempt 1: two trials start; one ends, then the driver dies with the other running
    first = make_searcher(cfg, points, ledger, url)
    a, b = first.suggest("a"), first.suggest("b")
    names = {}
    for tid, config in (("a", a), ("b", b)):
        names[tid] = point_of(config).name
        ledger[names[tid]] = {**config, "status": "running"}
    first.on_trial_complete("a", {METRIC: 0.71})
    ledger[names["a"]].update(status="finished", metrics={METRIC: 0.71})

    # attempt 2: the pending points are the three that did not end; b is asked again with its sampled lr
    pending = [p for p in points if p.name != names["a"]]
    second = make_searcher(cfg, pending, ledger, url)
    again = [second.suggest(f"r{i}") for i in range(3)]
    assert again[0]["lr"] == b["lr"] and again[0]["weight_decay"] == b["weight_decay"]
    assert {point_of(c).name for c in again} == {p.name for p in pending}
    for i in range(3):
        second.on_trial_complete(f"r{i}", {METRIC: 0.6 + i / 100})

    trials = _trials(db)
    assert len(trials) == 4  # each grid point once
    assert all(state == "COMPLETE" for _, state, _, _ in trials)
    assert sorted(v for _, _, v, _ in trials) == pytest.approx([0.6, 0.61, 0.62, 0.71])

    # attempt 3 after every point ended (e.g. optuna.db deleted meanwhile): the ledger fills it in
    db.unlink()
    for i, config in enumerate(again):
        ledger[point_of(config).name] = {**config, "status": "finished", "metrics": {METRIC: 0.6 + i / 100}}
    make_searcher(cfg, [], ledger, url)
    assert sorted(v for _, _, v, _ in _trials(db)) == pytest.approx([0.6, 0.61, 0.62, 0.71])


def _sampled(cfg, points, url) -> dict[str, tuple[float, float]]:
    search = make_searcher(cfg, points, {}, url)
    configs = [search.suggest(str(i)) for i in range(len(points))]
    return {point_of(c).name: (c["lr"], c["weight_decay"]) for c in configs}


def test_latin_sampler_spreads_each_cells_samples_and_ignores_the_order_they_are_asked(tmp_path):
    import math

    cfg = load_config(SMOKE, ["sweep.trials_per_cell=4", "finetune.budgets=[20, 30]"])
    assert cfg.sweep.sampler == "latin"
    points = finetune_points(cfg)
    forward = _sampled(cfg, points, f"sqlite:///{tmp_path / 'a.db'}")
    backward = _sampled(cfg, points[::-1], f"sqlite:///{tmp_path / 'b.db'}")
    assert forward == backward  # a point's values depend on the point alone

    cells: dict[tuple, list] = {}
    for p in points:
        cells.setdefault(p.cell, []).append(forward[p.name])
    assert len(cells) == 4  # scratch and medical at two budgets
    for cell, samples in cells.items():
        source = cell[1]
        for k, (low, high) in {0: cfg.finetune.lr_range_for(source), 1: cfg.finetune.weight_decay_range}.items():
            # one sample in each quarter of the log range
            quarters = sorted(int(4 * math.log(s[k] / low) / math.log(high / low)) for s in samples)
            assert quarters == [0, 1, 2, 3], samples
    designs = [sorted(samples) for samples in cells.values()]
    assert all(designs.count(d) == 1 for d in designs)  # each cell its own draw

    # scratch cells search their own learning-rate range, with either sampler
    for sampler in ("latin", "tpe"):
        own = load_config(SMOKE, [f"sweep.sampler={sampler}", "finetune.budgets=[20, 30]",
                                  "finetune.scratch_lr_range=[0.5, 0.9]"])
        points = finetune_points(own)
        sampled = _sampled(own, points, f"sqlite:///{tmp_path / sampler}.db")
        for p in points:
            low, high = (0.5, 0.9) if p.source == "scratch" else own.finetune.lr_range
            assert low <= sampled[p.name][0] <= high, (p.name, sampled[p.name])
