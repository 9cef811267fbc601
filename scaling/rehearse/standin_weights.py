"""Stand-in published weights in the real layouts, with the real parameter names and shapes and random values:
timm's release in the Hugging Face cache layout (`models--timm--<arch>.<tag>/snapshots/<rev>/model.safetensors`,
timm's own state-dict names, the 21,843-class ImageNet-21k head of BiT-M) and Google's BiT `.npz` (its
`resnet/blockN/unitMM/...` names, HWIO kernels, a 1,000-class head for BiT-S). The values come from timm's own
initialisation of the rung, so the real loaders (scaling.models.weights) read them as they read the real files.

Rungs too large to write (BiT's R152x4 holds 936M parameters, 3.7 GB) are checked instead on the meta device:
the names and shapes each layout would hold, loaded into a meta model by the same code (`meta_check`)."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from scaling.models import ladders
from scaling.models.weights import _load_into
from scaling.rehearse.formats import write_hub_cache

#: classes of the heads of the published releases: BiT-M (ImageNet-21k) and BiT-S (ImageNet-1k)
HUB_CLASSES, NPZ_CLASSES = 21843, 1000
#: rungs above this many parameters are checked on the meta device rather than written
WRITE_LIMIT = 50_000_000


def google_names(model: torch.nn.Module, prefix: str = "resnet/") -> dict[str, str]:
    """Google's `.npz` name -> the timm parameter it fills, for a BiT ResNet-v2 (the inverse of timm's
    resnetv2 `_load_weights`)."""
    names = {f"{prefix}root_block/standardized_conv2d/kernel": "stem.conv.weight",
             f"{prefix}group_norm/gamma": "norm.weight", f"{prefix}group_norm/beta": "norm.bias",
             f"{prefix}head/conv2d/kernel": "head.fc.weight", f"{prefix}head/conv2d/bias": "head.fc.bias"}
    for i, (sname, stage) in enumerate(model.stages.named_children()):
        for j, (bname, block) in enumerate(stage.blocks.named_children()):
            unit, here = f"{prefix}block{i + 1}/unit{j + 1:02d}/", f"stages.{sname}.blocks.{bname}."
            for k, part in enumerate("abc", start=1):
                names[f"{unit}{part}/standardized_conv2d/kernel"] = f"{here}conv{k}.weight"
                names[f"{unit}{part}/group_norm/gamma"] = f"{here}norm{k}.weight"
                names[f"{unit}{part}/group_norm/beta"] = f"{here}norm{k}.bias"
            if block.downsample is not None:
                names[f"{unit}a/proj/standardized_conv2d/kernel"] = f"{here}downsample.conv.weight"
    return names


def npz_arrays(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """The model's parameters under Google's names, kernels as HWIO (TensorFlow's layout)."""
    state = model.state_dict()
    arrays = {}
    for name, param in google_names(model).items():
        value = state[param].numpy()
        arrays[name] = value.transpose(2, 3, 1, 0) if value.ndim == 4 else value
    return arrays


def write_npz(path: Path, ladder: str, model: str) -> Path:
    """A stand-in BiT-S `.npz` of rung `model`: random values, real names and shapes, a 1,000-class head."""
    net = ladders.build(ladders.rung(ladder, model), NPZ_CLASSES, 3, None)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **npz_arrays(net))
    return path


def write_hub(cache: Path, ladder: str, model: str, tag: str | None = None) -> Path:
    """A stand-in of timm's release of rung `model` (pretrained tag `tag`, default the rung's) in the Hugging Face
    cache layout under `cache`."""
    r = ladders.rung(ladder, model)
    net = ladders.build(r, HUB_CLASSES, 3, None)
    return write_hub_cache(cache, r.hub_repo(tag), {k: v.contiguous() for k, v in net.state_dict().items()})


def meta_check(ladder: str, model: str) -> dict[str, int]:
    """Both layouts of rung `model` as names and shapes on the meta device, loaded into a meta model of the rung
    (timm's `.npz` converter's names, and the Hugging Face state dict through `_load_into`, the code a study
    loads weights with); returns how many tensors each holds. Raises what a loader raises on a mismatch."""
    r = ladders.rung(ladder, model)
    with torch.device("meta"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "for .*: copying from a non-meta parameter", UserWarning)
        source = ladders.build(r, HUB_CLASSES, 3, None)
        hub = dict(source.state_dict())
        _load_into(ladders.build(r, 1, 3, None), hub, f"stand-in {r.hub_repo()}")
        target = ladders.build(r, NPZ_CLASSES, 3, None)
        names = google_names(target)
        own = target.state_dict()
        unfilled = sorted(k for k in own if k not in set(names.values()) and "num_batches" not in k)
        if unfilled:
            raise ValueError(f"BiT .npz names leave {ladder}/{model} parameters unfilled: {unfilled[:3]}")
    return {"hub_tensors": len(hub), "npz_arrays": len(names)}
