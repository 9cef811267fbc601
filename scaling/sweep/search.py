"""The search over the fine-tuning grid: Optuna samples the hyper-parameters, per-cell ASHA stops poor trials.

Optuna samples learning rate and weight decay; the scaling grid is covered exactly by enqueueing every grid point
(model, source, pre-training size, budget, shots, sample, target subset) as a partial Optuna trial -- Optuna fixes
those axes and samples only the hyper-parameters. `sweep.sampler` chooses how: `latin` (`CellLatinSampler`) gives
every cell the same stratified spread of values, fixed by the study seed and the cell; `tpe` runs one seeded TPE
over all cells, which learns from every trial but hands scratch cells the learning rates the (more numerous)
pre-trained cells liked, and whose samples depend on the order trials end. `PerCellASHA` stops a trial only
against trials of its own cell, since a fine-tuning budget or a source changes what a good validation AUC is.

A trial whose loss stopped being finite (it reports `DIVERGED_STEP`, its metrics NaN) is told to Optuna as PRUNED,
not FAIL and not a made-up worst value: TPE ranks pruned trials below every complete one, so it learns to avoid
that region, while FAIL trials are ignored (it would sample there again) and an invented AUC of 0 would pass
for a measurement in the study's values. ASHA stops it at that report and never records its NaN in a rung, so
it is not promoted and does not shift the other trials' cut-offs.

The Optuna study lives in the study directory (`optuna.db`, SQLite: `optuna-dashboard sqlite:///<study>/optuna.db`
opens it) and holds one trial per grid point: a resumed sweep continues that study instead of adding trials (see
`make_searcher`).
"""
from __future__ import annotations

import math
import zlib

import numpy as np
import optuna
from optuna.trial import TrialState
from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler, TrialScheduler
from ray.tune.search.optuna import OptunaSearch

from scaling.config import StudyConfig
from scaling.sweep.ledger import ENDED
from scaling.sweep.plan import FinetunePoint, all_pretrain_sizes, budgets, scratch_target_sizes
from scaling.train.faults import DIVERGED_STEP

#: the metric Optuna and ASHA maximise (validation ROC-AUC of the target)
METRIC = "val_roc_auc"
AXES = ("model", "source", "pretrain_size", "budget", "shots", "sample", "target_subset")
#: the Optuna study's name in optuna.db
STUDY_NAME = "finetune"


def point_of(config: dict) -> FinetunePoint:
    """The grid point of a trial config (Tune's or Optuna's)."""
    return FinetunePoint(**{k: config[k] for k in AXES})


class GridSpace:
    """Optuna define-by-run space: the grid axes as categoricals (fixed by the enqueued points) and the
    hyper-parameters as log-uniform ranges (the learning rate's depends on the source: see
    `FinetuneConfig.lr_range_for`). A class, not a closure, so Tune can pickle the searcher."""

    def __init__(self, cfg: StudyConfig):
        self.choices = {"model": list(cfg.models.sizes), "source": list(cfg.sweep.sources),
                        "pretrain_size": all_pretrain_sizes(cfg), "budget": budgets(cfg),
                        "shots": list(cfg.data.shots),
                        "sample": list(range(cfg.sweep.trials_per_cell)),
                        "target_subset": [0, *scratch_target_sizes(cfg)]}
        self.lr_ranges = {s: tuple(cfg.finetune.lr_range_for(s)) for s in cfg.sweep.sources}
        self.weight_decay_range = tuple(cfg.finetune.weight_decay_range)
        self.names = ["lr", "weight_decay"]

    def ranges(self, source: str) -> dict:
        return {"lr": self.lr_ranges[source], "weight_decay": self.weight_decay_range}

    def distributions(self, source: str) -> dict:
        out = {axis: optuna.distributions.CategoricalDistribution(c) for axis, c in self.choices.items()}
        out.update({k: optuna.distributions.FloatDistribution(*r, log=True) for k, r in self.ranges(source).items()})
        return out

    def __call__(self, trial) -> None:
        for axis, choices in self.choices.items():
            trial.suggest_categorical(axis, choices)
        for name, (low, high) in self.ranges(trial.params["source"]).items():
            trial.suggest_float(name, low, high, log=True)


def make_searcher(cfg: StudyConfig, pending: list[FinetunePoint], ledger: dict, storage: str):
    """OptunaSearch over `GridSpace` on the Optuna study in `storage` (an RDB URL), made to agree with the
    ledger first, so that the study holds each grid point once and asks exactly for the `pending` ones:

    - a trial an earlier attempt left RUNNING (the driver was stopped or killed) is told its result when the
      ledger has it ended, else set back to WAITING: asked again, it keeps the hyper-parameters it was
      sampled with (Optuna returns a parameter a trial already has), as the ledger recorded them;
    - a pending point without a WAITING trial is enqueued (with the ledger's hyper-parameters if it started);
    - an ended point the study does not know (e.g. optuna.db removed) is added with its result.
    What it cannot undo: a trial that failed stays in the study as FAIL beside its retry."""
    space = GridSpace(cfg)
    if cfg.sweep.sampler == "tpe":
        sampler = optuna.samplers.TPESampler(seed=cfg.seed, multivariate=True)
    else:
        sampler = CellLatinSampler(space.names, cfg.sweep.trials_per_cell, cfg.seed)
    storage = optuna.storages.RDBStorage(storage)
    study = optuna.create_study(storage=storage, study_name=STUDY_NAME, direction="maximize", sampler=sampler,
                                load_if_exists=True)
    todo = {p.name for p in pending}
    known, waiting = set(), set()
    for trial in study.get_trials(deepcopy=False):
        name = point_of({**trial.system_attrs.get("fixed_params", {}), **trial.params}).name
        known.add(name)
        entry = ledger.get(name, {})
        if trial.state == TrialState.RUNNING:
            if entry.get("status") == "diverged":
                study.tell(trial.number, state=TrialState.PRUNED)
                continue
            if entry.get("status") in ENDED and _value(entry) is not None:
                study.tell(trial.number, _value(entry))
                continue
            # FrozenTrial keeps its storage id private
            storage.set_trial_state_values(trial._trial_id, TrialState.WAITING)
            trial = storage.get_trial(trial._trial_id)
        if trial.state == TrialState.WAITING:
            if name in todo and name not in waiting:
                waiting.add(name)
            else:  # a leftover for a point that ended or is queued already: never asked for
                storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    for name, entry in ledger.items():
        if name in known:
            continue
        if entry["status"] == "diverged":
            study.add_trial(optuna.trial.create_trial(params=_params(entry), state=TrialState.PRUNED,
                                                      distributions=space.distributions(entry["source"])))
        elif entry["status"] in ENDED and _value(entry) is not None:
            study.add_trial(optuna.trial.create_trial(params=_params(entry), value=_value(entry),
                                                      distributions=space.distributions(entry["source"])))
    for point in pending:
        if point.name not in waiting:
            started = ledger.get(point.name, {})
            study.enqueue_trial({**point.as_dict(), **{k: started[k] for k in ("lr", "weight_decay") if k in started}})
    return _Search(space, metric=METRIC, mode="max", sampler=sampler, study_name=STUDY_NAME, storage=storage)


class CellLatinSampler(optuna.samplers.BaseSampler):
    """The `per_cell` samples of a cell form a Latin hypercube over the hyper-parameters: each one's (log) range
    is cut into `per_cell` equal strata and every stratum holds one sample, the design drawn from a generator
    seeded by the study seed and the cell. So every cell, scratch or pre-trained, gets the same spread of
    learning rates (with two samples: one in each half of the log range), and a sample's values depend on its
    grid point alone -- not on which trials ended before it was asked -- so a resumed run, or one on a loaded
    machine, asks the same points. Written here because Optuna has no sampler that stratifies within groups of
    enqueued fixed parameters; scipy's LatinHypercube draws the design."""

    def __init__(self, names: list[str], per_cell: int, seed: int):
        self.names, self.per_cell, self.seed = names, per_cell, seed

    def infer_relative_search_space(self, study, trial) -> dict:
        return {}

    def sample_relative(self, study, trial, search_space) -> dict:
        return {}

    def sample_independent(self, study, trial, param_name, param_distribution):
        fixed = trial.system_attrs.get("fixed_params", {})
        if not set(AXES) <= set(fixed) or param_name not in self.names:
            raise ValueError(f"CellLatinSampler samples {self.names} of enqueued grid points only; trial "
                             f"{trial.number} asks for {param_name!r} with fixed parameters {sorted(fixed)}")
        point = point_of(fixed)
        u = self._design(point.cell)[point.sample, self.names.index(param_name)]
        low, high = param_distribution.low, param_distribution.high
        if param_distribution.log:
            return math.exp(math.log(low) + u * (math.log(high) - math.log(low)))
        return low + u * (high - low)

    def _design(self, cell: tuple) -> np.ndarray:
        from scipy.stats import qmc

        rng = np.random.default_rng([self.seed, zlib.crc32(repr(cell).encode())])
        return qmc.LatinHypercube(d=len(self.names), rng=rng).random(self.per_cell)


class _Search(OptunaSearch):
    """OptunaSearch that tells a diverged trial as PRUNED (see the module docstring); OptunaSearch prunes a trial
    that completes without the metric."""

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        if result and DIVERGED_STEP in result:
            result, error = None, False
        super().on_trial_complete(trial_id, result=result, error=error)


def _value(entry: dict) -> float | None:
    value = entry.get("metrics", {}).get(METRIC)
    return value if value is not None and math.isfinite(value) else None


def _params(entry: dict) -> dict:
    return {**{k: entry[k] for k in AXES}, "lr": entry["lr"], "weight_decay": entry["weight_decay"]}


class PerCellASHA(FIFOScheduler):
    """ASHA on optimizer steps (so a resumed trial keeps its place), comparing a trial only with trials of
    its own cell (same model, source, pre-training size, budget, shots and target subset): one ASHA per cell,
    created on the cell's first trial."""

    def __init__(self, eval_every: int, grace_evals: int, reduction_factor: int):
        super().__init__()
        self.eval_every, self.grace_evals, self.reduction_factor = eval_every, grace_evals, reduction_factor
        self._cells: dict[tuple, AsyncHyperBandScheduler] = {}

    def _cell(self, trial) -> AsyncHyperBandScheduler:
        point = point_of(trial.config)
        if point.cell not in self._cells:
            every = min(self.eval_every, point.budget)
            self._cells[point.cell] = AsyncHyperBandScheduler(
                time_attr="step", metric=METRIC, mode="max", max_t=point.budget,
                grace_period=min(point.budget, every * self.grace_evals),
                reduction_factor=self.reduction_factor, stop_last_trials=False)
        return self._cells[point.cell]

    def on_trial_add(self, controller, trial):
        self._cell(trial).on_trial_add(controller, trial)

    def on_trial_result(self, controller, trial, result):
        if DIVERGED_STEP in result:  # stopped here, its NaN kept out of the rungs
            return TrialScheduler.STOP
        return self._cell(trial).on_trial_result(controller, trial, result)

    def on_trial_complete(self, controller, trial, result):
        if result and DIVERGED_STEP in result:
            self._cell(trial).on_trial_remove(controller, trial)
        else:
            self._cell(trial).on_trial_complete(controller, trial, result)

    def on_trial_remove(self, controller, trial):
        self._cell(trial).on_trial_remove(controller, trial)
