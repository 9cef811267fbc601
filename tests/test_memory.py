"""Memory at high resolution: activation checkpointing gives the same gradients; the micro-batch preflight keeps
the effective batch and picks the largest micro-batch that fits."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from scaling.config import Recipe
from scaling.models import create_model
from scaling.train.memory import apply_checkpointing, choose_micro_batch, plan_micro_batches


@pytest.mark.parametrize("ladder, name, side", [("cpu", "w16", 48), ("vit", "tiny", 32), ("bit", "R50x1", 64)])
def test_checkpointed_and_plain_training_give_the_same_gradients(ladder, name, side):
    torch.manual_seed(0)
    plain = create_model(ladder, name, 3, img_size=side if ladder == "vit" else None)
    checkpointed = create_model(ladder, name, 3, img_size=side if ladder == "vit" else None)
    checkpointed.load_state_dict(plain.state_dict())
    apply_checkpointing(checkpointed, Recipe(grad_checkpointing=True))
    x, y = torch.rand(4, 3, side, side), torch.tensor([0, 1, 2, 1])
    grads = []
    for model in (plain, checkpointed):
        model.train()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        grads.append({k: p.grad for k, p in model.named_parameters()})
    assert any(getattr(m, "grad_checkpointing", False) for m in checkpointed.modules())
    for k, g in grads[0].items():
        torch.testing.assert_close(grads[1][k], g, rtol=1e-5, atol=1e-6)


def linear_gpu(fixed: float, per_image: float, capacity: float):
    """A fake GPU: a pass of m images needs fixed + m * per_image bytes; over `capacity` it runs out of memory."""
    calls = []

    def peak(m: int):
        calls.append(m)
        need = fixed + m * per_image
        return None if need > capacity else need

    return peak, calls


@pytest.mark.parametrize("per_worker, fixed, per_image, budget, expected", [
    (128, 10e9, 1e9, 40e9, 16),   # 30 images fit, but 30 does not divide 128
    (128, 10e9, 0.2e9, 40e9, 128),  # everything fits
    (96, 8e9, 1e9, 40e9, 32),
    (128, 30e9, 5e9, 40e9, 2),    # even the probe (16) does not fit
])
def test_preflight_picks_the_largest_fitting_divisor(per_worker, fixed, per_image, budget, expected):
    peak, calls = linear_gpu(fixed, per_image, capacity=budget * 1.05)
    micro, found = choose_micro_batch(per_worker, peak, budget)
    fits = [d for d in range(1, per_worker + 1) if per_worker % d == 0 and fixed + d * per_image <= budget]
    assert micro == max(fits) == expected and found <= budget
    assert len(calls) <= 5  # a few real passes, not a search over every divisor


def test_preflight_keeps_the_effective_batch():
    for batch, world in [(128, 1), (128, 4), (512, 4), (96, 3)]:
        for fixed, per_image in [(5e9, 0.3e9), (20e9, 2e9), (1e9, 0.01e9)]:
            recipe = Recipe(batch_size=batch, micro_batch="auto")
            peak, _ = linear_gpu(fixed, per_image, capacity=40e9)
            planned, metrics = plan_micro_batches(recipe, world, 0, peak, 36e9)
            assert metrics["micro_batch"] * planned.grad_accum * world == batch == planned.batch_size
            assert planned.micro_batch is None and metrics["preflight_peak_gb"] <= 36e9 / 2**30
    fixed = plan_micro_batches(Recipe(batch_size=128, micro_batch=8), 4, 0, None, None)
    assert (fixed[0].grad_accum, fixed[1]) == (4, {"micro_batch": 8, "grad_accum": 4})
    on_cpu = plan_micro_batches(Recipe(batch_size=64, micro_batch="auto"), 2, 0, None, None)
    assert on_cpu[1] == {"micro_batch": 32, "grad_accum": 1}  # no GPU to measure: the whole batch per pass
    as_before = plan_micro_batches(replace(Recipe(batch_size=64), grad_accum=4), 1, 0, None, None)
    assert as_before[1] == {"micro_batch": 16, "grad_accum": 4}
    with pytest.raises(ValueError, match="micro_batch 12 must divide the 32 images per worker"):
        plan_micro_batches(Recipe(batch_size=128, micro_batch=12), 4, 0, None, None)


def test_recipe_keys_validate():
    from pathlib import Path

    from scaling.config import ConfigError, load_config

    smoke = Path(__file__).resolve().parent.parent / "studies" / "configs" / "smoke.yaml"
    cfg = load_config(smoke, ["finetune.recipe.micro_batch=auto", "pretrain.micro_batch=16",
                              "pretrain.grad_checkpointing=true"])
    assert (cfg.finetune.recipe.micro_batch, cfg.pretrain.micro_batch) == ("auto", 16)
    for override, message in [
        ("pretrain.micro_batch=big", "pretrain.micro_batch: got 'big'; expected an integer or one of 'auto'"),
        ("pretrain.micro_batch=0", "pretrain.micro_batch: got 0; expected an integer or one of 'auto'"),
    ]:
        with pytest.raises(ConfigError, match=message):
            load_config(smoke, [override])
    with pytest.raises(ConfigError, match="finetune.recipe.micro_batch: got 8 with finetune.recipe.grad_accum 2"):
        load_config(smoke, ["finetune.recipe.micro_batch=8", "finetune.recipe.grad_accum=2"])
