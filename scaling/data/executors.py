"""How the data stage spreads its work: a `MapChunks` runs `fn(shared, item)` for every item (a chunk of a
shard set to build, a range of rows to hash) and yields (position of the item, result) as each one ends, in any
order. An exception of `fn` ends the map: it is raised in the caller, and work not yet started is dropped.

`shared` is what every item needs (the dataset, the preprocessing): an executor sends it to each process once.
`in_process` runs the items one after the other (tests, sets of one chunk); `process_pool(n)` in n processes of
this machine (the analysis fits its laws with one too). The Ray cluster's executor lives outside `data/`, which
knows nothing of Ray (`scaling.cluster.RayChunks`)."""
from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any, Protocol


class MapChunks(Protocol):
    def __call__(self, fn: Callable[[Any, Any], Any], shared: Any, items: Sequence[Any]) -> Iterator[tuple[int, Any]]:
        ...


def in_process(fn: Callable[[Any, Any], Any], shared: Any, items: Sequence[Any]) -> Iterator[tuple[int, Any]]:
    for position, item in enumerate(items):
        yield position, fn(shared, item)


#: `shared` of a pool worker, set once by its initializer instead of being sent with every item
_shared: Any = None


def _init_worker(shared: Any) -> None:
    global _shared
    _shared = shared


def _call(fn: Callable[[Any, Any], Any], item: Any) -> Any:
    return fn(_shared, item)


def process_pool(workers: int, start_method: str | None = None) -> MapChunks:
    """An executor of `workers` processes of this machine (`fn`, `shared` and the items must be picklable), started
    by multiprocessing's `start_method` (its default when None)."""
    def map_chunks(fn, shared, items):
        if workers == 1 or len(items) < 2:
            yield from in_process(fn, shared, items)
            return
        context = multiprocessing.get_context(start_method) if start_method else None
        with ProcessPoolExecutor(min(workers, len(items)), mp_context=context, initializer=_init_worker,
                                 initargs=(shared,)) as pool:
            running = {pool.submit(_call, fn, item): position for position, item in enumerate(items)}
            try:
                while running:
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        yield running.pop(future), future.result()
            finally:
                for future in running:
                    future.cancel()
    return map_chunks
