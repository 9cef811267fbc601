"""The data stage's work on the Ray cluster: `RayChunks` is a `scaling.data.executors.MapChunks` that runs each
item (a chunk of a shard set, a range of rows to hash) as a plain Ray task of one CPU, on every CPU of the
cluster the study runs on (a local Ray on a workstation, every node of a Slurm allocation).

Plain tasks rather than Ray Data (`map_batches` + `write_parquet`): a chunk must write its own shard file, byte for
byte what an uninterrupted build writes, with its own manifest, and be skipped when a killed build left it
finished; Ray Data names and sizes its output files itself and restarts a dataset from its start. And it was not
faster: benchmarks/bench_data_stage.py, 48 radiograph-sized images to 512 px on 2 CPUs, measured 2.15 images/s
with tasks against 1.52 with Ray Data (2 shared, loaded cores: the ratio, not the rates, is what carries over). A Ray worker that dies (killed, out of memory, a lost node) costs
its chunk only: Ray runs the task again (`max_retries`); a chunk that fails with an exception (a bad image, a full
disk) ends the map and the exception is raised here as itself.

The cluster is joined at `address` (or $RAY_ADDRESS), else a local one with `num_cpus` (default: every CPU) is
started, on the first map that has more than one item, and stopped by `close` (a joined one is only left).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from scaling.data.executors import in_process

#: times Ray runs a chunk again whose worker died (not for exceptions of the chunk itself)
RETRIES = 3


class RayChunks:
    """Runs items as Ray tasks (see the module docstring); use as a context manager, or call `close`."""

    def __init__(self, address: str | None = None, num_cpus: int | None = None):
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.num_cpus = num_cpus
        self._started = False

    def __enter__(self) -> RayChunks:
        return self

    def __exit__(self, *_) -> None:
        self.close()

    def __call__(self, fn: Callable[[Any, Any], Any], shared: Any, items: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        if len(items) < 2:  # one chunk: no cluster to start or join
            yield from in_process(fn, shared, items)
            return
        import ray
        from ray.exceptions import RayTaskError

        self._connect()
        task = ray.remote(num_cpus=1, max_retries=RETRIES)(fn)
        shared_ref = ray.put(shared)  # sent to each node once, not with every chunk
        running = {task.remote(shared_ref, item): position for position, item in enumerate(items)}
        try:
            while running:
                done, _ = ray.wait(list(running), num_returns=1)
                position = running.pop(done[0])
                try:
                    result = ray.get(done[0])
                except RayTaskError as err:  # the chunk's own exception, without Ray's wrapping
                    raise (err.cause if isinstance(err.cause, BaseException) else err) from None
                yield position, result
        finally:
            for ref in running:
                ray.cancel(ref, force=True)

    def cpus(self) -> int:
        """The CPUs of the cluster (starting or joining it)."""
        import ray

        self._connect()
        return int(ray.cluster_resources().get("CPU", 0))

    def _connect(self) -> None:
        import ray

        if ray.is_initialized():
            return
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        ray.init(address=self.address, log_to_driver=False, configure_logging=False,
                 **({} if self.address else {"num_cpus": self.num_cpus or os.cpu_count()}))
        self._started = True

    def close(self) -> None:
        """Stop (a local cluster) or leave (a joined one) what this executor connected to."""
        if self._started:
            import ray

            ray.shutdown()
            self._started = False
