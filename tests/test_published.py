"""Published weights as pre-training points: config syntax, the plan, offline resolution from a fake Hugging Face
cache, and the errors a missing or unknown weight gives before anything runs."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

from scaling import models
from scaling.models import published
from scaling.config import ConfigError, load_config
from scaling.data.base import DataError
from scaling.sweep.plan import finetune_points, natural_stage, pretrain_jobs
from scaling.rehearse.formats import write_hub_cache

ROOT = Path(__file__).resolve().parent.parent
REPO = "timm/vit_tiny_patch16_224.augreg_in21k"


def config(tmp_path, **natural) -> dict:
    raw = yaml.safe_load((ROOT / "studies" / "configs" / "smoke.yaml").read_text())
    raw["models"] = {"ladder": "vit", "sizes": ["tiny"]}
    raw["data"]["sources"]["natural"] = natural or {"published": [
        {"name": "imagenet21k", "images": 14197122, "weights": "hf"},
        {"name": "own-file", "images": 1281167, "weights": str(tmp_path / "{model}.safetensors")}]}
    raw["sweep"]["sources"] = ["scratch", "natural", "medical", "both"]
    raw["sweep"]["both_from"] = "imagenet21k"
    return raw


def load(tmp_path, raw: dict, *overrides):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_config(path, list(overrides))


def test_published_points_join_the_data_size_axis_and_are_not_trained(tmp_path):
    cfg = load(tmp_path, config(tmp_path))
    natural = sorted({p.pretrain_size for p in finetune_points(cfg) if p.source == "natural"})
    assert natural == [1281167, 14197122]  # no images of its own: the published points alone
    both = sorted({p.pretrain_size for p in finetune_points(cfg) if p.source == "both"})
    assert both == cfg.data.source_sizes  # BiT-M-style weights, then the medical subsets
    waves = pretrain_jobs(cfg)
    assert [{j.source for j in w} for w in waves] == [{"medical"}, {"both"}]  # nothing natural is trained
    assert all(j.size in cfg.data.source_sizes for w in waves for j in w)


def test_published_weights_resolve_offline_from_the_hf_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cfg = load(tmp_path, config(tmp_path))
    cache = tmp_path / "hub"
    with pytest.raises(models.ModelError) as err:
        published.resolve(cfg, hf_cache=cache)
    message = str(err.value)
    assert REPO in message and "python -m scaling.models download --config" in message
    assert f"{tmp_path / 'tiny.safetensors'} of vit/tiny does not exist" in message  # every missing file at once

    torch.manual_seed(0)
    source = models.create_model("vit", "tiny", 0)
    hub = write_hub_cache(cache, REPO, source.state_dict())
    save_file(source.state_dict(), tmp_path / "tiny.safetensors")
    found = published.resolve(cfg, hf_cache=cache)
    assert found == {("natural", 14197122, "tiny"): str(hub.resolve()),
                     ("natural", 1281167, "tiny"): str((tmp_path / "tiny.safetensors").resolve())}
    model = models.create_model("vit", "tiny", 2, pretrained=found[("natural", 14197122, "tiny")])
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in source.state_dict().items()
               if not k.startswith("head."))


def test_sweep_addresses_published_points_by_their_file(tmp_path):
    from scaling.data.stage import StudyData
    from scaling.sweep.plan import PretrainJob
    from scaling.sweep.jobs import StudyJobs

    cfg = load(tmp_path, config(tmp_path))
    weights = {("natural", 14197122, "tiny"): "/hub/bit-m.safetensors", ("natural", 1281167, "tiny"): "/w/tiny"}
    ctx = StudyJobs(cfg=cfg, data=StudyData(target=None, sources={}, weights=weights), store_dir=str(tmp_path),
                    jobs_dir=str(tmp_path))
    assert ctx.pretrained_weights(PretrainJob("tiny", "natural", 14197122, 0)) == "/hub/bit-m.safetensors"
    natural_init = {"ladder": "vit", "model": "tiny", "published": "/hub/bit-m.safetensors"}
    assert ctx.pretrain_parts(PretrainJob("tiny", "natural", 1281167, 0))["published"] == "/w/tiny"
    # "both" starts from the published point: its store key names that file
    job = PretrainJob("tiny", "both", cfg.data.source_sizes[0], 0)
    assert ctx.pretrain_parts(natural_stage(cfg, job)) == natural_init


def test_missing_weights_stop_the_data_stage_before_ray(tmp_path):
    from scaling.data.stage import prepare_study_data

    cfg = load(tmp_path, config(tmp_path), f"data.cache_dir={tmp_path / 'cache'}")
    with pytest.raises(DataError, match="(?s)published weights missing.*download --config"):
        prepare_study_data(cfg, log=lambda *_: None)
    assert not (tmp_path / "cache").exists()  # stopped before any shard was built


@pytest.mark.parametrize("natural, override, message", [
    ({"published": [{"name": "in1k", "images": 1281167, "weights": "hf", "tag": "augreg_in1k"}]}, None,
     "data.sources.natural.published[0].tag: timm publishes no weights vit_tiny_patch16_224.augreg_in1k for "
     "vit/tiny; its tags: augreg_in21k, augreg_in21k_ft_in1k"),
    ({"published": [{"name": "a", "images": 10, "weights": "hf"}, {"name": "a", "images": 20, "weights": "hf"}]},
     None, "data.sources.natural.published[1].name: 'a' is used twice"),
    ({"published": [{"name": "a", "weights": "hf"}]}, None, "data.sources.natural.published[0].images: missing"),
    ({"published": [{"name": "a", "images": 5, "weights": "/w/{size}.pt"}]}, None,
     "expected 'hf' or a file path whose only placeholder is {model}"),
    ({"dataset": "synthetic-natural", "options": {"size": 900},
      "published": [{"name": "a", "images": 300, "weights": "hf"}]}, None,
     "published[0].images: 300 is already a point of the data-size axis"),
    ({"published": [{"name": "imagenet21k", "images": 10, "weights": "hf"}]}, "sweep.both_from=''",
     "sweep.sources has 'both', which pre-trains on data.sources.natural's own images, but it only names "
     "published weights; set sweep.both_from"),
    ({"published": [{"name": "imagenet21k", "images": 10, "weights": "hf"}]}, "sweep.both_from=bitm",
     "sweep.both_from: got 'bitm'; expected the name of a published natural point"),
    ({}, "data.sources.natural={}", "data.sources.natural: expected a dataset, a merge of datasets or published"),
])
def test_bad_published_sources_are_named(tmp_path, natural, override, message):
    raw = config(tmp_path, **natural) if natural else config(tmp_path)
    with pytest.raises(ConfigError) as err:
        load(tmp_path, raw, *([override] if override else []))
    assert message in str(err.value)


@pytest.mark.parametrize("name, rungs", [("covidx_bit", 6), ("tb_bit", 4)])
def test_real_configs_plan_published_merged_both_and_scratch(name, rungs):
    cfg = load_config(ROOT / "studies" / "configs" / f"{name}.yaml")
    natural = cfg.data.sources["natural"]
    assert [p.name for p in natural.published] == ["imagenet1k", "imagenet21k"]  # BiT-S and BiT-M
    assert [m.dataset for m in cfg.data.sources["medical"].merge] == ["chexpert", "mimic-cxr", "nih", "padchest"]
    points = finetune_points(cfg)
    sizes = {s: sorted({p.pretrain_size for p in points if p.source == s}) for s in cfg.sweep.sources}
    assert sizes == {"scratch": [0], "natural": [1281167, 14197122], "medical": cfg.data.source_sizes,
                     "both": cfg.data.source_sizes}
    waves = pretrain_jobs(cfg)
    assert [len(w) for w in waves] == [rungs * 3, rungs * 3]  # medical, then both from BiT-M; nothing natural
    assert all(natural_stage(cfg, j).size == 14197122 for j in waves[1])
    assert cfg.finetune.recipe.micro_batch == cfg.pretrain.micro_batch == "auto"


def _bit_npz(model, path: Path, classes: int) -> Path:
    """`model`'s weights in the layout of Google's BiT release (BiT-S-R50x1.npz): HWIO kernels, TF names."""
    import numpy as np

    def hwio(w):
        return w.detach().numpy().transpose(2, 3, 1, 0) if w.ndim == 4 else w.detach().numpy()

    out = {"resnet/root_block/standardized_conv2d/kernel": hwio(model.stem.conv.weight),
           "resnet/group_norm/gamma": hwio(model.norm.weight), "resnet/group_norm/beta": hwio(model.norm.bias),
           "resnet/head/conv2d/kernel": np.zeros((1, 1, model.num_features, classes), np.float32),
           "resnet/head/conv2d/bias": np.zeros(classes, np.float32)}
    for i, stage in enumerate(model.stages):
        for j, block in enumerate(stage.blocks):
            prefix = f"resnet/block{i + 1}/unit{j + 1:02d}/"
            for part, conv, norm in (("a", block.conv1, block.norm1), ("b", block.conv2, block.norm2),
                                     ("c", block.conv3, block.norm3)):
                out[f"{prefix}{part}/standardized_conv2d/kernel"] = hwio(conv.weight)
                out[f"{prefix}{part}/group_norm/gamma"] = hwio(norm.weight)
                out[f"{prefix}{part}/group_norm/beta"] = hwio(norm.bias)
            if block.downsample is not None:
                out[f"{prefix}a/proj/standardized_conv2d/kernel"] = hwio(block.downsample.conv.weight)
    np.savez(path, **out)
    return path


def test_google_bit_npz_weights_load_with_a_new_head(tmp_path):
    torch.manual_seed(0)
    source = models.create_model("bit", "R50x1", 0)
    npz = _bit_npz(source, tmp_path / "BiT-S-R50x1.npz", classes=1000)
    model = models.create_model("bit", "R50x1", 2, pretrained=npz)
    own = model.state_dict()
    assert all(torch.equal(v, own[k]) for k, v in source.state_dict().items())
    assert not model.get_classifier().weight.any()  # 1000 ImageNet classes do not fit 2: zero-initialised
    with pytest.raises(models.ModelError, match="cannot read Google .npz checkpoint .*BiT-S-R50x1.npz"):
        models.create_model("bit", "R101x1", 2, pretrained=npz)  # fewer blocks than R101x1 needs
    with pytest.raises(models.ModelError, match="cannot read Google .npz checkpoint"):
        models.create_model("vit", "tiny", 2, pretrained=npz)  # a ViT reads Google's ViT layout, not BiT's
