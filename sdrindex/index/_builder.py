"""GraphBuilder: a worker process that compiles pynndescent ahead of the graph build."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._graph_build import knn_graph

__all__ = ["GraphBuilder"]


class GraphBuilder:
    """A worker process that compiles pynndescent's NN-descent ahead of the graph build.

    pynndescent's ``nn_descent`` cannot use numba's on-disk cache (it asks numba for the
    thread count inside compiled code, a "dynamic global"), so every process that builds a
    graph compiles it first: ~30 s here, more than the build itself (~10 s for 60k MNIST
    SDRs). ``sdrindex build`` starts one of these before learning the SP: the worker
    (``python -m sdrindex.index._worker``) compiles on the other core while the SP learns
    and encodes (a thread would not do: the compiler holds the GIL, which the SP's boosting
    step takes 60,000 times), then builds the k-NN graph. The SDRs and the graph travel as
    ``.npy`` files in a private temporary directory. If the worker fails in any way,
    :meth:`knn_graph` builds in this process instead.
    """

    def __init__(self, n_bits: int, metric: str) -> None:
        import subprocess
        import sys
        import tempfile

        self._tmp = tempfile.TemporaryDirectory(prefix="sdrindex-graph-")
        self.compile_seconds: float | None = None
        self._proc: subprocess.Popen[str] | None = subprocess.Popen(
            [sys.executable, "-m", "sdrindex.index._worker", str(int(n_bits)), metric],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )

    def knn_graph(self, distinct: NDArray[np.uint8], params: dict[str, Any]) -> NDArray[np.int32]:
        """The k-NN graph from the worker (or from this process if the worker failed)."""
        proc = self._proc
        try:
            if proc is None or proc.stdin is None or proc.stdout is None:
                raise OSError("no worker")
            src, dst = Path(self._tmp.name, "sdrs.npy"), Path(self._tmp.name, "graph.npy")
            np.save(src, distinct, allow_pickle=False)
            proc.stdin.write(json.dumps({"input": str(src), "output": str(dst), "params": params}))
            proc.stdin.write("\n")
            proc.stdin.flush()
            reply = json.loads(proc.stdout.readline() or "{}")
            if not reply.get("ok"):
                raise OSError(reply.get("error", "the worker stopped"))
            self.compile_seconds = reply.get("compile_seconds")
            graph = np.load(dst, allow_pickle=False)
            if graph.dtype != np.int32 or graph.shape[0] != distinct.shape[0]:
                raise OSError(f"unexpected graph {graph.dtype} {graph.shape}")
            return graph
        except (OSError, ValueError):
            return knn_graph(distinct, params)
        finally:
            self.close()

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            for stream in (proc.stdin, proc.stdout):
                if stream is not None:
                    try:
                        stream.close()
                    except OSError:  # a dead worker's stdin: the unsent request is moot
                        pass
        self._tmp.cleanup()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
