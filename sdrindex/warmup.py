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
from typing import Any

import numpy as np

__all__ = ["WarmUp", "warm_up"]

#: Synthetic images the warm-up runs: above the graph backend's brute-force size, so its
#: NN-descent path compiles too.
N_WARM_IMAGES = 2500


def warm_up(
    sp_params: Mapping[str, Any],
    backend: str = "nndescent",
    index_params: Mapping[str, Any] | None = None,
    decoders: Iterable[str] = (),
) -> None:
    """Run the post-learning stages of a build on synthetic images (compiles their kernels).

    Parameters
    ----------
    sp_params : mapping
        ``SpatialPooler.get_params()`` of the build's SP.
    backend, index_params :
        The build's index backend and its parameters.
    decoders : iterable of str
        The decoder kinds the build fits.
    """
    from types import SimpleNamespace

    from sdrindex.decoders import train_decoders
    from sdrindex.index import SDRIndex
    from sdrindex.sp import SpatialPooler
    from sdrindex.table import TrainingTable

    sp = SpatialPooler(**dict(sp_params))
    rng = np.random.default_rng(0)
    shape = tuple(int(d) for d in sp.input_dimensions)
    if len(shape) != 2:  # the pipeline's images are 2-D
        shape = (1, sp.n_inputs)
    images = (rng.random((N_WARM_IMAGES, *shape)) < 0.2).astype(np.uint8) * 255
    X = (images >= 128).astype(np.uint8).reshape(N_WARM_IMAGES, -1)
    sp.compute(X[0], learn=False)  # initialises the state without learning
    sdrs = sp.transform(X, packed=True)
    labels = np.arange(N_WARM_IMAGES, dtype=np.int64) % 10
    kinds = tuple(decoders)
    if kinds:
        table = TrainingTable(images, sdrs, sp.n_columns, labels=labels)
        train_decoders(SimpleNamespace(sp=sp, table=table), kinds)
    index = SDRIndex(backend, **dict(index_params or {}))
    index.fit(sdrs, sp.n_columns)
    index.query(sdrs[:1])
    index.query(sdrs[:2])


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
