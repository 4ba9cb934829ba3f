"""The Spatial Pooler's inference and back-projection as numba kernels.

Inference reads an :class:`~._structs.InferModel` (the plan built once per learned state)
and never changes the state. Small batches run on the calling thread (:func:`infer_small`,
no thread-pool wake-up: on a shared machine that costs milliseconds); larger ones as
ranges of rows on threads (``sdrindex._threads.run_ranges``), the same kernel on each.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ._kernels import inhibit_global, inhibit_global_counts, overlaps_from_bits
from ._local import inhibit_local

_NJIT = {"cache": True, "nogil": True}

#: Rows per range run on a thread (and the most rows run on the calling thread alone).
CHUNK = 256

#: ``path`` arguments: choose by the cost model, or force one overlap method.
PATH_AUTO, PATH_BITS, PATH_CSR = 0, 1, 2


@nb.njit(**_NJIT)
def connected_csr(pot_ptr, pot_idx, perm, conn_thr, n_inputs):
    """Input-major CSR of connected synapses: input i -> columns with perm >= threshold."""
    n_cols = pot_ptr.shape[0] - 1
    counts = np.zeros(n_inputs + 1, np.int64)
    for c in range(n_cols):
        for k in range(pot_ptr[c], pot_ptr[c + 1]):
            if perm[k] >= conn_thr:
                counts[pot_idx[k] + 1] += 1
    for i in range(n_inputs):
        counts[i + 1] += counts[i]
    cols = np.empty(counts[n_inputs], np.int32)
    fill = counts[:-1].copy()
    for c in range(n_cols):
        for k in range(pot_ptr[c], pot_ptr[c + 1]):
            i = pot_idx[k]
            if perm[k] >= conn_thr:
                cols[fill[i]] = c
                fill[i] += 1
    return counts, cols


@nb.njit(**_NJIT)
def use_bits_path(X, model, path):
    """Cost model: bits_cost < csr_cost_per_input x mean active inputs of the first rows.

    Both paths give the same overlaps; this only picks the faster one for the batch.
    """
    if path != PATH_AUTO:
        return path == PATH_BITS
    n = min(X.shape[0], CHUNK)
    if n == 0:
        return False
    total = 0
    for t in range(n):
        for i in range(X.shape[1]):
            total += X[t, i] != 0
    active_inputs = float(total) / n
    return model.bits_cost < model.csr_cost_per_input * active_inputs


@nb.njit(**_NJIT)
def infer_small(X, handle, use_boost, path, out_packed, local):
    """NuPIC's ``compute(x, learn=False)`` on every row of ``X`` on the calling thread (no
    state change); ``handle`` is an :class:`~._structs.InferHandle` (model and boost).

    Overlaps by popcount over the columns' connected bits or by scattering the active
    inputs' connected columns (input-major CSR), as :func:`use_bits_path` picks; raw (NuPIC)
    or multiplied by the boost factors (htm.core, ``use_boost``); global or local
    inhibition; winners written as packed bits into ``out_packed``. Larger batches run
    this on ranges of rows on threads. One kernel, not a per-range kernel under it: numba
    re-optimises a callee's code in every caller, 2 s of compile on a cold cache.

    ``local`` is None under global inhibition, else True: numba prunes the ``local is
    None`` branches by type, so a global SP compiles no local inhibition (as
    :func:`~._kernels.learn_steps`).
    """
    model = handle.model
    boost = handle.boost
    use_bits = use_bits_path(X, model, path)
    n_in = X.shape[1]
    n_cols = model.conn_bits.shape[1]
    # np.empty, not np.zeros: every buffer is cleared where it is used (counts and xbits
    # per row, acc, hist and flag by the kernels), and each np.zeros dtype compiles its own
    # fill (0.2 s apiece on a cold cache)
    counts = np.empty(n_cols, np.int32)
    vals = np.empty(n_cols, np.float32)
    hist = np.empty(n_in + 2, np.int64)
    winners = np.empty(n_cols, np.int64)
    flag = np.empty(n_cols, np.bool_)
    xbits = np.empty(model.conn_bits.shape[0], np.uint64)
    acc = np.empty(n_cols, np.uint64)
    for t in range(X.shape[0]):
        x = X[t]
        if use_bits:
            xbits[:] = 0
            for i in range(n_in):
                if x[i] != 0:
                    xbits[i >> 6] |= np.uint64(1) << np.uint64(i & 63)
            overlaps_from_bits(model.conn_bits, xbits, acc, counts)
        else:
            counts[:] = 0
            for i in range(n_in):
                if x[i] != 0:
                    for k in range(model.cptr[i], model.cptr[i + 1]):
                        counts[model.ccols[k]] += 1
        if use_boost:
            for c in range(n_cols):
                vals[c] = boost[c] * np.float32(counts[c])
            if local is None or model.global_mode:
                m = inhibit_global(vals, model.num_active, model.stim, winners)
            else:
                m = inhibit_local(
                    vals, model.density, model.stim, model.nb_ptr, model.nb_idx, winners, flag
                )
        elif local is None or model.global_mode:
            m = inhibit_global_counts(counts, model.num_active, model.stim, hist, winners)
        else:
            m = inhibit_local(
                counts, model.density, model.stim, model.nb_ptr, model.nb_idx, winners, flag
            )
        for w in range(m):
            c = winners[w]
            out_packed[t, c >> 3] |= np.uint8(0x80 >> (c & 7))


@nb.njit(**_NJIT)
def back_project(packed, n_cols, weights, out):
    """out[s, i] += sum over active columns c of sample s of weights[c, i] (out zeroed)."""
    n_in = weights.shape[1]
    for s in range(packed.shape[0]):
        for c in range(n_cols):
            if packed[s, c >> 3] & (0x80 >> (c & 7)):
                for i in range(n_in):
                    out[s, i] += weights[c, i]
