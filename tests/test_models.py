"""Model ladders: sizes and FLOPs, building the small rungs, loading weights offline, heads and channels."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from scaling import models
from scaling.models import __main__ as models_cli
from scaling.models import (LADDERS, ModelError, count_params, create_model, flops_per_image, new_head, params, rung,
                            to_rgb)
from scaling.rehearse.formats import write_hub_cache


def _save(model: torch.nn.Module, path: Path) -> Path:
    torch.save(model.state_dict(), path)
    return path


def _same_tensors(a: dict, b: dict, skip: str = "\0") -> None:
    keys = [k for k in a if not k.startswith(skip)]
    assert keys and all(torch.equal(a[k], b[k]) for k in keys)


@pytest.mark.parametrize("ladder", list(LADDERS))
def test_ladders_are_ordered_by_counted_parameters(ladder):
    counts = [params(r) for r in LADDERS[ladder].rungs]  # meta device: no memory, even for R152x4
    assert all(a < b for a, b in zip(counts, counts[1:])), counts


def test_counts_match_the_published_architectures():
    assert params(rung("bit", "R50x1")) == 23_500_352  # BiT-M R50x1 backbone
    assert 0.9e9 < params(rung("bit", "R152x4")) < 0.95e9
    assert params(rung("vit", "base"), num_classes=1000) == 86_567_656  # ViT-B/16 with an ImageNet-1k head
    assert 8.0e9 < flops_per_image(rung("bit", "R50x1"), 224) < 8.4e9  # ResNet-50: ~4.1 G multiply-adds


def test_cpu_ladder_spans_enough_sizes():
    counts = [params(r) for r in LADDERS["cpu"].rungs]
    assert len(counts) >= 5
    assert counts[0] <= 30_000 and counts[-1] >= 1_000_000
    assert math.log10(counts[-1] / counts[0]) >= 1.5


def test_flops_are_positive_and_grow_with_resolution_and_size():
    for r in LADDERS["cpu"].rungs:
        per_res = [flops_per_image(r, res) for res in (32, 48, 64)]
        assert 0 < per_res[0] < per_res[1] < per_res[2]
    at_48 = [flops_per_image(r, 48) for r in LADDERS["cpu"].rungs]
    assert all(a < b for a, b in zip(at_48, at_48[1:]))
    tiny = rung("vit", "tiny")
    assert 0 < flops_per_image(tiny, 112) < flops_per_image(tiny, 224)


def test_names_are_validated_with_the_valid_ones_listed():
    with pytest.raises(ModelError, match=r"unknown model 'w9' in ladder 'cpu'; valid names: w4, w6, w8"):
        rung("cpu", "w9")
    with pytest.raises(ModelError, match=r"valid ladders: bit, vit, cpu"):
        create_model("resnet", "R50x1", 2)
    with pytest.raises(ModelError, match="multiple of 16"):
        create_model("vit", "tiny", 2, img_size=50)


def test_smallest_bit_and_vit_build_and_run():
    x = torch.randn(2, 3, 64, 64)
    bit = create_model("bit", "R50x1", 3)
    vit = create_model("vit", "tiny", 3, img_size=64)
    assert count_params(bit) == params(rung("bit", "R50x1"), num_classes=3)
    # ViT-Ti at 64 px: 4x4 instead of 14x14 position embeddings (of width 192) than the 224 px count
    assert count_params(vit) == params(rung("vit", "tiny"), num_classes=3) - (14 * 14 - 4 * 4) * 192
    with torch.no_grad():
        assert bit.eval()(x).shape == vit.eval()(x).shape == (2, 3)


def test_cpu_rung_trains_on_replicated_grayscale():
    torch.manual_seed(0)
    model = create_model("cpu", "w8", 2)
    gray = torch.rand(4, 1, 48, 48)
    rgb = to_rgb(gray)
    assert rgb.shape == (4, 3, 48, 48) and rgb.data_ptr() == gray.data_ptr()  # a view, not a copy
    loss = torch.nn.functional.cross_entropy(model(rgb), torch.tensor([0, 1, 0, 1]))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(ModelError, match=r"\(N, 1 or 3, H, W\)"):
        to_rgb(torch.rand(4, 2, 48, 48))


def test_single_channel_models_load_rgb_weights_only_where_exact(tmp_path):
    """Summing a plain stem's RGB kernels (ViT) computes what replicated gray input does; a weight-standardised
    stem (BiT) standardises after the sum and would compute something else, so it is refused."""
    torch.manual_seed(0)
    x = torch.rand(3, 1, 64, 64)
    rgb_vit = create_model("vit", "tiny", 2, img_size=64).eval()
    new_head(rgb_vit, 2, zero_init=False)
    gray_vit = create_model("vit", "tiny", 2, img_size=64, in_chans=1,
                            pretrained=_save(rgb_vit, tmp_path / "vit.pt")).eval()
    with torch.no_grad():
        torch.testing.assert_close(gray_vit(x), rgb_vit(to_rgb(x)), rtol=1e-4, atol=1e-5)

    rgb_bit = create_model("bit", "R50x1", 2)
    with pytest.raises(ModelError, match="weight-standardised stem.*in_chans=3 and replicate"):
        create_model("bit", "R50x1", 2, in_chans=1, pretrained=_save(rgb_bit, tmp_path / "r50.pt"))


@pytest.mark.parametrize("fmt", ["pt", "safetensors"])
def test_weights_load_from_a_local_file(tmp_path, fmt):
    torch.manual_seed(0)
    source = create_model("cpu", "w16", 5)
    path = tmp_path / f"w16.{fmt}"
    if fmt == "pt":
        torch.save({"state_dict": source.state_dict()}, path)  # wrapped, as training checkpoints often are
    else:
        save_file(source.state_dict(), path)
    same_task = create_model("cpu", "w16", 5, pretrained=path)
    _same_tensors(source.state_dict(), same_task.state_dict())

    new_task = create_model("cpu", "w16", 2, pretrained=path)
    _same_tensors(source.state_dict(), new_task.state_dict(), skip="head.")
    head = new_task.get_classifier()
    assert head.out_channels == 2 and not head.weight.any() and not head.bias.any()  # BiT: zero-initialised head


def test_vit_weights_follow_a_new_resolution(tmp_path):
    torch.manual_seed(0)
    source = create_model("vit", "tiny", 0)  # built for 224 px
    model = create_model("vit", "tiny", 2, img_size=64, pretrained=_save(source, tmp_path / "vit.pt"))
    assert model.pos_embed.shape == (1, 1 + 4 * 4, 192)  # resampled from 14x14 patches to 4x4
    _same_tensors(source.state_dict(), model.state_dict(), skip="pos_embed")


def test_mismatched_checkpoints_are_refused(tmp_path):
    torch.manual_seed(0)
    w16 = _save(create_model("cpu", "w16", 2), tmp_path / "w16.pt")
    with pytest.raises(ModelError, match=r"w16.pt does not fit ResNetV2 .*another shape, checkpoint vs model"):
        create_model("cpu", "w8", 2, pretrained=w16)
    state = create_model("cpu", "w8", 2).state_dict()
    del state["stages.2.blocks.0.conv2.weight"]
    torch.save(state | {"extra.weight": torch.zeros(1)}, tmp_path / "partial.pt")
    with pytest.raises(ModelError, match=r"1 missing \(e.g. stages.2.blocks.0.conv2.weight\); 1 unexpected"):
        create_model("cpu", "w8", 2, pretrained=tmp_path / "partial.pt")

    torch.save([1, 2, 3], tmp_path / "list.pt")
    with pytest.raises(ModelError, match="holds no state_dict"):
        create_model("cpu", "w8", 2, pretrained=tmp_path / "list.pt")
    torch.save({"w": torch.nn.Linear(2, 2)}, tmp_path / "pickled.pt")  # a module needs full unpickling
    with pytest.raises(ModelError, match="cannot read checkpoint .*pickled.pt"):
        create_model("cpu", "w8", 2, pretrained=tmp_path / "pickled.pt")
    with pytest.raises(ModelError, match="does not exist"):
        create_model("cpu", "w8", 2, pretrained=tmp_path / "absent.pt")


def test_published_weights_load_from_the_hf_cache_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tiny = rung("vit", "tiny")
    assert tiny.hub_id == "timm/vit_tiny_patch16_224.augreg_in21k"
    with pytest.raises(ModelError, match=r"not in the Hugging Face cache .*python -m scaling.models download vit"):
        create_model("vit", "tiny", 2, pretrained="hf", hf_cache=tmp_path)
    torch.manual_seed(0)
    source = create_model("vit", "tiny", 0)
    write_hub_cache(tmp_path, tiny.hub_id, source.state_dict())
    model = create_model("vit", "tiny", 2, pretrained="hf", hf_cache=tmp_path)
    _same_tensors(source.state_dict(), model.state_dict(), skip="head.")
    assert not model.get_classifier().weight.any()
    with pytest.raises(ModelError, match="no published weights"):
        create_model("cpu", "w8", 2, pretrained="hf", hf_cache=tmp_path)


def test_new_head_replaces_and_zeroes_the_classifier():
    torch.manual_seed(0)
    model = create_model("cpu", "w8", 10)
    new_head(model, 3)
    assert model.num_classes == 3
    with torch.no_grad():
        assert torch.equal(model(torch.rand(2, 3, 48, 48)), torch.zeros(2, 3))
    assert new_head(model, 4, zero_init=False).get_classifier().weight.abs().sum() > 0


def test_list_command_prints_the_ladder(capsys):
    models_cli.main(["list", "cpu", "--resolution", "48"])
    out = capsys.readouterr().out
    assert all(r.name in out for r in LADDERS["cpu"].rungs) and "GFLOPs@48" in out
    with pytest.raises(ModelError, match="no published weights"):
        models.download("cpu")  # refused before any network access
