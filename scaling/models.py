"""Model ladders: timm architectures ordered by size, their parameter and FLOP counts, and weight loading.

Ladders (smallest rung first, parameters strictly increasing):
  - ``bit``: BiT ResNet-v2 R50x1 .. R152x4, the reference study's family, ImageNet-21k weights (timm ``goog_in21k``).
  - ``vit``: ViT-Ti/S/B/L with 16 px patches, ImageNet-21k weights (timm ``augreg_in21k``).
  - ``cpu``: miniature ResNet-v2s for the embedded default on 2 CPU cores at 32-64 px (~7k to ~1.2M parameters).
    BiT's timm class, pre-activation blocks and stem, with basic blocks, one block per stage, three stages and the
    width as the only knob -- but BatchNorm and plain convolutions instead of BiT's GroupNorm and weight
    standardisation: at these sizes, pre-trained on the synthetic medical source, BatchNorm rungs transferred to
    the COVIDx-like target and GroupNorm ones did not (no gain over scratch in a 4-seed calibration).

Grayscale X-rays: every model takes 3 channels and grayscale batches are replicated (``to_rgb``, a view), rather
than building ``in_chans=1`` models. Replication keeps every checkpoint interchangeable: ImageNet-21k weights, a
model pre-trained on the colour natural source and one pre-trained on the gray medical source all fit the same
model unchanged. And it is exact: timm's ``in_chans=1`` sums the three stem kernels, which reproduces the RGB
model on replicated input only for a plain convolution; BiT's weight-standardised stem standardises after the
sum, so the summed model computes something else (see tests). The price is the stem's
input channels: +2% FLOPs for R50x1 at 224 px, +12% for cpu w64 and +70% for cpu w8 at 48 px (whose stem
dominates). ``in_chans=1`` remains for training from scratch; 3-channel weights load into it only where summing
is exact (plain convolutions and ViT's patch embedding).

Weights load offline only: from a local file (a state_dict, or Google's ``.npz`` of BiT or ViT), or from the Hugging Face
cache that ``python -m scaling.models download LADDER`` (or ``download --config STUDY.yaml``, exactly what a study
names) fills on a machine with internet (compute nodes have none).

Activation checkpointing (``Recipe.grad_checkpointing``) is timm's ``set_grad_checkpointing()``, which every
ladder's architecture implements.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import timm
import torch
from timm.layers import BatchNormAct2d, ScaledStdConv2d, ScaledStdConv2dSame, StdConv2d, StdConv2dSame, create_conv2d
from timm.models import adapt_input_conv, get_pretrained_cfg
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

#: convolutions that standardise their weights in the forward pass, so summing input channels is not exact
_STANDARDISED_CONVS = (StdConv2d, StdConv2dSame, ScaledStdConv2d, ScaledStdConv2dSame)
#: files a timm repository on the Hugging Face hub holds its weights in, preferred first
HUB_FILES = ("model.safetensors", "pytorch_model.bin")


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


def _check_img_size(r: Rung, img_size: int | None) -> None:
    if r.patch is not None and img_size is not None and (img_size <= 0 or img_size % r.patch):
        raise ModelError(f"{r.ladder}/{r.name} needs an input size that is a positive multiple of {r.patch} px, "
                         f"got {img_size}")


def _build(r: Rung, num_classes: int, in_chans: int, img_size: int | None) -> nn.Module:
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
        return count_params(_build(r, num_classes, 3, None))


@lru_cache(maxsize=None)
def flops_per_image(r: Rung, resolution: int) -> int:
    """Forward FLOPs of the backbone of `r` for one 3-channel `resolution`² image, as torch's FlopCounterMode counts
    them (a multiply-add is 2 FLOPs; convolutions, matrix products and attention only). Counted on the meta
    device and cached."""
    _check_img_size(r, resolution)
    counter = FlopCounterMode(display=False)
    with torch.device("meta"):
        model = _build(r, 0, 3, resolution)
        with counter, torch.no_grad():
            model(torch.empty(1, 3, resolution, resolution))
    return counter.get_total_flops()


def to_rgb(images: torch.Tensor) -> torch.Tensor:
    """Grayscale batches (N, 1, H, W) as 3 replicated channels, without a copy; (N, 3, H, W) unchanged.
    Replicate after moving to the device so the host sends one channel."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ModelError(f"expected images of shape (N, 1 or 3, H, W), got {tuple(images.shape)}")
    return images.expand(-1, 3, -1, -1)


def new_head(model: nn.Module, num_classes: int, zero_init: bool = True) -> nn.Module:
    """Replace the classifier of a timm `model` by one for `num_classes`, zero-initialised as BiT does (the
    fine-tuning then starts from uniform predictions). Placed on the device and dtype of the model; returns it."""
    model.reset_classifier(num_classes)
    head = model.get_classifier()
    if num_classes and zero_init:
        nn.init.zeros_(head.weight)
        nn.init.zeros_(head.bias)
    anchor = next(model.parameters())
    head.to(device=anchor.device, dtype=anchor.dtype)
    return model


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file: ``.safetensors``, or a torch file read with ``weights_only=True`` holding a
    state_dict (bare, or under the key "state_dict" or "model")."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"checkpoint {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(path)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch and safetensors raise many types for unreadable files
        raise ModelError(f"cannot read checkpoint {path}: {e}") from e
    if isinstance(state, dict):
        state = state.get("state_dict", state.get("model", state))
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"checkpoint {path} holds no state_dict (a mapping of names to tensors)")
    return state


def hub_file(r: Rung, cache_dir: str | Path | None = None, tag: str | None = None,
             command: str | None = None) -> Path:
    """The cached weight file of rung `r` (timm tag `tag`, default `hub_tag`) in the Hugging Face cache
    (default: HF_HUB_CACHE / HF_HOME), without any network access. `command` is the download command the
    error message names (default: the ladder's)."""
    from huggingface_hub import constants, try_to_load_from_cache

    repo = r.hub_repo(tag)
    if repo is None:
        raise ModelError(f"{r.ladder}/{r.name} has no published weights; pass a checkpoint file instead")
    for filename in HUB_FILES:
        found = try_to_load_from_cache(repo, filename, cache_dir=cache_dir)
        if isinstance(found, str):
            return Path(found)
    command = command or f"python -m scaling.models download {r.ladder}"
    raise ModelError(f"weights of {r.ladder}/{r.name} (Hugging Face repository {repo}) are not in the Hugging Face "
                     f"cache {cache_dir or constants.HF_HUB_CACHE}; run `{command}` on a machine with internet "
                     f"and share that cache (HF_HOME) with the compute nodes")


def _load_into(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load `state` into `model`. The classifier is taken only when it fits; otherwise it is zero-initialised
    (fine-tuning on another task). Every other tensor must match by name and shape."""
    module = sys.modules[type(model).__module__]
    if hasattr(module, "checkpoint_filter_fn"):  # timm's per-family fix-ups, e.g. ViT position-embedding resampling
        state = module.checkpoint_filter_fn(state, model)
    own = model.state_dict()
    cfg = model.pretrained_cfg
    stem = cfg["first_conv"] + ".weight"
    if stem in state and stem in own and state[stem].ndim == 4 and state[stem].shape[1] != own[stem].shape[1]:
        if isinstance(model.get_submodule(cfg["first_conv"]), _STANDARDISED_CONVS):
            raise ModelError(f"checkpoint {source} has a {state[stem].shape[1]}-channel weight-standardised stem; "
                             f"folding it into {own[stem].shape[1]} channels would change what it computes: build "
                             "the model with in_chans=3 and replicate gray images (scaling.models.to_rgb)")
        state[stem] = adapt_input_conv(own[stem].shape[1], state[stem])
    head = cfg["classifier"] + "."
    own_head = {k for k in own if k.startswith(head)}
    ckpt_head = {k for k in state if k.startswith(head)}
    if not own_head or ckpt_head != own_head or any(state[k].shape != own[k].shape for k in own_head):
        new_head(model, model.num_classes)
        own = model.state_dict()
        state = {k: v for k, v in state.items() if k not in ckpt_head} | {k: own[k] for k in own_head}
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
             for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        problems = [f"{len(lst)} {what} (e.g. {', '.join(lst[:3])})"
                    for what, lst in (("missing", missing), ("unexpected", unexpected),
                                      ("with another shape, checkpoint vs model", wrong)) if lst]
        raise ModelError(f"checkpoint {source} does not fit {type(model).__name__} "
                         f"({count_params(model)} parameters): tensors " + "; ".join(problems))
    model.load_state_dict(state)


def create_model(ladder: str, name: str, num_classes: int, *, in_chans: int = 3, pretrained: str | Path | None = None,
                 img_size: int | None = None, hf_cache: str | Path | None = None) -> nn.Module:
    """Build rung `name` of `ladder` with a `num_classes` classifier.

    pretrained: None (random init), a checkpoint file (see `read_state_dict`), or "hf" for the published
      ImageNet-21k weights from the local Hugging Face cache `hf_cache` (never the network).
    img_size: the input resolution; ViT rungs are built for it (default 224), CNN rungs take any size.
    The classifier is loaded only when the checkpoint's fits `num_classes`; otherwise it starts at zero (BiT)."""
    r = rung(ladder, name)
    _check_img_size(r, img_size)
    if pretrained is None:
        return _build(r, num_classes, in_chans, img_size)
    source = hub_file(r, hf_cache) if str(pretrained) == "hf" else Path(pretrained)
    model = _build(r, num_classes, in_chans, img_size)
    if source.suffix == ".npz":  # Google's releases (BiT-S, BiT-M, ViT augreg), read by timm's own converters
        _load_google_npz(model, source)
        return model
    _load_into(model, read_state_dict(source), str(source))
    return model


def check_weights(ladder: str, name: str, path: str | Path) -> None:
    """ModelError unless weights file `path` loads into rung `name` the way a training job loads it (`create_model`,
    whose message names the tensors that do not fit). Built on the meta device: no memory for parameters, so the
    driver checks even BiT's largest rungs in a second, before Ray starts, and a file of another rung or ladder
    never fails deep inside a worker."""
    import warnings

    with torch.device("meta"), warnings.catch_warnings():
        # loading real tensors into meta parameters is the no-op wanted here; torch warns about each one
        warnings.filterwarnings("ignore", "for .*: copying from a non-meta parameter", UserWarning)
        create_model(ladder, name, num_classes=1, pretrained=path)


def _load_google_npz(model: nn.Module, path: Path) -> None:
    """Weights of Google's `.npz` files (e.g. BiT-S-R50x1.npz, which timm does not publish) via the model's timm
    `load_pretrained`; the head is taken only when it fits, else zero-initialised."""
    if not path.is_file():
        raise ModelError(f"checkpoint {path} does not exist")
    if not hasattr(model, "load_pretrained"):
        raise ModelError(f"checkpoint {path}: .npz files hold Google's BiT or ViT weights; "
                         f"{type(model).__name__} cannot read them")
    head = model.get_classifier()
    fits = getattr(head, "out_channels", None)
    try:
        with np.load(path) as npz:
            classes = npz["resnet/head/conv2d/kernel"].shape[-1] if "resnet/head/conv2d/kernel" in npz else None
        model.load_pretrained(str(path))
    except Exception as e:  # numpy and timm's converter raise many types for a file of another layout
        raise ModelError(f"cannot read Google .npz checkpoint {path}: {e}") from e
    if classes != fits:
        new_head(model, model.num_classes)


def fetch_hub(repo: str, cache_dir: str | Path | None = None) -> Path:
    """Download the weight file of one Hugging Face repository into the cache (needs internet)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import RemoteEntryNotFoundError

    for filename in HUB_FILES:
        try:
            return Path(hf_hub_download(repo, filename, cache_dir=cache_dir))
        except RemoteEntryNotFoundError:
            continue
    raise ModelError(f"{repo} holds none of {', '.join(HUB_FILES)}")


def download(ladder: str, cache_dir: str | Path | None = None) -> list[Path]:
    """Fetch the published weights of every rung of `ladder` into the Hugging Face cache (needs internet)."""
    if ladder not in LADDERS:
        raise ModelError(f"unknown model ladder {ladder!r}; valid ladders: {', '.join(LADDERS)}")
    paths = []
    for r in LADDERS[ladder].rungs:
        if r.hub_id is None:
            raise ModelError(f"ladder {ladder!r} has no published weights (it is trained from scratch or from "
                             "checkpoints of this platform)")
        paths.append(fetch_hub(r.hub_id, cache_dir))
        print(f"{r.ladder}/{r.name}: {paths[-1]}", flush=True)
    return paths


def main(argv: list[str] | None = None) -> None:
    """``python -m scaling.models list [LADDER] [--resolution R]`` or ``... download LADDER [--cache-dir DIR]``."""
    parser = argparse.ArgumentParser(prog="python -m scaling.models", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    show = sub.add_parser("list", help="rungs with parameters and forward FLOPs per image")
    show.add_argument("ladder", nargs="?", choices=list(LADDERS))
    show.add_argument("--resolution", type=int, default=224)
    fetch = sub.add_parser("download", help="pre-download published weights (login node): a ladder's, or exactly "
                                            "those a study config names (--config)")
    fetch.add_argument("ladder", nargs="?", choices=list(LADDERS))
    fetch.add_argument("--config", help="a study config: fetch the published weights of its sources and rungs")
    fetch.add_argument("--cache-dir", default=None, help="Hugging Face cache (default: HF_HUB_CACHE / HF_HOME)")
    args = parser.parse_args(argv)
    if args.command == "download":
        if (args.ladder is None) == (args.config is None):
            parser.error("download: give a LADDER or --config, not both")
        from scaling import published
        from scaling.config import load_config

        try:
            if args.config:
                published.download(load_config(args.config), args.cache_dir)
            else:
                download(args.ladder, args.cache_dir)
        except ValueError as e:  # ModelError, ConfigError (under `python -m`, this module's classes are __main__'s)
            parser.exit(2, f"error: {e}\n")
        return
    print(f"{'ladder':8} {'rung':8} {'params':>14} {'GFLOPs@' + str(args.resolution):>14}  weights")
    for ladder in [args.ladder] if args.ladder else list(LADDERS):
        for r in LADDERS[ladder].rungs:
            flops = flops_per_image(r, args.resolution) / 1e9
            print(f"{ladder:8} {r.name:8} {params(r):>14,} {flops:>14.4f}  {r.hub_id or '-'}")


if __name__ == "__main__":
    main()
