"""Building a rung with weights: random, a checkpoint file, Google's ``.npz`` releases or timm's published weights
from the local Hugging Face cache; and fetching published weights on a machine with internet.

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
"""
from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from timm.layers import ScaledStdConv2d, ScaledStdConv2dSame, StdConv2d, StdConv2dSame
from timm.models import adapt_input_conv
from torch import nn

from scaling.models.ladders import LADDERS, ModelError, Rung, build, check_img_size, count_params, rung

#: convolutions that standardise their weights in the forward pass, so summing input channels is not exact
_STANDARDISED_CONVS = (StdConv2d, StdConv2dSame, ScaledStdConv2d, ScaledStdConv2dSame)
#: files a timm repository on the Hugging Face hub holds its weights in, preferred first
HUB_FILES = ("model.safetensors", "pytorch_model.bin")


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
    check_img_size(r, img_size)
    if pretrained is None:
        return build(r, num_classes, in_chans, img_size)
    source = hub_file(r, hf_cache) if str(pretrained) == "hf" else Path(pretrained)
    model = build(r, num_classes, in_chans, img_size)
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
