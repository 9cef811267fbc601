"""What a training job is (`JobSpec`, shipped to every worker) and the files it leaves in each checkpoint."""
from __future__ import annotations

from dataclasses import dataclass, field

#: the full training state of every seed (models, optimizers, schedulers) and the step, in every checkpoint
STATE_FILE = "state.pt"
#: per-image test probabilities of every seed, written beside STATE_FILE at the final evaluation
#: (see scaling.evaluate.job_metrics.final_evaluation)
PREDICTIONS_FILE = "predictions.npz"
#: version of the state the loop saves and `export_weights` stores; part of every checkpoint-store key, so
#: bumping it after a change of format makes weights of the old one unreachable instead of misread
CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class JobSpec:
    """Everything one training job needs; picklable, shipped to every worker."""

    kind: str  # "pretrain" | "finetune" | "scratch"
    ladder: str
    model: str
    shards: str  # path of a ShardSet
    train: tuple[int, ...]
    val: tuple[int, ...]
    test: tuple[int, ...]
    recipe: object  # scaling.config.Recipe
    #: one model per seed, trained side by side
    seeds: tuple[int, ...]
    #: pre-trained weights file (see `scaling.train.job.export_weights`); None trains from random init
    init: str | None = None
    bf16: bool = True
    loader_workers: int = 0
    #: extra values echoed into every report (trial axes), for the callbacks that log them
    tags: dict = field(default_factory=dict)
