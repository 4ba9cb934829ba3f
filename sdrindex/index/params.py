"""The index's parameters: their defaults and their checks (shared by every backend).

An index stores all of them (``index.json``'s ``params``) whichever backend it uses; the
``exact`` backend ignores them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ParameterError

__all__ = ["NNDESCENT_DEFAULTS", "check_params"]

#: Defaults of the ``nndescent`` backend, chosen on Spatial Pooler SDRs of MNIST (the
#: project's SP presets, 60k training images stored, 2k test images as queries; recall@10
#: counting ties; QPS ratio = single queries on one thread against the exact backend's in
#: the same run, 2-core machine; 2026-11-28):
#:
#: - ``sdrindex-mnist`` (6241 columns, 624 active): recall 0.998, 10x, graph built in 6-7 s
#:   (20 neighbours; 30 gave 0.999 in 10-11 s);
#: - ``forum-global`` (1369 columns, 8 active): recall 0.9996, 2.2-2.9x;
#: - ``forum-local`` (900 columns, ~37 active): recall 0.992, 1.8-3.3x (20 neighbours and
#:   ef 10 gave 0.971: hence the few-active-bits rule, ``_FEW_ACTIVE``);
#: - 1M = 60k + noisy copies: forum-global 0.997 and 28x; htmcore-mnist (1M distinct)
#:   0.992 and ~20x with the then automatic (ef, epsilon) = (32, 0.2) (0.87 with (10, 0.1));
#:   sdrindex-mnist (2026-11-30): 0.993 at ~1,070 QPS single with the automatic (126, 0.05),
#:   0.997 at ~300 with (32, 0.2) (``_auto_search``; the frontier: scripts/bench_search.py).
#:
#: diversify_prob 0.5 keeps half the k-NN edges diversification would drop: 1.0 cost
#: htmcore-mnist recall (0.976), 0.0 bought nothing. epsilon widens the search only for
#: queries with many active bits (see ``_graph_one``). n_neighbors / ef / epsilon None:
#: chosen from the number of distinct SDRs and their mean active bits
#: (``_graph_neighbors``, ``_auto_search``). Start vertices share a query bit; more of them
#: (n_entry_points) cost little and rescue queries whose answer sits in a cluster the graph
#: barely links to. n_trees / n_iters None: 6 min-hash orders / max(5, round(log2 n)) rounds,
#: 5 above 100,000 SDRs (``_nndescent.nn_descent``).
NNDESCENT_DEFAULTS: dict[str, Any] = {
    "n_neighbors": None,
    "n_trees": None,
    "n_iters": None,
    "diversify_prob": 0.5,
    "pruning_degree_multiplier": 1.5,
    "ef": None,
    "epsilon": None,
    "n_entry_points": 128,
    "entries_per_bit": 4,
    "metric": "bit_jaccard",
    "random_state": 0,
    "n_jobs": None,
}


def check_params(params: dict[str, Any]) -> None:
    """Raise :class:`ParameterError` naming the first parameter out of its range."""

    def need(name: str, ok: bool, rule: str) -> None:
        if not ok:
            raise ParameterError(f"{name} must be {rule}, got {params[name]!r}")

    def is_int(v: Any) -> bool:
        return isinstance(v, int | np.integer) and not isinstance(v, bool)

    def is_num(v: Any) -> bool:
        return isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool)

    p = params
    need(
        "n_neighbors",
        p["n_neighbors"] is None or (is_int(p["n_neighbors"]) and p["n_neighbors"] >= 2),
        "None or an integer >= 2",
    )
    need("n_trees", p["n_trees"] is None or (is_int(p["n_trees"]) and p["n_trees"] >= 1),
         "None or an integer >= 1")  # fmt: skip
    need("n_iters", p["n_iters"] is None or (is_int(p["n_iters"]) and p["n_iters"] >= 1),
         "None or an integer >= 1")  # fmt: skip
    need("diversify_prob", is_num(p["diversify_prob"]) and 0 <= p["diversify_prob"] <= 1,
         "a number in [0, 1]")  # fmt: skip
    need("pruning_degree_multiplier",
         is_num(p["pruning_degree_multiplier"]) and p["pruning_degree_multiplier"] > 0,
         "a number > 0")  # fmt: skip
    need("ef", p["ef"] is None or (is_int(p["ef"]) and p["ef"] >= 1),
         "None (automatic) or an integer >= 1")  # fmt: skip
    need("epsilon", p["epsilon"] is None or (is_num(p["epsilon"]) and p["epsilon"] >= 0),
         "None (automatic) or a number >= 0")  # fmt: skip
    need("n_entry_points", is_int(p["n_entry_points"]) and p["n_entry_points"] >= 1,
         "an integer >= 1")  # fmt: skip
    need("entries_per_bit", is_int(p["entries_per_bit"]) and p["entries_per_bit"] >= 1,
         "an integer >= 1")  # fmt: skip
    need("metric", p["metric"] in ("bit_jaccard", "bit_hamming"), "'bit_jaccard' or 'bit_hamming'")
    need("random_state", p["random_state"] is None or is_int(p["random_state"]),
         "None or an integer")  # fmt: skip
    need("n_jobs", p["n_jobs"] is None or is_int(p["n_jobs"]), "None or an integer")
