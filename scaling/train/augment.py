"""What a model sees of a stored image: a crop (random and maybe flipped in training, central otherwise), in three
channels normalised to [-1, 1] as BiT. The loop's evaluations and the saliency maps feed models the same way."""
from __future__ import annotations

import torch

from scaling.models import to_rgb

#: BiT trains on random 480 crops of 512 images: the same ratio at every resolution
CROP_FRACTION = 480 / 512


def crop_size(side: int) -> int:
    """Side of the crop of a `side` x `side` image: the model's input size."""
    return max(1, round(side * CROP_FRACTION))


def prepare_images(images: torch.Tensor, device, *, train: bool, rng: torch.Generator | None,
                   on_gpu: bool) -> torch.Tensor:
    """Crop (random when training, centre otherwise), flip when training, normalise to [-1, 1] as BiT."""
    side = images.shape[-1]
    crop = crop_size(side)
    if train:
        offsets = torch.randint(0, side - crop + 1, (2,), generator=rng).tolist()
        images = images[..., offsets[0]:offsets[0] + crop, offsets[1]:offsets[1] + crop]
        if torch.rand((), generator=rng) < 0.5:
            images = images.flip(-1)
    else:
        o = (side - crop) // 2
        images = images[..., o:o + crop, o:o + crop]
    images = to_rgb(images.to(device, non_blocking=True)).sub(0.5).div(0.5)
    return images.contiguous(memory_format=torch.channels_last) if on_gpu else images
