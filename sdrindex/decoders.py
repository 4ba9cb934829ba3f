"""Fitting what a bundle's ``decoder`` stores: the learned ways back and the label readout.

The pipeline's decoder stage (:func:`train_decoders`) runs these on the training table and
keeps the arrays (never pickled) in ``bundle.decoder``; the reconstructors in
:mod:`sdrindex.reconstruct` and the labelers in :mod:`sdrindex.labels` apply them, and fit
them on demand when a bundle lacks them (without touching the bundle).

- :func:`fit_backprojection`: the per-pixel affine calibration of the back-projection;
- :func:`train_decoder`: Ridge (closed form) or MLP decoder SDR -> image;
- :func:`fit_logistic`: the multinomial logistic readout SDR -> label.

Ridge and the logistic readout never build the dense (n, n_bits) design matrix: both work
from :func:`sdr_gram`, X^T X counted from the active bits (one Gram, shared by the two in
:func:`train_decoders`), and the logistic gradient is a pass over the active bits.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
from numpy.typing import NDArray

from sdrindex._threads import n_threads, run_ranges
from sdrindex.errors import ParameterError
from sdrindex.sdr import popcount64

__all__ = [
    "DECODER_KINDS",
    "train_decoders",
    "fit_backprojection",
    "train_decoder",
    "fit_logistic",
    "SDRGram",
    "sdr_gram",
    "ridge_from_gram",
]


def dense_sdrs(packed: NDArray[np.uint8], n_bits: int, dtype=np.float32) -> NDArray:
    """Packed SDRs -> dense (n, n_bits) array of ``dtype``."""
    return np.unpackbits(packed, axis=1, count=n_bits).astype(dtype, copy=False)


def csr_sdrs(packed: NDArray[np.uint8], n_bits: int):
    """Packed SDRs -> scipy CSR float32 matrix (n, n_bits)."""
    import scipy.sparse as sp

    from sdrindex.sdr import to_csr

    indptr, indices = to_csr(packed, n_bits)
    data = np.ones(indices.shape[0], np.float32)
    return sp.csr_matrix((data, indices, indptr), shape=(packed.shape[0], n_bits))


def design_matrix(packed: NDArray[np.uint8], n_bits: int):
    """Training matrix for scikit-learn: dense float32 (BLAS, several times faster than
    scipy's single-threaded sparse products) while it fits in ~2 GB, else CSR."""
    if packed.shape[0] * n_bits <= 5 * 10**8:
        return dense_sdrs(packed, n_bits, np.float32)
    return csr_sdrs(packed, n_bits)


# --------------------------------------------------------------------------- sparse Gram
# Linear fits on binary SDRs need only X^T X, X^T Y and the column sums. With ~10 % of
# 6,241 bits active, X^T X from bit-packed columns (AND + popcount, 64 rows a word) costs
# ~5 CPU-s on MNIST where the dense float32 product is a 4.7 TFLOP (minutes) job.


@numba.njit(cache=True, nogil=True)
def _bit_columns(packed, n_bits):
    """out[i, r // 64] bit (r % 64) = bit i of row r: the SDR matrix transposed, bit-packed."""
    n = packed.shape[0]
    out = np.zeros((n_bits, (n + 63) // 64), np.uint64)
    for r in range(n):
        w = r >> 6
        bit = np.uint64(1) << np.uint64(r & 63)
        for j in range(packed.shape[1]):
            byte = packed[r, j]
            if byte == 0:
                continue
            for t in range(8):
                if byte & (0x80 >> t):
                    out[8 * j + t, w] |= bit
    return out


@numba.njit(cache=True, nogil=True, inline="always")
def _and_count(a, b):
    """sum_w popcount(a[w] & b[w])."""
    acc = 0
    for w in range(a.shape[0]):
        acc += popcount64(a[w] & b[w])
    return acc


@numba.njit(cache=True, nogil=True)
def _gram_rows(cols, out, i0, i1):
    """out[i, j] = |col i AND col j| for i0 <= i < i1, j >= i (col j stays in L1 for the block)."""
    for j in range(i0, cols.shape[0]):
        cj = cols[j]
        for i in range(i0, min(i1, j + 1)):
            out[i, j] = _and_count(cols[i], cj)


@numba.njit(cache=True, parallel=True, nogil=True)
def _gram_upper(cols, out, block):
    """out[i, j] = |col i AND col j| for j >= i; blocks k and last-k pair up to even the work."""
    n = cols.shape[0]
    nb = (n + block - 1) // block
    for k in numba.prange((nb + 1) // 2):
        _gram_rows(cols, out, k * block, min(n, (k + 1) * block))
        k2 = nb - 1 - k
        if k2 != k:
            _gram_rows(cols, out, k2 * block, min(n, (k2 + 1) * block))


@numba.njit(cache=True, parallel=True, nogil=True)
def _scatter_rows(packed, values, part):
    """part[c, i] = sum of values[r] over the rows r of chunk c with bit i set."""
    n = packed.shape[0]
    n_chunks = part.shape[0]
    for c in numba.prange(n_chunks):
        acc = part[c]
        for r in range(c * n // n_chunks, (c + 1) * n // n_chunks):
            v = values[r]
            for j in range(packed.shape[1]):
                byte = packed[r, j]
                if byte == 0:
                    continue
                for t in range(8):
                    if byte & (0x80 >> t):
                        row = acc[8 * j + t]
                        for p in range(v.shape[0]):
                            row[p] += v[p]


@numba.njit(cache=True, parallel=True, nogil=True)
def _centred_upper(counts, col_counts, n, ridge, out):
    """out[i, j] = counts[i, j] - c_i c_j / n (+ ridge if i == j) for j >= i; 0 below."""
    for i in numba.prange(counts.shape[0]):
        ci = col_counts[i] / n
        for j in range(i):
            out[i, j] = 0.0
        for j in range(i, counts.shape[0]):
            out[i, j] = counts[i, j] - ci * col_counts[j]
        out[i, i] += ridge


@numba.njit(cache=True, nogil=True)
def _softmax_grad_rows(indptr, indices, W, b, y, lo, hi, part_w, part_b):
    """Rows lo..hi of ``softmax_grad``: adds X^T (P - T) into ``part_w``, (P - T) into
    ``part_b`` and returns the cross-entropy sum (X: the CSR (indptr, indices) of the
    active bits, P = softmax(x_r W + b), T the one-hot labels)."""
    n_classes = W.shape[1]
    s = np.empty(n_classes)
    loss = 0.0
    for r in range(lo, hi):
        for k in range(n_classes):
            s[k] = b[k]
        for a in range(indptr[r], indptr[r + 1]):
            i = indices[a]  # loaded once: the stores below might alias it
            for k in range(n_classes):
                s[k] += W[i, k]
        peak = s[0]
        for k in range(1, n_classes):
            peak = max(peak, s[k])
        total = 0.0
        for k in range(n_classes):
            s[k] = np.exp(s[k] - peak)
            total += s[k]
        loss += np.log(total) - np.log(s[y[r]])
        for k in range(n_classes):
            s[k] /= total
        s[y[r]] -= 1.0
        for k in range(n_classes):
            part_b[k] += s[k]
        for a in range(indptr[r], indptr[r + 1]):
            i = indices[a]
            for k in range(n_classes):
                part_w[i, k] += s[k]
    return loss


def softmax_grad(indptr, indices, W, b, y, grad_w, grad_b, n_chunks):
    """loss = sum_r CE(softmax(x_r W + b), y_r); grad_w = X^T (P - T); grad_b = sum_r (P - T)_r.

    X is the CSR (indptr, indices) of the active bits; returns the loss. ``n_chunks`` row
    blocks, on threads, sum into their own gradients, added in block order (the same sums
    whatever the threads' timing).
    """
    n = indptr.shape[0] - 1
    n_chunks = max(1, min(int(n_chunks), n))
    part_w = np.zeros((n_chunks, W.shape[0], W.shape[1]))
    part_b = np.zeros((n_chunks, W.shape[1]))
    loss = np.zeros(n_chunks)

    block = {c * n // n_chunks: c for c in range(n_chunks)}  # run_ranges' first rows

    def rows(lo: int, hi: int) -> None:
        c = block[lo]
        loss[c] = _softmax_grad_rows(indptr, indices, W, b, y, lo, hi, part_w[c], part_b[c])

    run_ranges(rows, n, n_chunks)
    for c in range(n_chunks):
        grad_w += part_w[c]
        grad_b += part_b[c]
    return float(loss.sum())


@dataclass(frozen=True)
class SDRGram:
    """The sufficient statistics of binary SDR rows X (n, n_bits) for the linear fits.

    ``counts`` is the upper triangle of X^T X (int32, the lower part undefined), ``col_counts``
    its diagonal (rows with each bit set), ``xty`` X^T V and ``v_sum`` the column sums of V
    for the values V given to :func:`sdr_gram` (int64: V are pixels or one-hot labels), or
    None.
    """

    n_rows: int
    counts: NDArray[np.int32]
    col_counts: NDArray[np.int64]
    xty: NDArray[np.int64] | None
    v_sum: NDArray[np.int64] | None

    def centred(self, ridge: float) -> NDArray[np.float64]:
        """X_c^T X_c + ridge I (X_c = X minus its column means), float64 (n_bits, n_bits).

        Only the upper triangle is filled (C order): its transpose is the lower triangle in
        Fortran order, which LAPACK factors in place (see :func:`solve_centred`).
        """
        out = np.empty(self.counts.shape, np.float64)
        _centred_upper(self.counts, self.col_counts, float(self.n_rows), float(ridge), out)
        return out


def sdr_gram(packed: NDArray[np.uint8], n_bits: int, values: NDArray | None = None) -> SDRGram:
    """X^T X, its diagonal and X^T ``values`` for packed SDRs X, from the active bits only.

    Parameters
    ----------
    packed : ndarray of shape (n, ceil(n_bits / 8)), uint8
    values : ndarray of shape (n, m), integer, optional

    Returns
    -------
    SDRGram
    """
    packed = np.ascontiguousarray(packed, dtype=np.uint8)
    cols = _bit_columns(packed, int(n_bits))
    counts = np.empty((n_bits, n_bits), np.int32)
    _gram_upper(cols, counts, 32)
    col_counts = np.diagonal(counts).astype(np.int64)
    xty = v_sum = None
    if values is not None:
        values = np.ascontiguousarray(values)
        v_sum = values.sum(axis=0, dtype=np.int64)
        # int32 partial sums vectorise twice as wide; int64 when a sum could overflow them
        big = values.shape[0] * max(int(np.abs(values).max(initial=0)), 1) >= 2**31
        part = np.zeros(
            (numba.get_num_threads(), packed.shape[1] * 8, values.shape[1]),
            np.int64 if big else np.int32,
        )
        _scatter_rows(packed, values, part)
        xty = part.sum(axis=0, dtype=np.int64)[:n_bits]
    return SDRGram(packed.shape[0], counts, col_counts, xty, v_sum)


def solve_centred(a_upper: NDArray[np.float64], b: NDArray[np.float64]) -> NDArray[np.float64]:
    """Solve A x = b for the SPD matrix whose upper triangle ``a_upper`` holds (overwritten)."""
    from scipy.linalg import cho_factor, cho_solve

    factor = cho_factor(a_upper.T, lower=True, overwrite_a=True, check_finite=False)
    return cho_solve(factor, b, overwrite_b=True, check_finite=False)


def ridge_from_gram(
    gram: SDRGram, alpha: float, scale: float = 1.0
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """sklearn's ``Ridge(alpha, fit_intercept=True)`` on (X, scale * V) from the statistics.

    (X_c^T X_c + alpha I) W = X_c^T V_c, with X_c^T X_c = X^T X - n mu mu^T and
    X_c^T V_c = X^T V - n mu vbar^T; the intercept is vbar - mu W.

    Returns
    -------
    coef : ndarray of shape (n_bits, m), float64
    intercept : ndarray of shape (m,), float64
    """
    if gram.xty is None or gram.v_sum is None:
        raise ParameterError("ridge_from_gram needs the statistics of sdr_gram(..., values)")
    n = float(gram.n_rows)
    mu = gram.col_counts / n
    vbar = gram.v_sum * (scale / n)
    rhs = gram.xty * scale - np.outer(gram.col_counts, vbar)
    coef = solve_centred(gram.centred(alpha), rhs)
    return coef, vbar - mu @ coef


def training_rows(bundle: Any, n: int | None, seed: int = 0) -> NDArray[np.int64]:
    """Row positions used for fitting: all rows, or ``n`` of them drawn without replacement."""
    total = len(bundle.table)
    if n is None or n >= total:
        return np.arange(total)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(total, size=int(n), replace=False))


def raw_backprojection(sp: Any, packed: NDArray[np.uint8], weighted: bool) -> NDArray[np.float32]:
    """Per-pixel sum over the active columns of connected synapses (or permanences).

    ``sp.inverse_transform`` on the packed rows: its weights are kept by the SP until
    learning changes them, so repeated calls cost only the kernel.
    """
    raw = sp.inverse_transform(np.ascontiguousarray(packed, dtype=np.uint8), weighted=weighted)
    dims = tuple(sp.input_dimensions)
    if len(dims) == 3:  # thermometer planes last (sdrindex.preprocess): one map per pixel
        raw = raw.reshape(raw.shape[0], -1, dims[2]).sum(axis=2)
    return raw


def max_normalise(raw: NDArray[np.float32]) -> NDArray[np.float32]:
    peak = raw.max(axis=1, keepdims=True)
    return raw / np.maximum(peak, 1e-12)


def fit_backprojection(
    bundle: Any, weighted: bool = False, n_rows: int | None = 10000, seed: int = 0
) -> dict[str, NDArray[np.float32]]:
    """Calibrate the back-projection rule on training rows; returns the arrays to store.

    For each pixel ``p`` a least-squares line ``image[p] ~ offset[p] + scale[p] * m[p]`` is
    fitted over ``n_rows`` training images, where ``m`` is the raw back-projection map
    divided by its maximum (see :class:`BackprojectionReconstructor`).

    Returns
    -------
    dict with ``backprojection_{connected|weighted}_scale`` and ``..._offset``, each of shape
    (n_pixels,) float32.
    """
    rows = training_rows(bundle, n_rows, seed)
    table = bundle.table
    packed = np.asarray(table.sdrs[rows])
    m = max_normalise(raw_backprojection(bundle.sp, packed, weighted)).astype(np.float64)
    y = np.asarray(table.images[rows]).reshape(len(rows), -1).astype(np.float64) / 255.0
    m_mean, y_mean = m.mean(axis=0), y.mean(axis=0)
    mc = m - m_mean
    var = (mc**2).sum(axis=0)
    cov = (mc * (y - y_mean)).sum(axis=0)
    scale = np.where(var > 1e-12, cov / np.maximum(var, 1e-12), 0.0)
    offset = y_mean - scale * m_mean
    kind = "weighted" if weighted else "connected"
    return {
        f"backprojection_{kind}_scale": scale.astype(np.float32),
        f"backprojection_{kind}_offset": offset.astype(np.float32),
    }


def train_decoder(
    bundle: Any,
    kind: str = "ridge",
    *,
    n_rows: int | None = None,
    alpha: float = 10.0,
    hidden_layer_sizes: tuple[int, ...] = (512,),
    max_iter: int = 10,
    batch_size: int = 256,
    learning_rate_init: float = 1e-3,
    alpha_mlp: float = 1e-5,
    seed: int = 0,
    verbose: bool = False,
    gram: SDRGram | None = None,
) -> dict[str, NDArray]:
    """Train a decoder SDR -> image on the bundle's training table; returns its arrays.

    Parameters
    ----------
    kind : {"ridge", "mlp"}
        ``"ridge"``: the coefficients of :class:`sklearn.linear_model.Ridge` (``alpha``,
        with intercept) on [0, 1] pixels, solved in closed form from the Gram matrix of the
        active bits (:func:`sdr_gram`, :func:`ridge_from_gram`).
        ``"mlp"``: :class:`sklearn.neural_network.MLPRegressor` (``hidden_layer_sizes``, relu,
        adam, ``max_iter`` epochs, L2 ``alpha_mlp``), squared error on [0, 1] pixels.
    n_rows : int, optional
        Train on this many random rows (default: all).
    gram : SDRGram, optional
        ``sdr_gram`` of all the training rows with the images (flattened, uint8) as values,
        when the caller has it already (ridge, ``n_rows`` None); computed otherwise.

    Returns
    -------
    dict name -> ndarray (float32 weights; see :data:`DECODER_KEYS`), ready to merge into
    ``bundle.decoder``; nothing is pickled.
    """
    rows = training_rows(bundle, n_rows, seed)
    n_bits = int(bundle.sp.n_columns)
    packed = np.asarray(bundle.table.sdrs[rows])
    if kind == "ridge":
        if gram is None or n_rows is not None:
            images = np.asarray(bundle.table.images[rows]).reshape(len(rows), -1)
            gram = sdr_gram(packed, n_bits, images)
        coef, intercept = ridge_from_gram(gram, float(alpha), 1.0 / 255.0)
        return {
            "ridge_coef": np.ascontiguousarray(coef.T, np.float32),
            "ridge_intercept": np.asarray(intercept, np.float32),
        }
    y = np.asarray(bundle.table.images[rows]).reshape(len(rows), -1).astype(np.float32) / 255.0
    if kind == "mlp":
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.neural_network import MLPRegressor

        model = MLPRegressor(
            hidden_layer_sizes=tuple(int(h) for h in hidden_layer_sizes),
            activation="relu",
            solver="adam",
            alpha=float(alpha_mlp),
            batch_size=int(batch_size),
            learning_rate_init=float(learning_rate_init),
            max_iter=int(max_iter),
            shuffle=True,
            random_state=seed,
            verbose=verbose,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(design_matrix(packed, n_bits), y)
        out: dict[str, NDArray] = {"mlp_activation": np.array(model.activation)}
        for i, (w, b) in enumerate(zip(model.coefs_, model.intercepts_, strict=True)):
            out[f"mlp_coef_{i}"] = np.ascontiguousarray(w, np.float32)
            out[f"mlp_intercept_{i}"] = np.asarray(b, np.float32)
        return out
    raise ParameterError(f"decoder kind must be 'ridge' or 'mlp', got {kind!r}")


def fit_logistic(
    bundle: Any,
    C: float = 0.01,
    max_iter: int = 300,
    n_rows: int | None = None,
    seed: int = 0,
    *,
    tol: float = 1e-3,
    gram: SDRGram | None = None,
) -> dict[str, NDArray]:
    """Train a multinomial logistic readout SDR -> label on the training table.

    The model of :class:`sklearn.linear_model.LogisticRegression` (``C``, L2 on the weights,
    free intercept): minimise ``C * sum_r CE(softmax(x_r W + b), y_r) + |W|^2 / 2`` by
    L-BFGS, preconditioned with Böhning's bound on the Hessian, ``(X_c^T X_c + 2 I / C) / 2``,
    factored once from the Gram matrix of the active bits: ~25 iterations of sparse passes
    instead of sklearn's ~100 dense ones, the same test accuracy.

    Parameters
    ----------
    max_iter : int
        L-BFGS iterations at most.
    tol : float
        Stop when an iteration lowers the objective by less than this fraction.
    gram : SDRGram, optional
        ``sdr_gram`` of all the training rows (any values), if the caller has it.

    Returns
    -------
    dict with ``logistic_coef`` (n_classes, n_bits) float32, ``logistic_intercept``
    (n_classes,) float32 and ``logistic_classes`` (n_classes,) int64: scores are
    ``X @ coef.T + intercept``.
    """
    if bundle.table.labels is None:
        raise ParameterError("this bundle has no labels: build it from labelled data")
    rows = training_rows(bundle, n_rows, seed)
    n_bits = int(bundle.sp.n_columns)
    packed = np.asarray(bundle.table.sdrs[rows])
    classes, y = np.unique(np.asarray(bundle.table.labels[rows]), return_inverse=True)
    if gram is None or n_rows is not None:
        gram = sdr_gram(packed, n_bits)
    # two classes: sklearn fits one logistic w with |w|^2 / 2; the softmax pair (w1 = -w0 =
    # w / 2 at the optimum) pays |w|^2 / 4, hence C / 2 for the same model
    c_eff = float(C) / 2.0 if len(classes) == 2 else float(C)
    W, b = _logistic_lbfgs(
        gram, packed, n_bits, y.astype(np.int64), len(classes), c_eff, max_iter, tol
    )
    if len(classes) == 2:  # sklearn's binary layout: one row, the score of classes[1]
        W, b = W[:, 1:] - W[:, :1], b[1:] - b[:1]
    return {
        "logistic_coef": np.ascontiguousarray(W.T, np.float32),
        "logistic_intercept": np.asarray(b, np.float32),
        "logistic_classes": np.asarray(classes, np.int64),
    }


def _logistic_lbfgs(
    gram: SDRGram,
    packed: NDArray[np.uint8],
    n_bits: int,
    y: NDArray[np.int64],
    n_classes: int,
    C: float,
    max_iter: int,
    tol: float,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(W (n_bits, n_classes), b) of the regularised softmax regression, see fit_logistic.

    Variables: V = L^T W / sqrt(2) with L L^T = X_c^T X_c + 2 I / C, and the intercept of the
    centred design scaled by sqrt(n / 2), so the bound on the Hessian becomes the identity.
    """
    from scipy.linalg import cho_factor, solve_triangular
    from scipy.optimize import minimize

    from sdrindex.sdr import to_csr

    n, lam = gram.n_rows, 1.0 / float(C)
    # L in Fortran order (the factor of the transposed upper triangle, in place): LAPACK
    # reads it as it is, where a C-order copy would be converted at every solve
    low = cho_factor(gram.centred(2.0 * lam).T, lower=True, overwrite_a=True, check_finite=False)[0]
    indptr, indices = to_csr(packed, n_bits)
    mu = gram.col_counts / float(n)
    sw, sb = np.sqrt(2.0), np.sqrt(2.0 / n)
    size = n_bits * n_classes

    def unpack(x: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        V = x[:size].reshape(n_bits, n_classes)
        W = sw * solve_triangular(low, V, lower=True, trans="T", check_finite=False)
        return W, sb * x[size:] - mu @ W

    def objective(x: NDArray[np.float64]) -> tuple[float, NDArray[np.float64]]:
        W, b = unpack(x)
        grad_w, grad_b = np.zeros_like(W), np.zeros(n_classes)
        W = np.ascontiguousarray(W)
        loss = softmax_grad(indptr, indices, W, b, y, grad_w, grad_b, n_threads())
        grad_w += lam * W - np.outer(mu, grad_b)  # the centred intercept moves with W
        grad_v = sw * solve_triangular(low, grad_w, lower=True, check_finite=False)
        grad = np.concatenate([grad_v.ravel(), sb * grad_b])
        return C * (loss + 0.5 * lam * float((W**2).sum())), C * grad

    result = minimize(
        objective,
        np.zeros(size + n_classes),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": int(max_iter), "ftol": float(tol), "gtol": 1e-8},
    )
    return unpack(result.x)


#: What :func:`train_decoders` can fit, in the order it fits them.
DECODER_KINDS = ("calibration", "ridge", "mlp", "logistic")


def train_decoders(
    bundle: Any,
    kinds: tuple[str, ...] | list[str] = ("calibration", "ridge", "logistic"),
    log: Callable[[str, float], None] | None = None,
) -> dict[str, NDArray]:
    """Everything the pipeline's decoder stage stores in ``bundle.decoder`` (arrays, no pickle).

    Parameters
    ----------
    bundle : Bundle
        Its SP and training table are read, never changed.
    kinds : sequence of {"calibration", "ridge", "mlp", "logistic"}
        ``calibration``: the back-projection calibration (connected and weighted);
        ``ridge`` / ``mlp``: the decoders (:func:`train_decoder`); ``logistic``: the label
        readout (:func:`fit_logistic`), skipped when the table has no labels.
    log : callable, optional
        Called with (step name, seconds) after each step.

    Returns
    -------
    dict name -> ndarray, the union of every step's arrays.
    """
    unknown = sorted(set(kinds) - set(DECODER_KINDS))
    if unknown:
        raise ParameterError(f"unknown decoder kinds {unknown}; choose from {DECODER_KINDS}")
    steps: list[tuple[str, Callable[[], dict[str, NDArray]]]] = []
    if "calibration" in kinds:
        steps.append(("back-projection calibration", lambda: fit_backprojection(bundle, False)))
        steps.append(
            ("back-projection calibration (weighted)", lambda: fit_backprojection(bundle, True))
        )
    gram: list[SDRGram] = []  # the ridge step computes it, the logistic step reuses it
    if "ridge" in kinds:
        steps.append(("ridge decoder", lambda: _ridge_keep_gram(bundle, gram)))
    if "mlp" in kinds:
        steps.append(("mlp decoder", lambda: train_decoder(bundle, "mlp")))
    if "logistic" in kinds and bundle.table.labels is not None:
        steps.append(
            ("logistic readout", lambda: fit_logistic(bundle, gram=next(iter(gram), None)))
        )
    arrays: dict[str, NDArray] = {}
    for name, fn in steps:
        t = time.perf_counter()
        arrays.update(fn())
        if log is not None:
            log(name, time.perf_counter() - t)
    return arrays


def _ridge_keep_gram(bundle: Any, keep: list[SDRGram]) -> dict[str, NDArray]:
    """train_decoder(bundle, "ridge"), leaving the Gram statistics in ``keep``."""
    images = np.asarray(bundle.table.images).reshape(len(bundle.table), -1)
    gram = sdr_gram(np.asarray(bundle.table.sdrs), int(bundle.sp.n_columns), images)
    keep.append(gram)
    return train_decoder(bundle, "ridge", gram=gram)
