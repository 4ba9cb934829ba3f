"""A batch as row ranges on a few threads, each range run by a serial nogil numba kernel.

numba's parallel loops (``prange``) cost seconds of compile per kernel on a cold cache, and
a second compiled copy beside the serial kernel. Running the serial kernel (compiled with
``nogil=True``) on row ranges from a small thread pool compiles nothing more, is as fast
for coarse ranges, and never enters numba's threading layer (so any number of request
threads may do it at once).
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable

import numba

__all__ = ["n_threads", "run_ranges"]

_pool: concurrent.futures.ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def n_threads() -> int:
    """Threads a batch may use: numba's setting (``NUMBA_NUM_THREADS``, set_num_threads)."""
    return max(1, numba.get_num_threads())


def _executor() -> concurrent.futures.ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=numba.config.NUMBA_NUM_THREADS, thread_name_prefix="sdrindex-rows"
            )
        return _pool


def run_ranges(fn: Callable[[int, int], object], n: int, n_ranges: int) -> None:
    """Call ``fn(lo, hi)`` on ``n_ranges`` contiguous ranges covering ``range(n)``.

    The first range runs on the calling thread, the others on the pool; returns when all
    are done and re-raises the first error. ``fn`` must release the GIL to gain anything.
    """
    n_ranges = max(1, min(int(n_ranges), n))
    bounds = [(r * n // n_ranges, (r + 1) * n // n_ranges) for r in range(n_ranges)]
    if n_ranges == 1:
        fn(0, n)
        return
    pool = _executor()
    futures = [pool.submit(fn, lo, hi) for lo, hi in bounds[1:]]
    try:
        fn(*bounds[0])
    finally:
        for f in futures:
            f.result()
