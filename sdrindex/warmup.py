"""Compile a build's kernels ahead, in another process, on the core the SP leaves idle.

On a cold numba cache the kernels of the stages after SP learning (SP inference, the
decoders, NN-descent, the search graph's build and the searches) compile for tens of
seconds, while SP learning keeps one core busy and leaves the other idle.
:class:`WarmUp` starts ``python -m sdrindex.warmup`` at the start of a build: it runs those
stages on a few thousand synthetic images with the same types as the real build (an SP of the
same parameters, initialised but not learned; its SDRs; a small table; the same index
backend), so numba writes every kernel to its disk cache, and the build loads them from
there when it gets to them. A kernel the build reaches first it compiles itself, as
before: the warm-up only ever saves time. With a warm cache the process only loads.

It then saves that small bundle, loads it back memory-mapped and runs what a server,
``sdrindex query`` and ``sdrindex evaluate`` run on a bundle (single and batch queries of
both backends, every reconstruction method, the label readouts), so a process serving the
new bundle finds those kernels in the cache too (``sdrindex warm`` does the same for an
existing bundle's SP).

``python -m sdrindex.warmup SPEC`` (SPEC: JSON with ``sp`` (the SP's parameters),
``backend``, ``index_params`` and ``decoders`` (kinds)) is the process; it exits 0 when
done. It never writes anything but numba's cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["WarmUp", "warm_up", "WARM_UP_FROM", "WARM_UP_WAIT"]

#: Synthetic images the warm-up runs: above the graph backend's brute-force size, so its
#: NN-descent path compiles too.
N_WARM_IMAGES = 2500
#: Builds of fewer images start no warm-up: they learn too briefly for it to pay.
WARM_UP_FROM = 10_000
#: How long a finished build waits for its warm-up (~45 s on a cold cache, ~10 s warm).
WARM_UP_WAIT = 120.0


def warm_up(
    sp_params: Mapping[str, Any],
    backend: str = "nndescent",
    index_params: Mapping[str, Any] | None = None,
    decoders: Iterable[str] = (),
) -> None:
    """Run a build's later stages and a served bundle's paths on synthetic images.

    Compiles (or loads from numba's cache) every kernel they use: SP inference, the
    decoders, the index build, then, on the result saved and loaded back memory-mapped as a
    server loads it, single and batch queries of both index backends, every
    reconstruction method and both label readouts.

    Parameters
    ----------
    sp_params : mapping
        ``SpatialPooler.get_params()`` of the build's SP.
    backend, index_params :
        The build's index backend and its parameters.
    decoders : iterable of str
        The decoder kinds the build fits.
    """
    import tempfile

    from sdrindex.bundle import Bundle
    from sdrindex.decoders import train_decoders
    from sdrindex.index import SDRIndex
    from sdrindex.preprocess import encode_input, encoder_config
    from sdrindex.sp import SpatialPooler
    from sdrindex.table import TrainingTable

    sp = SpatialPooler(**dict(sp_params))
    rng = np.random.default_rng(0)
    shape = tuple(int(d) for d in sp.input_dimensions)
    prep = None
    if len(shape) == 3:  # thermometer planes last (sdrindex.preprocess), on 2-D images
        prep = {"planes": np.linspace(32, 224, shape[2]).tolist()}
        shape = shape[:2]
    elif len(shape) != 2:  # the pipeline's images are 2-D
        shape = (1, sp.n_inputs)
    encoder = encoder_config(128, prep)
    images = (rng.random((N_WARM_IMAGES, *shape)) < 0.2).astype(np.uint8) * 255
    X = encode_input(images, encoder)
    sp.compute(X[0], learn=False)  # initialises the state without learning
    sdrs = sp.transform(X, packed=True)
    labels = np.arange(N_WARM_IMAGES, dtype=np.int64) % 10
    table = TrainingTable(images, sdrs, sp.n_columns, labels=labels)
    bundle = Bundle(
        sp=sp,
        table=table,
        index=SDRIndex(backend, **dict(index_params or {})),
        encoder=encoder,
        dataset={"n_items": N_WARM_IMAGES, "labels": True},
    )
    kinds = tuple(decoders)
    if kinds:
        bundle.decoder = train_decoders(bundle, kinds)
    bundle.index.fit(sdrs, sp.n_columns)
    bundle.index.query(sdrs[:1])
    bundle.index.query(sdrs[:2])
    with tempfile.TemporaryDirectory(prefix="sdrindex-warmup-") as tmp:
        bundle.save(Path(tmp) / "bundle")
        _serve_paths(Bundle.load(Path(tmp) / "bundle"), images[:8])


def _serve_paths(bundle: Any, images: NDArray[np.uint8]) -> None:
    """What a server, ``query`` and ``evaluate`` run on a loaded bundle, single and batch."""
    from sdrindex.evaluate.methods import sdr_method_rows
    from sdrindex.index import SDRIndex
    from sdrindex.labels import make_labeler
    from sdrindex.reconstruct import make_reconstructor
    from sdrindex.sdr import overlap

    packed = bundle.encode(images)
    bundle.encode(images[:1])
    overlap(packed[:1], packed)  # the service's first parallel kernel (threading layer)
    exact = SDRIndex("exact").fit(np.asarray(bundle.table.sdrs), bundle.sp.n_columns)
    decoder = bundle.decoder or {}
    default_model = "ridge" if "ridge_coef" in decoder else "mlp"
    # without stored decoders the readers would fit them on demand: not a serving path
    rows = [row for row in sdr_method_rows(10, decoder, default_model) if row[1] != "decoder"
            or decoder]  # fmt: skip
    labelers = ["knn"] + (["logistic"] if "logistic_coef" in decoder else [])
    for sdrs in (packed[:1], packed):
        for index in (bundle.index, exact):
            index.query(sdrs, 10)
        for _, name, params in rows:
            make_reconstructor(name, bundle, **params).reconstruct(sdrs)
        for name in labelers:
            make_labeler(name, bundle).predict(sdrs)
    for index in (bundle.index, exact):  # POST /v1/items: queries search the buffer too
        index.add(packed[:2])
        index.query(packed[:1], 10)
        index.query(packed, 10)


class WarmUp:
    """The warm-up process of one build; :meth:`close` ends it (it never outlives the build).

    Parameters are those of :func:`warm_up`. Nothing is started when numba's JIT is
    disabled (nothing to compile) or the process cannot start (the build then compiles
    everything itself).
    """

    def __init__(
        self,
        sp_params: Mapping[str, Any],
        backend: str,
        index_params: Mapping[str, Any] | None,
        decoders: Iterable[str],
    ) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        if os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0"):
            return
        spec = {
            "sp": _jsonable(dict(sp_params)),
            "backend": backend,
            "index_params": _jsonable(dict(index_params or {})),
            "decoders": list(decoders),
        }
        env = dict(os.environ)
        # the warm-up's BLAS calls are tiny: one thread leaves the builder its cores
        env.setdefault("OPENBLAS_NUM_THREADS", "1")
        env.setdefault("OMP_NUM_THREADS", "1")
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "sdrindex.warmup", json.dumps(spec)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
            )
        except OSError:
            self._proc = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the process to end by itself; its exit code (None when none started)."""
        return None if self._proc is None else self._proc.wait(timeout)

    def finish(self, timeout: float) -> int | None:
        """Let the process end by itself for up to ``timeout`` s, then stop it; its exit code."""
        try:
            self.wait(timeout)
        except subprocess.TimeoutExpired:
            pass
        return self.close()

    def close(self) -> int | None:
        """Stop the process if it still runs; its exit code (None when none was started)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.kill()
        return proc.wait()


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    sp = dict(spec["sp"])
    for key, value in sp.items():  # the SP takes its dimensions as tuples
        if isinstance(value, list):
            sp[key] = tuple(value)
    warm_up(sp, spec["backend"], spec["index_params"], spec["decoders"])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
