"""Data a ``SpatialPooler`` derives from its parameters and state, kept between calls.

Nothing here is saved or compared: :meth:`SpatialPooler._kernel_params` replaces the whole
cache when a parameter changes, :meth:`SpatialPooler._state_changed` drops what depends on
the learned state (the inference plan, back-projection weights, dense permanences).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from ._structs import InferHandle, InferModel, Learner, Neighbours, Params, Work

__all__ = ["Cache"]


class Cache:
    """Data derived from the parameters and the state: rebuilt on demand, never saved."""

    __slots__ = (
        "key",
        "params",
        "n_columns",
        "pools_checked",
        "neighbours",
        "work",
        "plan",
        "plan_radius",
        "infer_handle",
        "infer_boost",
        "learner",
        "learner_arrays",
        "learner_counters",
        "weights",
        "perm_dense",
    )

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.params: Params | None = None
        self.n_columns = 0
        self.pools_checked: object = None
        self.neighbours = Neighbours(-1, np.zeros(1, np.int64), np.zeros(0, np.int32))
        self.work: Work | None = None
        self.plan: InferModel | None = None
        self.plan_radius = -1
        self.infer_handle: InferHandle | None = None
        self.infer_boost: NDArray[np.float32] | None = None
        self.learner: Learner | None = None
        self.learner_arrays: tuple = ()
        self.learner_counters = np.zeros(3, np.int64)
        self.weights: dict[bool, NDArray[np.float32]] = {}
        self.perm_dense: NDArray[np.float32] | None = None

    def __reduce__(self):
        # Copies and pickles of the estimator start with an empty cache: everything here is
        # derived, and numba's StructRef handles cannot be copied.
        return (Cache, ())
