"""Optimizer and learning-rate schedule from a training recipe (scaling.config.Recipe)."""
from __future__ import annotations

import math

import torch


def make_optimizer(model: torch.nn.Module, recipe) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum, weight_decay=recipe.weight_decay)
    return torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)


def lr_factor(step: int, recipe) -> float:
    """Multiplier of the base lr at `step`: linear warm-up, then the recipe's decay.

    "bit" is the BiT-HyperRule decay: 10x down at 30%, 60% and 90% of the steps."""
    if step < recipe.warmup_steps:
        return (step + 1) / recipe.warmup_steps
    progress = step / recipe.steps
    if recipe.schedule == "bit":
        return 0.1 ** sum(progress >= m for m in (0.3, 0.6, 0.9))
    if recipe.schedule == "cosine":
        after = (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * after))
    return 1.0


def make_scheduler(optimizer: torch.optim.Optimizer, recipe) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, recipe))
