"""Saliency: localisation scores on constructed maps, Grad-CAM on both ladders' architectures, lesion masks that
sit where the renderer drew the lesion, and the post-sweep stage writing overlays for tiny models."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from scaling import models
from scaling.analysis import saliency as saliency_stage
from scaling.evaluate import saliency
from scaling.config import load_config
from scaling.data.registry import open_dataset
from scaling.data.synthetic import xray
from scaling.train.spec import STATE_FILE

CONFIGS = __import__("pathlib").Path(__file__).resolve().parents[1] / "studies" / "configs"


def _masks(n=6, side=20, seed=0):
    """Rectangular lesions of random size and place."""
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, side, side), bool)
    for m in masks:
        top, left = rng.integers(0, side - 8, 2)
        h, w = rng.integers(3, 8, 2)
        m[top:top + h, left:left + w] = True
    return masks


def test_a_map_peaked_on_the_lesion_scores_one_and_a_uniform_map_the_baseline():
    masks = _masks()
    area = masks.reshape(len(masks), -1).mean(axis=1)
    peaked = np.where(masks, 1.0, 0.0) * np.random.default_rng(1).uniform(0.5, 1, masks.shape)
    np.testing.assert_allclose(saliency.pointing(peaked, masks), 1)
    np.testing.assert_allclose(saliency.energy(peaked, masks), 1)
    for flat in (np.ones(masks.shape), np.zeros(masks.shape)):  # Grad-CAM maps can be all zero
        np.testing.assert_allclose(saliency.pointing(flat, masks), area)
        np.testing.assert_allclose(saliency.energy(flat, masks), area)
    outside = np.where(masks, 0.0, 1.0)
    np.testing.assert_allclose(saliency.energy(outside, masks), 0)
    np.testing.assert_allclose(saliency.pointing(outside, masks), 0)


def test_random_maps_score_the_baseline_on_average():
    masks = np.repeat(_masks(4), 500, axis=0)
    maps = np.random.default_rng(2).random(masks.shape)
    baseline = masks.reshape(len(masks), -1).mean()
    assert saliency.pointing(maps, masks).mean() == pytest.approx(baseline, abs=0.02)
    assert saliency.energy(maps, masks).mean() == pytest.approx(baseline, abs=0.01)


def test_localisation_intervals_bracket_the_score_and_separate_from_the_baseline():
    masks = _masks(12)
    good = np.stack([np.where(masks, 1.0, 0.1), np.where(masks, 0.9, 0.2)])  # two seeds
    out = saliency.localisation(good, masks, seed=0)
    assert out["saliency_pointing"] == out["saliency_pointing_low"] == out["saliency_pointing_high"] == 1
    assert out["saliency_energy_low"] <= out["saliency_energy"] <= out["saliency_energy_high"]
    assert out["saliency_energy_low"] > out["saliency_baseline"]
    noisy = np.random.default_rng(3).random((2, *masks.shape))
    out = saliency.localisation(noisy, masks, seed=0)
    assert out["saliency_energy_low"] < out["saliency_baseline"] < out["saliency_energy_high"]
    assert saliency.localisation(noisy, masks, seed=0) == out  # seeded


@pytest.mark.parametrize("ladder,name,side", [("cpu", "w8", 45), ("vit", "tiny", 32)])
def test_grad_cam_reads_the_last_feature_map_of_resnetv2_and_vit(ladder, name, side):
    torch.manual_seed(0)
    model = models.create_model(ladder, name, num_classes=1, img_size=side if ladder == "vit" else None)
    images = torch.randn(3, 3, side, side)
    maps = saliency.grad_cam(model, images, [0, 0, 0])
    assert maps.shape == (3, side, side) and np.isfinite(maps).all()
    assert maps.min() >= 0 and maps.max() <= 1 + 1e-6 and maps.max() > 0.5  # scaled to [0, 1], not empty
    assert len({m.tobytes() for m in maps}) == 3  # each image its own map


def test_unknown_architecture_is_a_clear_error():
    with pytest.raises(saliency.SaliencyError, match="ResNetV2 or ViT"):
        saliency.target_layer(torch.nn.Linear(2, 1))


@pytest.mark.parametrize("name", ["synthetic-covidx", "synthetic-tb"])
def test_lesion_masks_lie_where_the_lesions_are_drawn(name):
    dataset = open_dataset(name, size=40, test_size=40, image_size=64)
    recs = dataset.records()
    test = recs[recs["split"] == "test"]
    keys = test["key"].astype(int).to_numpy()
    masks = dataset.lesion_masks(keys)
    positive = test["y"].to_numpy() == 1
    assert masks.shape == (len(keys), 64, 64) and masks.dtype == bool
    assert not masks[~positive].any()  # negatives (even with look-alike findings) have no lesion
    area = masks[positive].mean(axis=(1, 2))
    assert (area > 0.005).all() and (area < 0.3).all()
    np.testing.assert_array_equal(dataset.lesion_masks(keys[:3]), masks[:3])  # a pure function of the image
    # the lesion brightens the image inside its mask: rendered again without it, the pixels there are darker
    split, j = dataset._locate(int(keys[positive][0]))
    without = xray.render([dataset._params(split, j, without_lesion=True)], 64)[0].astype(float)
    image = dataset.render_batch([keys[positive][0]])[0].astype(float)
    inside = masks[positive][0]
    assert (image - without)[inside].mean() > 3 * max(np.abs(image - without)[~inside].mean(), 0.5)
    # and where the pattern belongs: lateral lower lungs (COVIDx-like), upper zones (TB-like)
    rows, cols = np.nonzero(masks[positive].any(axis=0))
    if name == "synthetic-covidx":
        assert np.abs(cols - 31.5).min() > 5 and rows.mean() > 20
    else:
        assert rows.mean() < 32


def test_stage_writes_overlays_and_masks_for_tiny_models(tmp_path):
    from scaling.data.stage import prepare_study_data

    cfg = load_config(CONFIGS / "smoke.yaml", [f"data.cache_dir={tmp_path / 'cache'}"])
    data = prepare_study_data(cfg, log=lambda *_: None)
    study = tmp_path / "study"
    num_outputs = data.target.shards.task.num_outputs
    trials = []
    for k in range(2):
        torch.manual_seed(k)
        replicas = [{"model": models.create_model("cpu", "w8", num_classes=num_outputs).state_dict()} for _ in range(2)]
        run = study / "jobs" / f"trial{k}"
        for stamp in ("2026-12-01_10-00-00.000001", "2026-12-01_10-00-05.000002"):  # the newest one is read
            (run / f"checkpoint_{stamp}").mkdir(parents=True)
            torch.save({"replicas": replicas, "step": 20}, run / f"checkpoint_{stamp}" / STATE_FILE)
        trials.append({"trial": f"trial{k}", "model": "w8", "step": 20})
    table = saliency_stage.run_stage(pd.DataFrame(trials), data.target, cfg.data.target, cfg.models.ladder, cfg.seed,
                                     study, log=lambda *_: None)
    assert list(table.index) == ["trial0", "trial1"]
    row = table.loc["trial0"]
    assert row["saliency_images"] == saliency_stage.N_IMAGES
    assert 0 <= row["saliency_pointing_low"] <= row["saliency_pointing"] <= row["saliency_pointing_high"] <= 1
    assert 0 < row["saliency_baseline"] < 0.5 and row["saliency_seconds"] > 0
    written = sorted(p.name for p in (study / "saliency" / "trial0").iterdir())
    assert len([n for n in written if n.endswith("_gradcam.png")]) == saliency_stage.N_IMAGES
    assert len([n for n in written if n.endswith("_mask.png")]) == saliency_stage.N_IMAGES
    from PIL import Image

    with Image.open(study / "saliency" / "trial0" / written[0]) as overlay:
        assert overlay.mode == "RGB" and min(overlay.size) >= saliency_stage.OVERLAY_SIDE
