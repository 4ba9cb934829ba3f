"""The sharded build's jobs as Ray tasks: ``ray_runner(address)`` for ``build_sharded``.

:func:`sdrindex.cluster.build.build_sharded` learns the SP once, then hands one job per
shard to a pluggable ``run_jobs(fn, jobs, progress)``. The one made here runs each job as
a Ray task on the cluster's workers (one CPU each, so a worker node runs as many shards at
once as it has cores). A task whose worker process dies (killed, out of memory, its node
gone) is run again, up to ``max_retries`` times, by Ray; the job is a pure function of its
input (it reads its rows, encodes them with the saved SP and writes its shard directory),
so the retried shard is byte-identical to an undisturbed one. Every worker writes its
shard where the job says: the nodes must share the bundle's filesystem (as they share it
to serve it).

Results come back as the shards finish, in any order; the list returned is in job order.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from typing import Any

from sdrindex.cluster.ray_connect import connect

#: Runs of a shard's job after its first, when its worker process dies.
MAX_RETRIES = 3

RunJobs = Callable[[Callable[[Any], Any], Sequence[Any], Any], list[Any]]


def ray_runner(
    address: str | None, *, max_retries: int = MAX_RETRIES, num_cpus: float = 1.0
) -> RunJobs:
    """A ``run_jobs`` for :func:`build_sharded` that runs every job as a Ray task.

    Parameters
    ----------
    address : str or None
        The cluster's head, ``HOST:PORT`` (None or ``"local"``: a Ray started in this
        process, using this machine's cores).
    max_retries : int
        Times a job is run again when its worker dies (Ray's task ``max_retries``). An
        exception raised by the job itself (bad input) is not retried: it would fail again.
    num_cpus : float
        CPUs each job holds (1: one shard per core at a time).

    Returns
    -------
    callable
        ``run_jobs(fn, jobs, progress) -> list`` of ``fn(job)`` in the order of ``jobs``.
        It draws one tqdm bar over all the shards on stderr as they finish (none when
        ``progress`` is False) and calls ``progress(result)`` per finished job when it is
        callable.
    """
    if max_retries < 0:
        raise ValueError(f"max_retries must be >= 0, got {max_retries}")

    def run_jobs(fn: Callable[[Any], Any], jobs: Sequence[Any], progress: Any = None) -> list[Any]:
        ray = connect(address)
        task = ray.remote(_run_job).options(
            max_retries=max_retries, retry_exceptions=False, num_cpus=num_cpus
        )
        refs = [task.remote(fn, job) for job in jobs]
        order = {ref: i for i, ref in enumerate(refs)}
        results: list[Any] = [None] * len(refs)
        bar = _bar(len(refs), progress)
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    result = ray.get(ref)  # a job's own error is raised here
                    results[order[ref]] = result
                    if bar is not None:
                        bar.update(1)
                    if callable(progress):
                        progress(result)
        except BaseException:
            for ref in pending:  # a failed build: nothing more is written in its name
                ray.cancel(ref, force=True)
            raise
        finally:
            if bar is not None:
                bar.close()
        return results

    return run_jobs


def _run_job(fn: Callable[..., Any], job: Any) -> Any:
    """One job on a worker; a shard build gets the worker's SP, loaded once per process."""
    from sdrindex.cluster.build import build_shard

    sp_file = getattr(job, "sp_file", None)
    if fn is build_shard and sp_file:
        return build_shard(job, _worker_sp(str(sp_file)))
    return fn(job)


@functools.lru_cache(maxsize=1)
def _worker_sp(path: str) -> Any:
    """The SP of ``path``, kept for the worker process's next shard of the same build.

    Ray reuses a worker process for the next task, so a worker building several shards of
    one build loads ``sp.npz`` (megabytes, checked) once; a new build's SP is a new path.
    """
    from sdrindex.sp import SpatialPooler

    return SpatialPooler.load(path)


def _bar(total: int, progress: Any) -> Any:
    """A tqdm bar over the shards (None when ``progress`` is False)."""
    if progress is False:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="shards", unit="shard", file=sys.stderr, dynamic_ncols=True)
