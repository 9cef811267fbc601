"""The saliency stage of a study: Grad-CAM maps of every seed's final model of the best trial per cell, on a fixed
set of test images, saved as overlays; on targets whose lesions are known (the synthetic ones), how well the maps
point at them (scaling.evaluate.saliency). Datasets without masks (real data) get overlays only. Runs once after
the sweep, on the driver (CPU is enough): the trials' final states come from their jobs' checkpoints, the images
are prepared as the training loop evaluates them.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from scaling import models
from scaling.config import DatasetRef
from scaling.data.preprocess import preprocess_image
from scaling.data.registry import open_dataset
from scaling.data.shards import ShardDataset
from scaling.data.stage import PreparedSet
from scaling.evaluate.saliency import grad_cam, localisation
from scaling.train.augment import prepare_images
from scaling.train.outputs import final_state
from scaling.train.replicas import model_for_shards

#: test images per trial: the first positives of the test split, the same for every trial
N_IMAGES = 8
#: overlays are enlarged (nearest neighbour) to at least this side, to be readable at 32-64 px inputs
OVERLAY_SIDE = 192
#: forward FLOPs of a batch of maps below which the maps are computed on one thread (see _threads_for)
SMALL_FLOPS = 1e9


def run_stage(best: pd.DataFrame, target: PreparedSet, target_ref: DatasetRef, ladder: str, seed: int,
              study_dir, tracker=None, log=print) -> pd.DataFrame:
    """Saliency of every trial in `best` (the tuned trial per cell, with columns trial and model; models of
    `ladder` trained on `target`, opened from the config's `target_ref` for its lesion masks): overlays under
    `<study>/saliency/<trial>/`, logged to the trial's MLflow run when a tracker is given; returns the score
    columns (see `localisation`, bootstrapped from `seed`, plus saliency_seconds) indexed by trial."""
    study_dir = Path(study_dir)
    rows = {}
    for _, trial in best.iterrows():
        columns, paths = trial_saliency(target, target_ref, ladder, seed, trial, study_dir / "jobs",
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


def trial_saliency(target: PreparedSet, target_ref: DatasetRef, ladder: str, seed: int, trial: pd.Series,
                   jobs_dir: str | Path, out: Path) -> tuple[dict, list[Path]]:
    """Maps, overlays and (where masks exist) scores of one trial's seeds; returns (columns, files written)."""
    started = time.perf_counter()
    recs = target.shards.records.loc[target.test]
    rows = recs.index[recs["y"].map(lambda y: np.any(np.asarray(y) != 0))].to_numpy()[:N_IMAGES]
    if not len(rows):
        return {"saliency_images": 0}, []
    images = _images(target, rows)
    classes = [0 if target.shards.task.kind == "binary" else int(y) for y in target.shards.records.loc[rows, "y"]]
    state = final_state(jobs_dir, trial["trial"])
    with _threads_for(ladder, trial["model"], images):
        maps = np.stack([grad_cam(_model(ladder, trial["model"], target, replica["model"]), images, classes)
                         for replica in state["replicas"]])
    masks = _masks(target_ref, target, rows, images.shape[-1])
    columns = localisation(maps, masks, seed) if masks is not None else {"saliency_images": len(rows)}
    paths = _overlays(images, maps, masks, target.shards.records.loc[rows, "key"].tolist(), out)
    columns["saliency_seconds"] = time.perf_counter() - started
    return columns, paths


def _images(target: PreparedSet, rows: np.ndarray) -> torch.Tensor:
    """Test images as the loop evaluates them (centre crop, [-1, 1], 3 channels)."""
    dataset = ShardDataset(target.shards, rows)
    batch = torch.stack([dataset[i][0] for i in range(len(rows))])
    return prepare_images(batch, torch.device("cpu"), train=False, rng=None, on_gpu=False).contiguous()


def _masks(target_ref: DatasetRef, target: PreparedSet, rows: np.ndarray, side: int) -> np.ndarray | None:
    """Lesion masks of the images, preprocessed as the shards and cropped as the model input; None without masks."""
    dataset = open_dataset(target_ref.dataset, **target_ref.options)
    if not hasattr(dataset, "lesion_masks"):
        return None
    keys = target.shards.records.loc[rows, "key"].astype(int).tolist()
    pre = replace(target.shards.preprocess, clahe=False, storage="uint8", encoding="raw")
    stored = np.stack([preprocess_image(m.astype(np.float32), pre, 1) >= 128 for m in dataset.lesion_masks(keys)])
    o = (stored.shape[-1] - side) // 2
    return stored[:, o:o + side, o:o + side]


def _model(ladder: str, name: str, target: PreparedSet, weights: dict) -> torch.nn.Module:
    """The trained model `name` of one seed, from its final weights."""
    model = model_for_shards(ladder, name, target.shards.task.num_outputs, target.shards.preprocess.resolution)
    model.load_state_dict(weights)
    return model


@contextlib.contextmanager
def _threads_for(ladder: str, name: str, images: torch.Tensor):
    """One torch thread for small models: on 2 busy cores a forward+backward of cpu/w8 on 8 images at 45 px took
    41 ms with one thread and 0.2-0.8 s with two (threads only add synchronisation at that size)."""
    flops = models.flops_per_image(models.rung(ladder, name), images.shape[-1]) * len(images)
    threads = torch.get_num_threads()
    torch.set_num_threads(1 if flops < SMALL_FLOPS else threads)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _save_png(pixels: np.ndarray, path: Path) -> Path:
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
        name = f"{j:02d}_{str(key).replace('/', '_')}"  # real datasets' keys are paths under their root
        paths.append(_save_png(show_cam_on_image(rgb[j], maps[:, j].mean(axis=0), use_rgb=True),
                               out / f"{name}_gradcam.png"))
        if masks is not None:
            paths.append(_save_png(masks[j].astype(np.uint8) * 255, out / f"{name}_mask.png"))
    return paths
