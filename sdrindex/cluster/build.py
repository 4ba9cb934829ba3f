"""Building a sharded bundle: the SP learns once, then each shard is built by a pure job.

:func:`build_sharded` runs the pipeline's stages: load the source, learn the SP (on all the
images or the first ``learn_limit``; online learning is sequential), fit the decoders once
when asked, then one :class:`ShardJob` per shard through a pluggable ``run_jobs`` (serial or
a local process pool here; Ray tasks with retries in ``sdrindex.cluster.ray_build``), and
finally the top-level version that pins the shards, swapped in atomically
(:func:`~.layout.save_sharded`).

:func:`build_shard` is a pure, deterministic function of its job (a picklable dataclass in,
one out): it loads ``sp.npz``, reads its own rows (``g % n_shards == shard``) of the source,
encodes them, builds the shard's index and writes the shard's version under the build's
name and time. Run again after a failure it writes byte-identical files (a version already
complete and intact is kept as it is).
"""

from __future__ import annotations

import concurrent.futures
import datetime as _dt
import multiprocessing
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TypeVar

import numpy as np

from sdrindex._store import bundle_errors, remove_quietly, sha256_file, write_json
from sdrindex.bundle import (
    MANIFEST,
    PARTIAL_MARKER,
    Bundle,
    check_files,
    new_version_name,
    read_manifest,
)
from sdrindex.errors import BundleError, DataError, ParameterError

from .layout import RULE, check_shard_count, save_sharded, shard_dir

__all__ = [
    "ShardJob",
    "ShardResult",
    "build_shard",
    "build_sharded",
    "process_runner",
    "serial_runner",
]

_J = TypeVar("_J")
_R = TypeVar("_R")
#: Called with each finished shard's result, as shards finish.
JobProgress = Callable[["ShardResult"], None]
#: ``run_jobs(fn, jobs, progress) -> results`` in the order of ``jobs``.
Runner = Callable[[Callable[[Any], Any], Sequence[Any], JobProgress | None], list[Any]]


@dataclass(frozen=True)
class ShardJob:
    """Everything one shard's build needs (plain values: it crosses process boundaries)."""

    root: str  # the sharded bundle folder
    shard: int
    n_shards: int
    sp_file: str  # the learned SP (sp.npz), copied byte for byte into the shard
    source: str | None  # as `sdrindex build --data` (None: MNIST training set)
    labels: str | None
    limit: int | None
    threshold: int | float | str
    backend: str
    index_params: dict[str, Any] = field(default_factory=dict)
    build: str = ""  # the build's version name: every shard's version is named so
    created: str = ""  # the build's time, written in every shard's manifest
    dataset: dict[str, Any] = field(default_factory=dict)
    preprocess: dict[str, Any] | None = None  # deskew/blur/planes before the SP, as the preset's

    @property
    def encoder(self) -> dict[str, Any]:
        """The encoder configuration every shard's manifest stores (the collection's)."""
        from sdrindex.preprocess import encoder_config

        return encoder_config(self.threshold, self.preprocess)


@dataclass(frozen=True)
class ShardResult:
    """What a shard's build wrote."""

    shard: int
    version: str  # the shard's version folder
    n_items: int
    manifest_sha256: str
    seconds: float


def _rows(job: ShardJob) -> tuple[np.ndarray, np.ndarray | None, int]:
    """The shard's images and labels, and the number of items of the whole collection."""
    from sdrindex.images import load_source

    data = load_source(job.source, job.labels, job.limit)
    images = np.ascontiguousarray(data.images[job.shard :: job.n_shards])
    labels = None if data.labels is None else np.asarray(data.labels[job.shard :: job.n_shards])
    return images, labels, int(data.images.shape[0])


def _index_params(job: ShardJob, n_total: int, sdrs: np.ndarray) -> dict[str, Any]:
    """The shard's index parameters: a graph shard searches as wide as one graph over the
    whole collection would (its own size would pick a narrower search and lose recall)."""
    from sdrindex.index import collection_search

    params = dict(job.index_params)
    if job.backend == "nndescent":
        auto = collection_search(n_total, sdrs)
        for name in ("ef", "epsilon"):
            if params.get(name) is None:
                params[name] = auto[name]
    return params


def _intact(vdir: Path) -> bool:
    """A version folder that is complete and whose files all match its manifest."""
    try:
        check_files(vdir, read_manifest(vdir), hashes=True)
        return True
    except (DataError, BundleError, OSError):
        return False


def build_shard(job: ShardJob, sp: Any = None) -> ShardResult:
    """Build and write one shard (its version is not made live: the top level does that).

    Parameters
    ----------
    job : ShardJob
    sp : SpatialPooler, optional
        The SP loaded from ``job.sp_file`` already (a worker building several shards loads
        it once); loaded here when None.

    Returns
    -------
    ShardResult
    """
    from sdrindex.index import SDRIndex
    from sdrindex.preprocess import encode_input
    from sdrindex.sp import SpatialPooler
    from sdrindex.table import TrainingTable

    t0 = time.perf_counter()
    sdir = shard_dir(job.root, job.shard)
    vdir = sdir / job.build
    if vdir.is_dir() and _intact(vdir):  # a retry of a job that had finished its write
        return _result(job, vdir, t0)
    remove_quietly(vdir)  # ours: the build's own name, left by an attempt that failed
    if sp is None:
        sp = SpatialPooler.load(job.sp_file)
    images, labels, n_total = _rows(job)
    if images.shape[0] == 0:
        raise ParameterError(f"shard {job.shard} of {job.n_shards} would hold no items")
    sdrs = sp.transform(encode_input(images, job.encoder), packed=True)
    table = TrainingTable(images, sdrs, sp.n_columns, labels=labels)
    index = SDRIndex(job.backend, **_index_params(job, n_total, sdrs)).fit(sdrs, sp.n_columns)
    stamp = {"build": job.build, "shard": job.shard, "n_shards": job.n_shards, "rule": RULE}
    bundle = Bundle(
        sp=sp,
        table=table,
        index=index,
        encoder=job.encoder,
        dataset={
            **job.dataset,
            "n_items": int(images.shape[0]),
            "labels": labels is not None,
            "sharding": stamp,
        },
        sp_file=Path(job.sp_file),
    )
    bundle.save(sdir, switch=False, version=job.build, created=job.created)
    return _result(job, vdir, t0)


def _result(job: ShardJob, vdir: Path, t0: float) -> ShardResult:
    manifest = read_manifest(vdir)
    return ShardResult(
        job.shard,
        str(vdir),
        int(manifest["n_items"]),
        sha256_file(vdir / MANIFEST),
        time.perf_counter() - t0,
    )


# ============================================================================ runners


def serial_runner(
    fn: Callable[[_J], _R], jobs: Sequence[_J], progress: JobProgress | None = None
) -> list[_R]:
    """Run the jobs one after another in this process (the SP is loaded once)."""
    from sdrindex.sp import SpatialPooler

    results = []
    sp, sp_file = None, None
    for job in jobs:
        file = getattr(job, "sp_file", None)
        if fn is build_shard and file is not None:
            if file != sp_file:
                sp, sp_file = SpatialPooler.load(file), file
            result = build_shard(job, sp)  # type: ignore[arg-type]
        else:
            result = fn(job)
        results.append(result)
        if progress is not None:
            progress(result)
    return results


def process_runner(n_workers: int = 2) -> Runner:
    """A runner over ``n_workers`` local processes (started by ``spawn``: numba's threading
    layer is not fork-safe once a parallel kernel ran in the parent)."""
    if n_workers < 1:
        raise ParameterError(f"n_workers must be >= 1, got {n_workers}")

    def run(fn: Callable[[_J], _R], jobs: Sequence[_J], progress: JobProgress | None) -> list[_R]:
        ctx = multiprocessing.get_context("spawn")
        results: dict[int, _R] = {}
        with concurrent.futures.ProcessPoolExecutor(n_workers, mp_context=ctx) as pool:
            futures = {pool.submit(fn, job): i for i, job in enumerate(jobs)}
            for fut in concurrent.futures.as_completed(futures):
                results[futures[fut]] = fut.result()
                if progress is not None:
                    progress(results[futures[fut]])
        return [results[i] for i in range(len(jobs))]

    return run


# ============================================================================ the build


def _stderr_job_progress(total: int) -> JobProgress:
    import sys

    done = [0]

    def report(result: ShardResult) -> None:
        done[0] += 1
        print(
            f"[shards] {done[0]}/{total} built (shard {result.shard}: {result.n_items} items, "
            f"{result.seconds:.1f} s)",
            file=sys.stderr,
            flush=True,
        )

    return report


def build_sharded(
    source: str | Path | None,
    out: str | Path,
    n_shards: int,
    *,
    sp: Any,
    labels: str | Path | None = None,
    limit: int | None = None,
    learn_limit: int | None = None,
    threshold: int | float | str = 128,
    preprocess: Mapping[str, Any] | None = None,
    epochs: int = 1,
    backend: str = "nndescent",
    index_params: Mapping[str, Any] | None = None,
    decoders: str | Iterable[str] | None = None,
    dataset: Mapping[str, Any] | None = None,
    run_jobs: Runner = serial_runner,
    progress: JobProgress | None = None,
) -> Path:
    """Build a sharded bundle of ``n_shards`` shards in the folder ``out``; returns the new
    top-level version (one shard: today's bundle format, through ``build_bundle``).

    Parameters
    ----------
    source, labels, limit
        The images, as ``sdrindex build --data/--labels/--limit`` takes them.
    out : path
        The bundle folder. The caller checks that it may write there (the CLI refuses a
        folder that is not ours, or a live bundle without ``--force``).
    n_shards : int
        1 <= n_shards <= number of images.
    sp : SpatialPooler
        Unfitted, with the parameters to learn.
    learn_limit : int, optional
        Learn the SP on the first ``learn_limit`` images only (all of them by default).
    threshold, preprocess, epochs, backend, index_params, decoders, dataset
        As :func:`sdrindex.pipeline.build_bundle`; the decoders fit once, on the SDRs of
        the learning images, and are stored at the top level.
    run_jobs : callable
        ``run_jobs(build_shard, jobs, progress) -> results``: :func:`serial_runner`,
        :func:`process_runner`, or the Ray runner.
    progress : callable, optional
        Called with each :class:`ShardResult` as shards finish (default: a line on stderr).
    """
    from sdrindex.images import load_source
    from sdrindex.pipeline import build_bundle, decoder_kinds
    from sdrindex.preprocess import encode_input, encoder_config

    data = load_source(None if source is None else str(source), labels, limit)
    n = int(data.images.shape[0])
    check_shard_count(n_shards, n)
    info = {
        "source": str(source or "mnist"),
        "description": data.description,
        **dict(dataset or {}),
    }
    if n_shards == 1:
        bundle = build_bundle(
            data.images, data.labels, sp=sp, threshold=threshold, preprocess=preprocess,
            epochs=epochs, learn_limit=learn_limit, backend=backend, index_params=index_params,
            decoders=decoders, dataset=info,
        )  # fmt: skip
        return bundle.save(out)
    kinds = decoder_kinds(decoders)
    learn = data.images if not learn_limit else data.images[:learn_limit]
    encoder = encoder_config(threshold, preprocess)  # checks the preprocessing
    X = encode_input(learn, encoder)
    sp.fit(X, epochs=int(epochs))
    decoder = _fit_decoders(sp, learn, data, X, kinds)
    del X
    root = Path(out)
    staging = _stage_sp(root, sp)
    job = ShardJob(
        str(root), 0, n_shards, str(staging / "sp.npz"), None if source is None else str(source),
        None if labels is None else str(labels), limit, threshold, backend,
        dict(index_params or {}), new_version_name(), _now(), info,
        encoder.get("preprocess"),
    )  # fmt: skip
    meta = {
        "build": job.build,
        "sp_params": sp.nupic_params(),
        "n_columns": int(sp.n_columns),
        "encoder": encoder,
        "dataset": {"n_items": n, "labels": data.labels is not None}
        | {"sp_learned_on": int(learn.shape[0]), **info},
        "index": {"backend": backend},
        "has_labels": data.labels is not None,
        "image_shape": [int(d) for d in data.images.shape[1:]],
    }
    try:
        jobs = [replace(job, shard=i) for i in range(n_shards)]
        results = run_jobs(build_shard, jobs, progress or _stderr_job_progress(n_shards))
        versions = [Path(r.version) for r in sorted(results, key=lambda r: r.shard)]
        return save_sharded(
            root, sp_file=versions[0] / "sp.npz", shard_versions=versions, meta=meta,
            decoder=decoder, name=job.build,
        )  # fmt: skip
    finally:
        remove_quietly(staging)


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _stage_sp(root: Path, sp: Any) -> Path:
    """A temporary folder of ours holding the learned ``sp.npz`` the shard jobs read (its
    name and contents are those of an interrupted save: cleaned like one if we stop)."""
    staging = root / f".tmp-{new_version_name()}"
    with bundle_errors(root, "build again"):
        root.mkdir(parents=True, exist_ok=True)
        staging.mkdir()
        write_json(staging / PARTIAL_MARKER, {"format": "sdrindex-sharded-partial"})
        sp.save(staging / "sp.npz")
    return staging


def _fit_decoders(sp: Any, learn: np.ndarray, data: Any, X: np.ndarray, kinds: tuple[str, ...]):
    """The decoders, fitted once on the learning images' SDRs (None when none are asked)."""
    if not kinds:
        return None
    from sdrindex.decoders import train_decoders
    from sdrindex.table import TrainingTable

    labels = None if data.labels is None else data.labels[: learn.shape[0]]
    table = TrainingTable(learn, sp.transform(X, packed=True), sp.n_columns, labels=labels)
    return train_decoders(SimpleNamespace(sp=sp, table=table), kinds)
