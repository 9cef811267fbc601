"""The scratch reference set: more images of a synthetic target, rendered by its own generator, for from-scratch
runs on more target data than the target's training split holds (`sweep.scratch_reference_images`).

Effective data transferred reads a fine-tuned cell's error off the from-scratch curve against target images
(Hernandez et al. 2021); a cell better than scratch on the whole split is read off that curve beyond its data
unless scratch also trains on more. A synthetic image is a pure function of its index, so the target with a larger
`size` holds the target's own images first: its validation and test images are the target's (the same keys, the
same pixels), and every other training image, the target's training split and the images beyond it, is the pool
that nested subsets are drawn from. Only from-scratch points whose target size exceeds the split use it; the
results table marks them `reference`, and only the scratch curve of effective data transferred reads them.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from scaling.config import StudyConfig
from scaling.data.executors import MapChunks, in_process
from scaling.data.stage import Log, PreparedSet, StudyData, open_source, prepare_set


def reference_set(cfg: StudyConfig, data: StudyData, log: Log,
                  map_chunks: MapChunks = in_process) -> PreparedSet | None:
    """The reference set's shards (built or reused like any dataset's, its chunks run by `map_chunks`) and its rows:
    train = the pool, val and test = the target's images in the target's order; None when the study asks for none."""
    if not cfg.sweep.scratch_reference_images:
        return None
    ref = replace(cfg.data.target, options={**cfg.data.target.options, "size": cfg.sweep.scratch_reference_images})
    prepared = prepare_set("reference", open_source("data.target", ref), cfg.data, cfg.data.val_fraction, cfg.seed,
                           log, map_chunks)
    recs = prepared.shards.records
    # a training image's key is its index, the same in both; test keys follow the training images, so they
    # differ by the size, and the test images are taken in their order, as the target's are
    val = recs.set_index("key")["index"].loc[data.target.shards.records["key"].loc[data.target.val]].to_numpy()
    test = recs.loc[recs["split"] == "test", "index"].to_numpy()
    train = recs.loc[(recs["split"] == "train") & ~recs["index"].isin(val), "index"].to_numpy()
    return PreparedSet(shards=prepared.shards, train=np.asarray(train), val=val, test=test)
