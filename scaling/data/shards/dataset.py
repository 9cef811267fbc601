"""The torch side of the shard cache: stored pixels as float tensors, and `ShardDataset`, the map-style
dataset that training and evaluation read. torch is imported where a batch is converted, so that building and
reading shards (the data stage, `python -m scaling.data`) stays torch-free."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from scaling.data.shards.read import ShardReader, ShardSet


def pixels_to_tensor(pixels: np.ndarray, channels: int | None = None):
    """A batch of stored pixels, (B, H, W) or (B, H, W, 3) in uint8/uint16, as a float32 (B, C, H, W)
    tensor in [0, 1]; `channels=3` replicates grayscale."""
    import torch

    images = np.divide(pixels, np.float32(np.iinfo(pixels.dtype).max), dtype=np.float32)
    images = images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)
    tensor = torch.from_numpy(np.ascontiguousarray(images))
    if channels == 3 and tensor.shape[1] == 1:
        tensor = tensor.expand(-1, 3, -1, -1).contiguous()
    return tensor


class ShardDataset:
    """Map-style torch dataset over (a subset of) a shard set: item i is (image, label[, row id]).

    image: float32 tensor CxHxW in [0, 1] (C = the shard set's channels, or 3 with `channels=3`, which
    replicates grayscale), passed through `transform` when given. label: float32 scalar (binary, for
    BCE-with-logits), int64 scalar (multiclass) or float32 vector with NaN for unknown (multilabel).

    Why map-style: the training loop needs weighted sampling (class-balanced oversampling) and per-epoch
    shuffling, which samplers give a map-style dataset for free. Across DDP ranks use a
    `torch.utils.data.DistributedSampler` (equal-length ranks for training; it pads by repeating a few
    items) or, to see every item exactly once (evaluation), `partition(rank, world_size)`. Across DataLoader
    workers nothing is needed: the loader hands each batch of indices to one worker.

    Memory: when the selected images' stored bytes fit in `memory_bytes`, they are read into memory once,
    here in the constructing process; forked loader workers share those pages (spawned ones get a copy).
    Larger selections are read batch by batch (`ShardReader.take`: each batch reads only the row groups of
    its own images, about one image each at 256 px and up, so a random batch reads about the bytes it uses).
    Both paths give the same pixels. Encoded shards (PNG, JPEG, WebP) are decoded in the loader workers. Items
    are converted a batch at a time (`__getitems__`), so in-memory raw shards are fastest with
    `num_workers=0`: loader workers then add only inter-process transfer (see benchmarks/bench_shards.py);
    encoded or lazily read shards want loader workers (benchmarks/bench_loader.py).
    """

    def __init__(self, shards: ShardSet, indices: Sequence[int] | None = None, *, channels: int | None = None,
                 transform: Callable | None = None, return_index: bool = False, memory_bytes: int = 2 << 30):
        self.shards = shards
        self.indices = np.arange(len(shards), dtype=np.int64) if indices is None \
            else np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(self.indices) and (self.indices.min() < 0 or self.indices.max() >= len(shards)):
            raise IndexError(f"indices must lie in [0, {len(shards)}) for {shards.path.name}, got range "
                             f"[{self.indices.min()}, {self.indices.max()}]")
        if channels not in (None, shards.channels) and not (channels == 3 and shards.channels == 1):
            raise ValueError(f"channels={channels} for a {shards.channels}-channel shard set; "
                             "only grayscale -> 3 replication is supported")
        self.channels = channels or shards.channels
        self.transform, self.return_index, self.memory_bytes = transform, return_index, memory_bytes
        ys = shards.records["y"].to_numpy()[self.indices]
        #: labels of the selected rows: (n,) int64 or (n, classes) float32 for multilabel
        self.labels = ys.astype(np.int64) if shards.task.kind != "multilabel" \
            else np.stack(ys).astype(np.float32) if len(ys) else np.zeros((0, len(shards.task.classes)), np.float32)
        per_image = shards.stored_bytes / max(len(shards), 1)
        if shards.preprocess.encoding == "raw":
            per_image = int(np.prod(shards.shape)) * shards.dtype.itemsize
        self._reader = ShardReader(shards)
        #: the selected images as stored (raw array or encoded LargeBinaryArray), or None: read batch by batch
        self._preloaded = self._reader.take_stored(self.indices) \
            if per_image * len(self.indices) <= memory_bytes else None

    def __len__(self) -> int:
        return len(self.indices)

    def partition(self, rank: int, world_size: int) -> ShardDataset:
        """The rank's contiguous share of this dataset's items: over all ranks every item exactly once
        (sizes differ by at most one)."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must lie in [0, {world_size}), got {rank}")
        return ShardDataset(self.shards, np.array_split(self.indices, world_size)[rank], channels=self.channels,
                            transform=self.transform, return_index=self.return_index,
                            memory_bytes=self.memory_bytes)

    def __getitem__(self, i: int):
        return self.__getitems__([i])[0]

    def __getitems__(self, positions: Sequence[int]) -> list[tuple]:
        """A batch of items, converted together (the DataLoader calls this with a batch's indices):
        one gather and one float conversion per batch instead of per image."""
        import torch

        positions = np.asarray(positions, dtype=np.int64)
        if self._preloaded is None:
            pixels = self._reader.take(self.indices[positions])
        elif isinstance(self._preloaded, np.ndarray):
            pixels = self._preloaded[positions]
        else:
            pixels = np.stack([self._reader.decode(self._preloaded[int(p)]) for p in positions])
        images = pixels_to_tensor(pixels, self.channels).unbind(0)
        if self.transform is not None:
            images = [self.transform(image) for image in images]
        dtype = torch.int64 if self.shards.task.kind == "multiclass" else torch.float32
        labels = torch.as_tensor(self.labels[positions], dtype=dtype).unbind(0)
        if self.return_index:
            return list(zip(images, labels, self.indices[positions].tolist()))
        return list(zip(images, labels))
