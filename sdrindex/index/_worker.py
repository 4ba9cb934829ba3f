"""``python -m sdrindex.index._worker N_BITS METRIC``: the process of ``graph.GraphBuilder``.

Compiles pynndescent's NN-descent at once, then reads one JSON request from stdin
(``{"input": sdrs.npy, "output": graph.npy, "params": {...}}``), builds the k-NN graph of the
SDRs in ``input``, saves it to ``output`` and answers one JSON line on stdout.
"""

from __future__ import annotations

import json
import sys
import time


def main(argv: list[str]) -> int:
    n_bits, metric = int(argv[0]), argv[1]
    import numpy as np

    from sdrindex.index._graph_build import compile_nn_descent, knn_graph

    t = time.perf_counter()
    compile_nn_descent(n_bits, metric)
    compiled = time.perf_counter() - t
    line = sys.stdin.readline()
    if not line:
        return 0
    try:
        request = json.loads(line)
        sdrs = np.load(request["input"], allow_pickle=False)
        graph = knn_graph(sdrs, request["params"])
        np.save(request["output"], graph, allow_pickle=False)
        reply = {"ok": True, "compile_seconds": round(compiled, 2)}
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which falls back
        reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
