"""The step-indexed batch schedule: resumable, rank-partitioned, balanced when asked."""
import numpy as np
import pytest

from scaling.train.batches import StepBatches


def batches(**kw):
    args = dict(indices=np.arange(100, 150), batch_size=8, seed=3, start=0, stop=20)
    args.update(kw)
    return list(StepBatches(**args))


def test_resuming_at_step_k_replays_the_same_batches():
    full = batches()
    assert batches(start=7) == full[7:]


def test_uniform_sampling_covers_every_example_once_per_epoch():
    flat = np.concatenate(batches(stop=25))  # 25 steps x 8 = 200 = 4 epochs of 50
    for epoch in range(4):
        assert sorted(flat[epoch * 50:(epoch + 1) * 50]) == list(range(100, 150))


def test_ranks_split_each_global_batch_without_overlap():
    one = batches(stop=5)
    r0, r1 = batches(stop=5, rank=0, world_size=2), batches(stop=5, rank=1, world_size=2)
    for step in range(5):
        assert sorted(r0[step] + r1[step]) == sorted(one[step])


def test_grad_accumulation_splits_a_step_into_micro_batches():
    micro = batches(stop=3, grad_accum=2)
    assert len(micro) == 6 and all(len(m) == 4 for m in micro)
    assert [m for pair in zip(micro[::2], micro[1::2]) for m in pair[0] + pair[1]] == sum(batches(stop=3), [])


def test_weighted_sampling_balances_a_rare_class():
    labels = np.array([1] * 5 + [0] * 95)
    weights = np.where(labels == 1, 1 / 5, 1 / 95)
    drawn = np.concatenate(list(StepBatches(np.arange(100), 64, 0, start=0, stop=50, weights=weights)))
    assert 0.4 < labels[drawn].mean() < 0.6


def test_batch_must_divide_across_workers():
    with pytest.raises(ValueError, match="divisible"):
        StepBatches(np.arange(10), 6, 0, start=0, stop=1, world_size=4)
