"""Saliency maps and how well they point at a lesion: Grad-CAM of a model on images, and the scores of maps against
lesion masks. The post-sweep stage that runs them on the tuned models is scaling.analysis.saliency.

Maps: Grad-CAM (Selvaraju et al. 2017) from the `grad-cam` package, for the positive logit (binary) or the image's
class (multiclass), at the last feature map: the final pre-activation norm of ResNet-v2 (`model.norm`, BiT and the
cpu ladder) or the last ViT block's first norm with its patch tokens reshaped to the patch grid. Each map is
scaled to [0, 1] by the package and sized to the model's input (the centre crop the loop evaluates on).

Scores against the lesion mask of each image (`Dataset.lesion_masks`, cropped like the input), per seed and image,
then averaged over seeds; intervals by a bootstrap over images, seeded (by the caller, from the study's seed):
  - pointing game (Zhang et al. 2016): is the map's maximum inside the lesion? Ties count as a random pick among
    the maxima, so a uniform (or all-zero) map scores the lesion's share of the image;
  - energy pointing (Wang et al. 2020, Score-CAM): the share of the map's mass inside the lesion;
  - baseline: the lesion's share of the image, what a uniform or random map scores on both in expectation.
"""
from __future__ import annotations

import numpy as np
import torch

from scaling.laws.intervals import percentile_interval

N_BOOT = 2000


class SaliencyError(ValueError):
    """A model whose last feature map this module does not know how to find."""


def _vit_tokens_to_grid(model):
    rows, cols = model.patch_embed.grid_size

    def reshape(tokens: torch.Tensor) -> torch.Tensor:
        patches = tokens[:, model.num_prefix_tokens:, :]
        return patches.reshape(tokens.shape[0], rows, cols, tokens.shape[2]).permute(0, 3, 1, 2)

    return reshape


def target_layer(model: torch.nn.Module):
    """(layer, reshape_transform) of the last feature map Grad-CAM reads."""
    if hasattr(model, "blocks") and hasattr(model, "patch_embed"):  # timm ViT
        return model.blocks[-1].norm1, _vit_tokens_to_grid(model)
    if hasattr(model, "norm") and hasattr(model, "stages"):  # timm ResNetV2: norm after the last stage
        return model.norm, None
    raise SaliencyError(f"no Grad-CAM layer known for {type(model).__name__}; expected a timm ResNetV2 or ViT")


def grad_cam(model: torch.nn.Module, images: torch.Tensor, classes: list[int]) -> np.ndarray:
    """Grad-CAM maps (B, H, W) in [0, 1] of `images` (B, 3, H, W, normalised as the loop feeds them) for the
    output units `classes` (one per image)."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    layer, reshape = target_layer(model)
    model.eval()
    with GradCAM(model=model, target_layers=[layer], reshape_transform=reshape) as cam:
        return cam(input_tensor=images, targets=[ClassifierOutputTarget(c) for c in classes])


def pointing(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Per image: the share of the map's maximal pixels that lie in the lesion (1 when the maximum is inside)."""
    flat, inside = maps.reshape(len(maps), -1), masks.reshape(len(masks), -1)
    top = np.isclose(flat, flat.max(axis=1, keepdims=True), rtol=0, atol=1e-6)
    return (top & inside).sum(axis=1) / top.sum(axis=1)


def energy(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Per image: the share of the map's mass inside the lesion (an all-zero map counts as uniform)."""
    flat, inside = maps.reshape(len(maps), -1).astype(np.float64), masks.reshape(len(masks), -1)
    total = flat.sum(axis=1)
    return np.where(total > 0, (flat * inside).sum(axis=1) / np.where(total > 0, total, 1), inside.mean(axis=1))


def bootstrap_interval(values: np.ndarray, rng: np.random.Generator, level: float = 0.95,
                       n_boot: int = N_BOOT) -> tuple[float, float]:
    """Percentile interval of the mean of `values` over resamples of its entries."""
    means = values[rng.integers(0, len(values), (n_boot, len(values)))].mean(axis=1)
    return tuple(float(q) for q in percentile_interval(means, level))


def localisation(maps: np.ndarray, masks: np.ndarray, seed: int) -> dict[str, float]:
    """Scores of maps (seeds, B, H, W) against masks (B, H, W) of images that all hold a lesion (module docstring)."""
    rng = np.random.default_rng(seed)
    out = {"saliency_images": len(masks)}
    for name, score in (("pointing", pointing), ("energy", energy)):
        per_image = np.mean([score(m, masks) for m in maps], axis=0)
        low, high = bootstrap_interval(per_image, rng)
        out.update({f"saliency_{name}": float(per_image.mean()), f"saliency_{name}_low": low,
                    f"saliency_{name}_high": high})
    out["saliency_baseline"] = float(masks.reshape(len(masks), -1).mean(axis=1).mean())
    return out
