"""Preprocessed images materialised once per (dataset, preprocessing) as Parquet shards in a cache.

Layout of one shard set, `cache_dir / f"{dataset.name}-{key}"` (key: content hash of the dataset's
fingerprint, the preprocessing and SHARD_FORMAT_VERSION; `layout`):

    records.parquet        index, split, key, patient, y (one row per stored image, in dataset order)
    shard-00000.parquet    index, image (raw pixel bytes, or PNG/JPEG/WebP bytes); row groups of at most
                           128 KiB of pixels (one image each at 512 px: `layout.group_rows`)
    ...
    dhash16.npy            the leakage guard's dHash of every stored image (rows x 4 uint64, in row order),
                           computed during the build (absent for images below 16 x 17 px)
    manifest.json          written last: format, parameters, shapes, every file with its size and sha256,
                           skipped keys

Building (`build`, with `chunk` building one chunk of `rows_per_shard` records, i.e. one shard file, `encode`
turning images into stored bytes and `write` writing the Parquet files): the chunks are built by an executor
(`scaling.data.executors`: in process, a process pool, the Ray cluster's), each into its own folder
`.{set}.chunks/chunk-NNNNN` with its own manifest, so a killed build resumes from the chunks it finished; then
the set is assembled from them in a temporary sibling directory that is renamed into place after its manifest
is written (scaling/files.py), byte for byte what an uninterrupted build writes, so a directory at the final
path is complete; one without a valid manifest (tampered with,
or from another format version) is never read and is rebuilt. Concurrent preparers of one key (two studies
sharing a cache, on one node or several) serialise on a lock file `cache_dir / f"{name}.lock"`
(`scaling.files.LockFiles`: works on parallel file systems, taken over when its owner died); the loser of the
race finds the winner's result and reuses it. Every build that completes appends a line to
`cache_dir/builds.jsonl` (what was built, by whom, how long it took, chunks built and reused), every chunk
published one to `cache_dir/chunks.jsonl`.

Corruption: a preparer that finds a set re-reads every file against the sha256 recorded when it was published
(`prepare_shards`, once per study run in the driver, before any worker reads it); a set that no longer matches
is rebuilt, with a warning naming the file, since shards are a pure function of the dataset and can always be
made again. Workers opening a set (`ShardSet.open`) check only sizes: hashing terabytes per job would cost more
than the jobs. A full file system while building raises `scaling.files.NoSpace` naming the set and the space
it needs, and leaves nothing at the final path (but the chunks it finished).

Reading (`read`): `ShardReader` (torch-free random access that reads only the row groups of the rows asked);
`dataset`: `ShardDataset` (the map-style torch dataset on top of it).
"""
from scaling.data.preprocess import Preprocess
from scaling.data.shards.build import BAD_IMAGE_POLICIES, BUILDS, ProgressLine, prepare_shards
from scaling.data.shards.chunk import CHUNKS_LOG, HASHES
from scaling.data.shards.dataset import ShardDataset, pixels_to_tensor
from scaling.data.shards.layout import RECORDS, SHARD_FORMAT_VERSION, shard_key, shard_path
from scaling.data.shards.read import ShardReader, ShardSet

__all__ = ["BAD_IMAGE_POLICIES", "BUILDS", "CHUNKS_LOG", "HASHES", "Preprocess", "ProgressLine", "RECORDS", "SHARD_FORMAT_VERSION",
           "ShardDataset", "ShardReader", "ShardSet", "pixels_to_tensor", "prepare_shards", "shard_key",
           "shard_path"]
