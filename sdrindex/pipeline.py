"""The build pipeline: images -> binarize -> SP fit -> encode -> table -> index -> decoders.

:func:`build_bundle` is the only place that runs these stages; ``sdrindex build``, the
service's first start, ``sdrindex sweep``, the benchmarks and the tests all call it. Each
stage is timed and reported through one callback (:class:`Progress`), so a terminal, a log
or a test sees the same events.

The later stages' kernels compile in another process while the SP learns
(:class:`~sdrindex.warmup.WarmUp`), a backend's preparation starts before the SP learns
(``SDRIndex.prepare_fit``), and the decoders fit on a thread while the graph index builds,
which is why the stages are not simply chained calls.
"""

from __future__ import annotations

import concurrent.futures
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Literal

import numba
import numpy as np
from numpy.typing import ArrayLike, NDArray

from sdrindex.bundle import Bundle, check_labels_arg
from sdrindex.decoders import DECODER_KINDS, train_decoders
from sdrindex.errors import ParameterError
from sdrindex.index import SDRIndex
from sdrindex.preprocess import encode_input, encoder_config, input_size
from sdrindex.sp import SpatialPooler
from sdrindex.table import TrainingTable
from sdrindex.warmup import WARM_UP_FROM, WARM_UP_WAIT, WarmUp

__all__ = [
    "STAGES",
    "DECODER_SETS",
    "decoder_kinds",
    "StageEvent",
    "Progress",
    "stderr_progress",
    "BuildTimes",
    "build_bundle",
]

#: The stages in the order they run (``decoders`` only when asked for).
STAGES = ("binarize", "learn SP", "encode", "table", "index", "decoders")

#: ``decoders=`` shorthands: what the decoder stage fits (see :func:`train_decoders`).
DECODER_SETS: dict[str, tuple[str, ...]] = {
    "none": (),
    "default": ("calibration", "ridge", "logistic"),
    "all": ("calibration", "ridge", "mlp", "logistic"),
}


@dataclass(frozen=True)
class StageEvent:
    """One stage starting (``seconds`` None) or done (``seconds`` its wall time)."""

    stage: str
    state: Literal["start", "done"]
    seconds: float | None = None
    detail: str = ""


#: A progress callback: receives every :class:`StageEvent`.
Progress = Callable[[StageEvent], None]


def stderr_progress(event: StageEvent) -> None:
    """The terminal reporter: ``[stage] ...`` then ``[stage] done in 1.2 s``."""
    if event.state == "start":
        msg = f"[{event.stage}] ..." + (f" {event.detail}" if event.detail else "")
    else:
        msg = f"[{event.stage}] done in {event.seconds:.1f} s"
        msg += f" ({event.detail})" if event.detail else ""
    print(msg, file=sys.stderr, flush=True)


@dataclass
class BuildTimes:
    """Wall seconds per stage of one build, in the order the stages ran."""

    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return float(sum(self.seconds.values()))

    def __str__(self) -> str:
        parts = ", ".join(f"{k} {v:.1f}" for k, v in self.seconds.items())
        return f"{parts}; total {self.total:.1f}"


class _Stages:
    """Times each stage and reports it to the progress callback."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress or (lambda event: None)
        self.times = BuildTimes()

    @contextmanager
    def stage(self, name: str, detail: str = "") -> Iterator[None]:
        self.progress(StageEvent(name, "start", detail=detail))
        t = time.perf_counter()
        yield
        self.times.seconds[name] = time.perf_counter() - t
        self.progress(StageEvent(name, "done", self.times.seconds[name]))


def _step_log(progress: Progress | None) -> Callable[[str, float], None]:
    """Report a decoder step as a finished sub-stage ``decoders: <step>``."""

    def log(step: str, seconds: float) -> None:
        if progress is not None:
            progress(StageEvent(f"decoders: {step}", "done", seconds))

    return log


def _start_decoders(
    sp: SpatialPooler, table: TrainingTable, kinds: tuple[str, ...], progress: Progress | None
) -> concurrent.futures.Future[dict[str, NDArray]] | None:
    """train_decoders on a daemon thread, or None when there is nothing to fit or numba's
    threading layer is not safe for two threads launching parallel kernels (workqueue)."""
    if not kinds:
        return None
    try:
        layer = numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet: the layer is unknown
        return None
    if layer not in ("omp", "tbb"):
        return None
    view = SimpleNamespace(sp=sp, table=table)  # what train_decoders reads of a bundle
    future: concurrent.futures.Future[dict[str, NDArray]] = concurrent.futures.Future()

    def run() -> None:
        try:
            future.set_result(train_decoders(view, kinds, log=_step_log(progress)))
        except BaseException as exc:  # handed to the caller by future.result()
            future.set_exception(exc)

    threading.Thread(target=run, name="sdrindex-decoders", daemon=True).start()
    return future


def decoder_kinds(decoders: str | Iterable[str] | None) -> tuple[str, ...]:
    """The decoder kinds a ``decoders=`` argument names (a :data:`DECODER_SETS` shorthand,
    kinds, or None); :class:`ParameterError` for an unknown one."""
    if decoders is None:
        return ()
    if isinstance(decoders, str):
        if decoders not in DECODER_SETS:
            raise ParameterError(
                f"decoders must be one of {sorted(DECODER_SETS)} or a list of kinds, "
                f"got {decoders!r}"
            )
        return DECODER_SETS[decoders]
    kinds = tuple(decoders)
    unknown = sorted(set(kinds) - set(DECODER_KINDS))
    if unknown:
        raise ParameterError(f"unknown decoder kinds {unknown}; choose from {DECODER_KINDS}")
    return kinds


def _as_images(images: ArrayLike) -> NDArray[np.uint8]:
    arr = np.asarray(images)
    if arr.ndim != 3 or arr.shape[0] == 0:
        raise ParameterError(
            f"images must be a non-empty array of shape (n, height, width), got {arr.shape}"
        )
    if arr.dtype != np.uint8:
        raise ParameterError(f"images must be uint8 (0-255), got {arr.dtype}")
    return arr


def _encoder(
    image_shape: tuple[int, ...],
    n_inputs: int,
    threshold: float | str,
    preprocess: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The bundle's encoder configuration, checked against the SP's number of inputs."""
    encoder = encoder_config(threshold, preprocess)  # checks the preprocessing
    size = input_size(image_shape, preprocess)
    if size != n_inputs:
        raise ParameterError(
            f"the SP expects {n_inputs} inputs but the images give {size} (pixels x planes); "
            "set inputDimensions in the SP config to the image shape (with the number of "
            "planes last)"
        )
    return encoder


def _index_and_decoders(
    bundle: Bundle,
    sdrs: NDArray[np.uint8],
    kinds: tuple[str, ...],
    stages: _Stages,
    progress: Progress | None,
) -> None:
    """The index stage, then the decoder stage (fitted during the index when it can be)."""
    sp, index = bundle.sp, bundle.index
    # The decoders read only the SP and the table: they fit on a second thread while the
    # index builds (its k-NN graph in the worker process), when numba may run parallel
    # kernels from two threads at once.
    decoding = None
    if index.backend != "exact":  # the exact index builds in moments: nothing to overlap
        decoding = _start_decoders(sp, bundle.table, kinds, progress)
    try:
        with stages.stage("index", index.backend):
            index.fit(sdrs, sp.n_columns)
            # One single and one batch query compile the search kernels now, while the
            # decoders may still be fitting, and cache them on disk for whoever serves the
            # bundle next (a cold first query costs ~10 s).
            index.query(sdrs[:1])
            index.query(sdrs[:2])
    finally:
        if decoding is not None:
            concurrent.futures.wait([decoding])
    if kinds:
        detail = ", ".join(kinds) + (" (fitted while the index built)" if decoding else "")
        with stages.stage("decoders", detail):
            if decoding is not None:
                bundle.decoder = decoding.result()
            else:
                bundle.decoder = train_decoders(bundle, kinds, log=_step_log(progress))


def _check_counts(epochs: int, learn_limit: int | None) -> None:
    if int(epochs) < 1:
        raise ParameterError(f"epochs must be >= 1, got {epochs}")
    if learn_limit is not None and (isinstance(learn_limit, bool) or int(learn_limit) < 1):
        raise ParameterError(
            f"learn_limit must be an integer >= 1 (None: all), got {learn_limit!r}"
        )


def build_bundle(
    images: ArrayLike,
    labels: ArrayLike | None = None,
    *,
    sp: SpatialPooler,
    threshold: float | str = 128,
    preprocess: Mapping[str, Any] | None = None,
    epochs: int = 1,
    learn_limit: int | None = None,
    backend: str = "nndescent",
    index_params: Mapping[str, Any] | None = None,
    decoders: str | Iterable[str] | None = None,
    dataset: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
    times: BuildTimes | None = None,
) -> Bundle:
    """Run the whole pipeline on ``images`` and return the (unsaved) bundle.

    Parameters
    ----------
    images : array of shape (n, height, width), uint8
        The training images; ``height * width`` must equal ``sp.n_inputs``.
    labels : array of shape (n,), optional
        Integer labels (kept in the table; needed for the logistic readout).
    sp : SpatialPooler
        An unfitted SP with the parameters to learn (see :mod:`sdrindex.sp.presets`).
    threshold : int, float or "mean"
        The binarisation rule (:func:`sdrindex.datasets.binarize`).
    preprocess : mapping, optional
        Deskew, blur and thermometer planes before the SP (:mod:`sdrindex.preprocess`;
        ``sdrindex.sp.preprocess_for(preset)``); stored in the bundle's encoder, so queries
        get the same.
    epochs : int
        Passes of SP learning over the images.
    learn_limit : int, optional
        The SP learns on the first ``learn_limit`` images only (all by default); every
        image is still encoded, stored and indexed. :func:`sdrindex.sp.learn_limit_for`
        gives a preset's (measured: learning on 15,000 MNIST digits gives the codes of
        learning on all 60,000 at a quarter of the cost; README, issue 12).
    backend : {"nndescent", "exact"}
        The index backend.
    index_params : mapping, optional
        Keyword parameters of the backend (e.g. ``n_neighbors``).
    decoders : {"none", "default", "all"} or list of kinds, optional
        What the decoder stage fits: kinds ``calibration``, ``ridge``, ``mlp``, ``logistic``
        (``logistic`` only with labels). None or "none" skips the stage.
    dataset : mapping, optional
        Provenance stored in the manifest (``source``, ``description``...).
    progress : callable, optional
        Receives a :class:`StageEvent` as each stage starts and ends
        (:func:`stderr_progress` prints them).
    times : BuildTimes, optional
        Filled with each stage's wall seconds.

    Returns
    -------
    Bundle
        Call :meth:`Bundle.save` to write it.
    """
    _check_counts(epochs, learn_limit)
    kinds = decoder_kinds(decoders)
    arr = _as_images(images)
    n = arr.shape[0]
    labels_arr = check_labels_arg(labels, n)
    encoder = _encoder(arr.shape[1:], sp.n_inputs, threshold, preprocess)
    stages = _Stages(progress)
    index = SDRIndex(backend, **dict(index_params or {}))
    # the later stages' kernels compile in another process while the SP learns on one core
    warm = WarmUp(sp.get_params(), backend, index_params, kinds) if n >= WARM_UP_FROM else None
    index.prepare_fit(sp.n_columns, n)  # a backend's own background work, if it has any
    try:
        with stages.stage("binarize"):
            X = encode_input(arr, encoder)
        n_learn = n if learn_limit is None else min(n, int(learn_limit))
        with stages.stage("learn SP", f"{n_learn} of {n} images, {epochs} epoch(s)"):
            sp.fit(X[:n_learn], epochs=int(epochs))
        with stages.stage("encode"):
            sdrs = sp.transform(X, packed=True)
        with stages.stage("table"):
            table = TrainingTable(arr, sdrs, sp.n_columns, labels=labels_arr)
        bundle = Bundle(
            sp=sp,
            table=table,
            index=index,
            encoder=encoder,
            dataset={"n_items": n, "labels": labels_arr is not None, "sp_learned_on": n_learn}
            | dict(dataset or {}),
        )
        _index_and_decoders(bundle, sdrs, kinds, stages, progress)
    except BaseException:
        index.cancel_fit()  # no background work outlives a failed build
        if warm is not None:
            warm.close()
        raise
    if warm is not None:  # it also caches what serving the new bundle runs: let it end
        warm.finish(WARM_UP_WAIT)
    if times is not None:
        times.seconds.update(stages.times.seconds)
    return bundle
