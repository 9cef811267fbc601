"""Model ladders: timm architectures ordered by size, and their parameter and FLOP counts.

Ladders (smallest rung first, parameters strictly increasing):
  - ``bit``: BiT ResNet-v2 R50x1 .. R152x4, the reference study's family, ImageNet-21k weights (timm ``goog_in21k``).
  - ``vit``: ViT-Ti/S/B/L with 16 px patches, ImageNet-21k weights (timm ``augreg_in21k``).
  - ``cpu``: miniature ResNet-v2s for the embedded default on 2 CPU cores at 32-64 px (~7k to ~1.2M parameters).
    BiT's timm class, pre-activation blocks and stem, with basic blocks, one block per stage, three stages and the
    width as the only knob -- but BatchNorm and plain convolutions instead of BiT's GroupNorm and weight
    standardisation: at these sizes, pre-trained on the synthetic medical source, BatchNorm rungs transferred to
    the COVIDx-like target and GroupNorm ones did not (no gain over scratch in a 4-seed calibration).

Activation checkpointing (``Recipe.grad_checkpointing``) is timm's ``set_grad_checkpointing()``, which every
ladder's architecture implements.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Mapping

import timm
import torch
from timm.layers import BatchNormAct2d, create_conv2d
from timm.models import get_pretrained_cfg
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


class ModelError(ValueError):
    """Unknown ladder or rung, unusable input size, or weights that are missing or do not fit the model."""


@dataclass(frozen=True)
class Rung:
    """One model size: built as ``timm.create_model(arch, **kwargs)``."""

    ladder: str
    name: str
    arch: str
    kwargs: Mapping[str, Any] = field(default_factory=dict, compare=False)
    #: timm pretrained tag of the published ImageNet-21k weights; None: only our own checkpoints
    hub_tag: str | None = None
    #: ViTs are built for one input size, which must be a multiple of the patch; None: any size
    patch: int | None = None

    @property
    def hub_id(self) -> str | None:
        """The Hugging Face repository of the published weights, e.g. ``timm/resnetv2_50x1_bit.goog_in21k``."""
        return self.hub_repo()

    def hub_repo(self, tag: str | None = None) -> str | None:
        """The Hugging Face repository of timm's weights under pretrained `tag` (default: `hub_tag`)."""
        tag = tag or self.hub_tag
        if tag is None:
            return None
        cfg = get_pretrained_cfg(f"{self.arch}.{tag}")
        if cfg is None:
            raise ModelError(f"timm has no weights {self.arch}.{tag} for {self.ladder}/{self.name}; its tags: "
                             f"{', '.join(published_tags(self)) or '(none)'}")
        return cfg.hf_hub_id


@dataclass(frozen=True)
class Ladder:
    name: str
    rungs: tuple[Rung, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self.rungs)


def _bit(arch: str) -> Rung:
    return Rung("bit", "R" + arch.split("_")[1], arch, hub_tag="goog_in21k")  # resnetv2_50x1_bit -> R50x1


def _vit(size: str) -> Rung:
    return Rung("vit", size, f"vit_{size}_patch16_224", hub_tag="augreg_in21k", patch=16)


# BiT's architecture (resnetv2) at small widths, with timm's BatchNorm pre-activation layers (as resnetv2_50)
_MINI_RESNETV2 = dict(layers=[1, 1, 1], stem_type="fixed", conv_layer=create_conv2d, norm_layer=BatchNormAct2d)


def _mini(width: int) -> Rung:
    return Rung("cpu", f"w{width}", "resnetv2_18",
                dict(_MINI_RESNETV2, channels=(width, 2 * width, 4 * width), stem_chs=width))


LADDERS: dict[str, Ladder] = {
    "bit": Ladder("bit", tuple(_bit(f"resnetv2_{d}_bit") for d in
                               ("50x1", "101x1", "50x3", "152x2", "101x3", "152x4"))),
    "vit": Ladder("vit", tuple(_vit(s) for s in ("tiny", "small", "base", "large"))),
    "cpu": Ladder("cpu", tuple(_mini(w) for w in (4, 6, 8, 12, 16, 24, 32, 48, 64))),
}


def published_tags(r: Rung) -> list[str]:
    """timm's pretrained tags for the architecture of `r` (e.g. goog_in21k, goog_in21k_ft_in1k)."""
    return [name.split(".", 1)[1] for name in timm.list_pretrained(f"{r.arch}.*")] if r.hub_tag else []


def rung(ladder: str, name: str) -> Rung:
    """The rung `name` of `ladder`; ModelError listing the valid names otherwise."""
    if ladder not in LADDERS:
        raise ModelError(f"unknown model ladder {ladder!r}; valid ladders: {', '.join(LADDERS)}")
    for r in LADDERS[ladder].rungs:
        if r.name == name:
            return r
    raise ModelError(f"unknown model {name!r} in ladder {ladder!r}; valid names: {', '.join(LADDERS[ladder].names)}")


def check_img_size(r: Rung, img_size: int | None) -> None:
    if r.patch is not None and img_size is not None and (img_size <= 0 or img_size % r.patch):
        raise ModelError(f"{r.ladder}/{r.name} needs an input size that is a positive multiple of {r.patch} px, "
                         f"got {img_size}")


def build(r: Rung, num_classes: int, in_chans: int, img_size: int | None) -> nn.Module:
    kwargs = dict(r.kwargs, num_classes=num_classes, in_chans=in_chans)
    if r.patch is not None and img_size is not None:
        kwargs["img_size"] = img_size
    return timm.create_model(r.arch, pretrained=False, **kwargs)


def count_params(model: nn.Module) -> int:
    """Number of parameters (trainable or not) of `model`."""
    return sum(p.numel() for p in model.parameters())


@lru_cache(maxsize=None)
def params(r: Rung, num_classes: int = 0) -> int:
    """Parameters of rung `r` with a `num_classes` head; 0 (the default) counts the backbone alone, the N of the
    scaling laws, which then does not change with the task. ViTs are counted at 224 px (their position
    embeddings grow with the resolution). Counted on the meta device (no memory, ~1 s for R152x4) and cached."""
    with torch.device("meta"):
        return count_params(build(r, num_classes, 3, None))


@lru_cache(maxsize=None)
def flops_per_image(r: Rung, resolution: int) -> int:
    """Forward FLOPs of the backbone of `r` for one 3-channel `resolution`² image, as torch's FlopCounterMode counts
    them (a multiply-add is 2 FLOPs; convolutions, matrix products and attention only). Counted on the meta
    device and cached."""
    check_img_size(r, resolution)
    counter = FlopCounterMode(display=False)
    with torch.device("meta"):
        model = build(r, 0, 3, resolution)
        with counter, torch.no_grad():
            model(torch.empty(1, 3, resolution, resolution))
    return counter.get_total_flops()
