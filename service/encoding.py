"""Images -> SDRs for single queries, without the SP's per-call set-up.

``SpatialPooler.transform`` rebuilds the input-major table of connected synapses on every
call (about 1 ms for 79x79 columns, 20 times the inference of one image). The table only
changes when the SP learns, and a served SP never learns, so :class:`ServingEncoder`
builds it once and then calls the same inference kernel with the same arguments as
``SpatialPooler._infer``. It is checked against ``Bundle.encode`` on stored images when a
bundle is loaded, and any difference (or a change in the SP's internals) makes it fall
back to ``Bundle.encode``: the answers are the library's either way.

This belongs in ``SpatialPooler`` itself (a cache invalidated by learning); when it is
there, this module reduces to ``bundle.encode``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from numpy.typing import NDArray

log = logging.getLogger("service")


class ServingEncoder:
    """``bundle.encode`` with the SP's inference tables computed once."""

    def __init__(self, bundle: Any) -> None:
        self.bundle = bundle
        self.fast = False
        try:
            self._setup()
            self.fast = True
        except Exception as exc:  # noqa: BLE001 - the library path always works
            log.info("serving encoder: using Bundle.encode (%s)", exc)

    def _setup(self) -> None:
        from sdrindex import _sp_kernels as K
        from sdrindex import sp as sp_module

        sp = self.bundle.sp
        self._K = K
        n_col = int(sp.n_columns)
        fpar = sp._fpar()
        self._cptr, self._ccols = K.connected_csr(
            sp._perm_data, sp._pot_ptr, sp._pot_idx, fpar[2], sp.n_inputs
        )
        radius = int(sp.inhibition_radius_)
        col_dims = sp._col_dims()
        self._density = float(
            K.inhibition_density(
                float(sp.local_area_density),
                int(sp.num_active_columns_per_inh_area),
                radius,
                len(col_dims),
                n_col,
            )
        )
        self._global = bool(sp.global_inhibition) or radius > max(col_dims)
        if self._global:
            self._nb_ptr, self._nb_idx = np.zeros(1, np.int64), np.zeros(0, np.int32)
        else:
            self._nb_ptr, self._nb_idx = K.neighbor_table(
                radius, np.asarray(col_dims, np.int64), bool(sp.wrap_around)
            )
        self._bits_cost = sp._conn_bits.size / sp_module.BITS_SPEEDUP
        self._num_active = K.num_active_global(self._density, n_col)
        self._n_col = n_col
        self._n_inputs = int(sp.n_inputs)

    def _infer(self, X: NDArray[np.uint8]) -> NDArray[np.uint8]:
        K, sp = self._K, self.bundle.sp
        active_inputs = float(X[: min(len(X), 256)].sum(axis=1).mean()) if len(X) else 0.0
        csr_cost = 2.0 * active_inputs * len(self._ccols) / max(self._n_inputs, 1)
        out = np.zeros((X.shape[0], (self._n_col + 7) // 8), np.uint8)
        K.infer_batch(
            X,
            self._bits_cost < csr_cost,
            sp._conn_bits,
            self._cptr,
            self._ccols,
            self._n_col,
            sp.boost_factors_,
            False,
            self._density,
            self._num_active,
            float(sp.stimulus_threshold),
            self._global,
            self._nb_ptr,
            self._nb_idx,
            out,
        )
        return out

    def encode(self, images: NDArray[np.uint8]) -> NDArray[np.uint8]:
        """Images (n, H, W) uint8 -> packed SDRs, exactly as ``bundle.encode``."""
        if not self.fast:
            return self.bundle.encode(images)
        from sdrindex.datasets import binarize

        arr = np.asarray(images)
        if arr.ndim == 2:
            arr = arr[None]
        X = binarize(arr, self.bundle.threshold).reshape(arr.shape[0], -1)
        if X.shape[1] != self._n_inputs:
            return self.bundle.encode(images)  # let the library explain the mismatch
        return self._infer(np.ascontiguousarray(X, dtype=np.uint8))

    def check(self, images: NDArray[np.uint8]) -> bool:
        """Compare with ``bundle.encode``; on any difference fall back to it for good."""
        if not self.fast:
            return True
        try:
            same = np.array_equal(self.encode(images), self.bundle.encode(images))
        except Exception as exc:  # noqa: BLE001
            log.warning("serving encoder failed its check (%s); using Bundle.encode", exc)
            same = False
        if not same:
            log.warning("serving encoder differs from Bundle.encode; using Bundle.encode")
            self.fast = False
        return same
