"""Which examples make up each optimizer step, as a pure function of (seed, step).

Because batch k depends on nothing but the seed and k, a job restarted from the checkpoint of step k sees
exactly the batches an uninterrupted job would have seen, on any number of workers.
"""
from __future__ import annotations

import numpy as np


class StepBatches:
    """Global batches of `batch_size` positions into `indices`, for steps `start`..`stop`-1, each split
    evenly across `world_size` ranks (rank r takes positions r, r+W, ...).

    Uniform sampling walks seeded permutations epoch by epoch (every example once per epoch); weighted
    sampling (class-balanced) draws with replacement, a fresh draw per step. Iterating yields one list
    of dataset indices per (step, micro-batch) for this rank, so it serves as a DataLoader batch_sampler
    and splits across DataLoader workers without further thought.
    """

    def __init__(self, indices, batch_size: int, seed: int, *, start: int, stop: int, rank: int = 0,
                 world_size: int = 1, grad_accum: int = 1, weights=None):
        if batch_size % (world_size * grad_accum):
            raise ValueError(
                f"batch_size {batch_size} must be divisible by workers x grad_accum = {world_size * grad_accum}"
            )
        self.indices = np.asarray(indices)
        if len(self.indices) == 0:
            raise ValueError("no training examples to sample from")
        self.batch_size, self.seed = batch_size, seed
        self.start, self.stop = start, stop
        self.rank, self.world_size, self.grad_accum = rank, world_size, grad_accum
        self.probs = None if weights is None else np.asarray(weights, float) / np.sum(weights)

    def global_batch(self, step: int) -> np.ndarray:
        if self.probs is not None:
            rng = np.random.default_rng([self.seed, step])
            return self.indices[rng.choice(len(self.indices), self.batch_size, p=self.probs)]
        n = len(self.indices)
        first = step * self.batch_size
        positions = np.arange(first, first + self.batch_size)
        out = np.empty(self.batch_size, dtype=self.indices.dtype)
        for epoch in np.unique(positions // n):
            perm = np.random.default_rng([self.seed, int(epoch), 1]).permutation(n)
            sel = positions // n == epoch
            out[sel] = self.indices[perm[positions[sel] % n]]
        return out

    def __iter__(self):
        micro = self.batch_size // (self.world_size * self.grad_accum)
        for step in range(self.start, self.stop):
            mine = self.global_batch(step)[self.rank::self.world_size]
            for k in range(self.grad_accum):
                yield mine[k * micro:(k + 1) * micro].tolist()

    def __len__(self) -> int:
        return (self.stop - self.start) * self.grad_accum
