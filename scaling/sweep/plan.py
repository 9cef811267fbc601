"""What a study trains, as plain data: the pre-training jobs and the points of the fine-tuning grid.

Pure functions of the config, so a resumed study plans exactly the same jobs under the same names.
"""
from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, replace

from scaling.config import BOTH, SCRATCH, PublishedWeights, StudyConfig, has_own_data


@dataclass(frozen=True)
class PretrainJob:
    model: str
    #: "natural", "medical" or "both"
    source: str
    #: images of the source's training split used (a nested subset)
    size: int
    seed: int

    @property
    def name(self) -> str:
        return f"pre-{self.model}-{self.source}-{self.size}-s{self.seed}"

    @property
    def stages(self) -> tuple[str, ...]:
        """The source roles trained on, in order."""
        return ("natural", "medical") if self.source == BOTH else (self.source,)


@dataclass(frozen=True)
class FinetunePoint:
    """One point of the fine-tuning grid; `sample` numbers the hyper-parameter samples of a cell. Its trial
    trains one model per seed of the study (`sweep.seeds`), side by side in one job."""

    model: str
    source: str
    pretrain_size: int
    budget: int
    shots: int
    sample: int
    #: images of the target's training split trained on (a nested stratified subset); 0 = the whole split
    target_subset: int = 0

    @property
    def name(self) -> str:
        subset = f"-n{self.target_subset}" if self.target_subset else ""  # names of full-split points unchanged
        return (f"ft-{self.model}-{self.source}-{self.pretrain_size}-b{self.budget}-k{self.shots}{subset}"
                f"-t{self.sample}")

    @property
    def cell(self) -> tuple:
        """The point without its hyper-parameter sample: trials of one cell compete (ASHA, best-of)."""
        return (self.model, self.source, self.pretrain_size, self.budget, self.shots, self.target_subset)

    def pretrain(self, seed: int) -> PretrainJob | None:
        """The pre-training job this point starts from (pre-training is seeded by the study seed)."""
        if self.source == SCRATCH:
            return None
        return PretrainJob(self.model, self.source, self.pretrain_size, seed)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Grid:
    """One grid of a study's union (see `grids`): the values of each axis."""

    models: tuple[str, ...]
    sources: tuple[str, ...]
    budgets: tuple[int, ...]
    shots: tuple[int, ...]
    scratch_target_sizes: tuple[int, ...]
    #: the pre-training sizes kept of each source's data-size axis (`pretrain_sizes`); None = all of them
    source_sizes: tuple[int, ...] | None = None


def grids(cfg: StudyConfig) -> list[Grid]:
    """The study's own grid, then one per `sweep.slices` entry: the own grid with the entry's keys replaced."""
    own = Grid(tuple(cfg.models.sizes), tuple(cfg.sweep.sources), tuple(cfg.finetune.budgets), tuple(cfg.data.shots),
               tuple(cfg.sweep.scratch_target_sizes))
    out = [own]
    for part in cfg.sweep.slices:
        given = lambda value, default: default if value is None else tuple(value)  # noqa: E731
        out.append(Grid(given(part.sizes, own.models), given(part.sources, own.sources),
                        given(part.budgets, own.budgets), given(part.shots, own.shots),
                        given(part.scratch_target_sizes, own.scratch_target_sizes),
                        given(part.source_sizes, None)))
    return out


def finetune_points(cfg: StudyConfig) -> list[FinetunePoint]:
    """Every point of model x source x pre-training size x budget x shots x sample of each grid of the study
    (`grids`), each point once; from-scratch points have pre-training size 0, and on the full target split
    (shots 0) come also at each of the grid's scratch target sizes."""
    points = set()
    for grid in grids(cfg):
        points |= grid_points(cfg, grid)
    points = sorted(points, key=lambda p: (p.sample, p.model, p.source, p.pretrain_size, p.budget, p.shots,
                                           p.target_subset))
    return covering(points) if cfg.sweep.grid == "cover" else points


def grid_points(cfg: StudyConfig, grid: Grid) -> set[FinetunePoint]:
    points = set()
    for model, source, budget, shots, sample in itertools.product(
            grid.models, grid.sources, grid.budgets, grid.shots, range(cfg.sweep.trials_per_cell)):
        sizes = [n for n in pretrain_sizes(cfg, source)
                 if source == SCRATCH or grid.source_sizes is None or n in grid.source_sizes]
        points |= {FinetunePoint(model, source, size, budget, shots, sample) for size in sizes}
        if source == SCRATCH and shots == 0:
            points |= {FinetunePoint(model, source, 0, budget, 0, sample, n) for n in grid.scratch_target_sizes}
    return points


def budgets(cfg: StudyConfig) -> list[int]:
    """Every fine-tuning budget of the study: `finetune.budgets`, then the slices' other ones."""
    return _union(cfg.finetune.budgets, [g.budgets for g in grids(cfg)])


def scratch_target_sizes(cfg: StudyConfig) -> list[int]:
    """Every from-scratch target subset of the study: `sweep.scratch_target_sizes`, then the slices' other ones."""
    return _union(cfg.sweep.scratch_target_sizes, [g.scratch_target_sizes for g in grids(cfg)])


def _union(own, parts) -> list[int]:
    """`own` in its order, then the values only `parts` hold, sorted (a study without slices keeps its order)."""
    return [*own, *sorted({v for part in parts for v in part} - set(own))]


def covering(points: list[FinetunePoint]) -> list[FinetunePoint]:
    """A few of `points` (in their order) that hold every value of every axis: each model, each source at each of
    its pre-training sizes ("both" at one), budget, shots and target subset; then the other hyper-parameter
    samples of the first one's cell, so the per-cell search and its early stopping run too. Greedy: each next
    point is the first that adds the most values not yet held, and of those the one whose other values were
    chosen least often (so models and budgets take turns)."""
    def values(p: FinetunePoint) -> set[tuple]:
        return {("model", p.model), ("pretrain", p.source, 0 if p.source == BOTH else p.pretrain_size),
                ("budget", p.budget), ("shots", p.shots), ("subset", p.target_subset)}

    candidates, chosen, uses = [p for p in points if p.sample == 0], [], {}
    while candidates:
        best = max(candidates, key=lambda p: (len(values(p) - uses.keys()), -sum(uses.get(v, 0) for v in values(p))))
        if not values(best) - uses.keys():
            break
        chosen.append(best)
        uses.update({v: uses.get(v, 0) + 1 for v in values(best)})
    chosen += [p for p in points if chosen and p.cell == chosen[0].cell and p.sample > 0]
    return [p for p in points if p in chosen]


def pretrain_jobs(cfg: StudyConfig) -> list[list[PretrainJob]]:
    """The unique pre-training jobs the grid needs, in waves: a "both" job starts from its natural job,
    so it runs in the wave after it."""
    jobs = {p.pretrain(cfg.seed) for p in finetune_points(cfg) if p.source != SCRATCH}
    first = {j for j in jobs if j.source != BOTH} | {natural_stage(cfg, j) for j in jobs if j.source == BOTH}
    second = jobs - first
    first = {j for j in first if published_point(cfg, j) is None}  # published weights are resolved, not trained
    order = lambda j: (j.model, j.source, j.size)  # noqa: E731
    return [sorted(w, key=order) for w in (first, second) if w]


def pretrain_sizes(cfg: StudyConfig, source: str) -> list[int]:
    """The data-size axis of a source: the study's own nested subsets (`data.source_sizes`, when the source has
    images of its own) and its published points; "both" takes the medical sizes; scratch is [0]."""
    if source == SCRATCH:
        return [0]
    if source == BOTH:
        return list(cfg.data.source_sizes)
    ref = cfg.data.sources[source]
    return sorted([*(cfg.data.source_sizes if has_own_data(ref) else []), *(p.images for p in ref.published)])


def all_pretrain_sizes(cfg: StudyConfig) -> list[int]:
    """Every pre-training size of the grid (0 for scratch included)."""
    return sorted({0} | {n for source in cfg.sweep.sources for n in pretrain_sizes(cfg, source)})


def published_point(cfg: StudyConfig, job: PretrainJob) -> PublishedWeights | None:
    """The published weights a job stands for, or None when it is trained."""
    ref = cfg.data.sources.get(job.source)
    return next((p for p in ref.published if p.images == job.size), None) if ref is not None else None


def natural_stage(cfg: StudyConfig, job: PretrainJob) -> PretrainJob:
    """The natural job a "both" job starts from: the published point `sweep.both_from`, else the study's own
    natural pre-training at the same size."""
    if cfg.sweep.both_from:
        point = next(p for p in cfg.data.sources["natural"].published if p.name == cfg.sweep.both_from)
        return PretrainJob(job.model, "natural", point.images, job.seed)
    return replace(job, source="natural")
