"""Saliency of the tuned target models: Grad-CAM maps of every seed's final model of the best trial per cell, on a
fixed set of test images, saved as overlays; on targets whose lesions are known (the synthetic ones), how well the
maps point at them. Runs once after the sweep, on the driver (CPU is enough).

Maps: Grad-CAM (Selvaraju et al. 2017) from the `grad-cam` package, for the positive logit (binary) or the image's
class (multiclass), at the last feature map: the final pre-activation norm of ResNet-v2 (`model.norm`, BiT and the
cpu ladder) or the last ViT block's first norm with its patch tokens reshaped to the patch grid. Each map is
scaled to [0, 1] by the package and sized to the model's input (the centre crop the loop evaluates on).

Scores against the lesion mask of each image (`Dataset.lesion_masks`, cropped like the input), per seed and image,
then averaged over seeds; intervals by a bootstrap over images, seeded from the study's seed:
  - pointing game (Zhang et al. 2016): is the map's maximum inside the lesion? Ties count as a random pick among
    the maxima, so a uniform (or all-zero) map scores the lesion's share of the image;
  - energy pointing (Wang et al. 2020, Score-CAM): the share of the map's mass inside the lesion;
  - baseline: the lesion's share of the image, what a uniform or random map scores on both in expectation.
Datasets without masks (real data) get overlays only.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

#: test images per trial: the first positives of the test split, the same for every trial
N_IMAGES = 8
N_BOOT = 2000
#: overlays are enlarged (nearest neighbour) to at least this side, to be readable at 32-64 px inputs
OVERLAY_SIDE = 192
#: forward FLOPs of a batch of maps below which the maps are computed on one thread (see _threads_for)
SMALL_FLOPS = 1e9


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
    return tuple(float(q) for q in np.quantile(means, [(1 - level) / 2, (1 + level) / 2]))


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


# -------------------------------------------------------------------------------------------- the stage
def _images(target, rows: np.ndarray) -> torch.Tensor:
    """Test images as the loop evaluates them (centre crop, [-1, 1], 3 channels)."""
    from scaling.data.shards import ShardDataset
    from scaling.train.loop import _prepare

    dataset = ShardDataset(target.shards, rows)
    batch = torch.stack([dataset[i][0] for i in range(len(rows))])
    return _prepare(batch, torch.device("cpu"), train=False, rng=None, on_gpu=False).contiguous()


def _masks(cfg, target, rows: np.ndarray, side: int) -> np.ndarray | None:
    """Lesion masks of the images, preprocessed as the shards and cropped as the model input; None without masks."""
    from scaling.data.preprocess import preprocess_image
    from scaling.data.registry import open_dataset

    dataset = open_dataset(cfg.data.target.dataset, **cfg.data.target.options)
    if not hasattr(dataset, "lesion_masks"):
        return None
    keys = target.shards.records.loc[rows, "key"].astype(int).tolist()
    pre = replace(target.shards.preprocess, clahe=False, storage="uint8", encoding="raw")
    stored = np.stack([preprocess_image(m.astype(np.float32), pre, 1) >= 128 for m in dataset.lesion_masks(keys)])
    o = (stored.shape[-1] - side) // 2
    return stored[:, o:o + side, o:o + side]


def _model(cfg, name: str, num_outputs: int, resolution: int, weights: dict) -> torch.nn.Module:
    from scaling import models
    from scaling.train.loop import _crop_size

    r = models.rung(cfg.models.ladder, name)
    model = models.create_model(cfg.models.ladder, name, num_classes=num_outputs,
                                img_size=_crop_size(resolution) if r.patch else None)
    model.load_state_dict(weights)
    return model


@contextlib.contextmanager
def _threads_for(cfg, name: str, images: torch.Tensor):
    """One torch thread for small models: on 2 busy cores a forward+backward of cpu/w8 on 8 images at 45 px took
    41 ms with one thread and 0.2-0.8 s with two (threads only add synchronisation at that size)."""
    from scaling import models

    flops = models.flops_per_image(models.rung(cfg.models.ladder, name), images.shape[-1]) * len(images)
    threads = torch.get_num_threads()
    torch.set_num_threads(1 if flops < SMALL_FLOPS else threads)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _save_png(pixels: np.ndarray, path: Path) -> Path:
    from PIL import Image

    image = Image.fromarray(pixels)
    factor = max(1, -(-OVERLAY_SIDE // max(image.size)))
    image.resize((image.width * factor, image.height * factor), Image.NEAREST).save(path)
    return path


def _overlays(images: torch.Tensor, maps: np.ndarray, masks: np.ndarray | None, keys: list, out: Path) -> list[Path]:
    """The seed-mean map over each image (and its lesion mask beside it)."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    out.mkdir(parents=True, exist_ok=True)
    rgb = ((images.permute(0, 2, 3, 1).numpy() + 1) / 2).clip(0, 1).astype(np.float32)
    paths = []
    for j, key in enumerate(keys):
        paths.append(_save_png(show_cam_on_image(rgb[j], maps[:, j].mean(axis=0), use_rgb=True),
                               out / f"{j:02d}_{key}_gradcam.png"))
        if masks is not None:
            paths.append(_save_png(masks[j].astype(np.uint8) * 255, out / f"{j:02d}_{key}_mask.png"))
    return paths


def trial_saliency(cfg, target, trial: pd.Series, jobs_dir: str | Path, out: Path) -> tuple[dict, list[Path]]:
    """Maps, overlays and (where masks exist) scores of one trial's seeds; returns (columns, files written)."""
    from scaling.train.outputs import final_state

    started = time.perf_counter()
    recs = target.shards.records.loc[target.test]
    rows = recs.index[recs["y"].map(lambda y: np.any(np.asarray(y) != 0))].to_numpy()[:N_IMAGES]
    if not len(rows):
        return {"saliency_images": 0}, []
    images = _images(target, rows)
    classes = [0 if target.shards.task.kind == "binary" else int(y) for y in target.shards.records.loc[rows, "y"]]
    state = final_state(jobs_dir, trial["trial"])
    with _threads_for(cfg, trial["model"], images):
        maps = np.stack([grad_cam(_model(cfg, trial["model"], target.shards.task.num_outputs,
                                         target.shards.preprocess.resolution, replica["model"]), images, classes)
                         for replica in state["replicas"]])
    masks = _masks(cfg, target, rows, images.shape[-1])
    columns = localisation(maps, masks, cfg.seed) if masks is not None else {"saliency_images": len(rows)}
    paths = _overlays(images, maps, masks, target.shards.records.loc[rows, "key"].tolist(), out)
    columns["saliency_seconds"] = time.perf_counter() - started
    return columns, paths


def run_stage(best: pd.DataFrame, cfg, data, study_dir: str | Path, tracker=None, log=print) -> pd.DataFrame:
    """Saliency of every trial in `best` (the tuned trial per cell, with columns trial and model): overlays under
    `<study>/saliency/<trial>/`, logged to the trial's MLflow run when a tracker is given; returns the score
    columns (see `localisation`, plus saliency_seconds) indexed by trial."""
    study_dir = Path(study_dir)
    rows = {}
    for _, trial in best.iterrows():
        columns, paths = trial_saliency(cfg, data.target, trial, study_dir / "jobs",
                                        study_dir / "saliency" / trial["trial"])
        rows[trial["trial"]] = columns
        if tracker is not None and paths:
            tracker.add_to_job(trial["trial"], {k: v for k, v in columns.items() if np.isfinite(v)}, paths,
                               "saliency", step=int(trial.get("step", 0)))
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "trial"
    if len(table) and "saliency_pointing" in table:
        log(f"saliency: {len(table)} trials, pointing game {table['saliency_pointing'].mean():.2f} against a "
            f"baseline of {table['saliency_baseline'].mean():.2f}, {table['saliency_seconds'].sum():.1f} s")
    return table
