"""Fitting what a bundle's ``decoder`` stores: the learned ways back and the label readout.

The pipeline's decoder stage (:func:`train_decoders`) runs these on the training table and
keeps the arrays (never pickled) in ``bundle.decoder``; the reconstructors in
:mod:`sdrindex.reconstruct` and the labelers in :mod:`sdrindex.labels` apply them, and fit
them on demand when a bundle lacks them (without touching the bundle).

- :func:`fit_backprojection`: the per-pixel affine calibration of the back-projection;
- :func:`train_decoder`: Ridge (closed form) or MLP decoder SDR -> image;
- :func:`fit_logistic`: the multinomial logistic readout SDR -> label.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sdrindex.errors import ParameterError

__all__ = ["DECODER_KINDS", "train_decoders", "fit_backprojection", "train_decoder", "fit_logistic"]


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
    return sp.inverse_transform(np.ascontiguousarray(packed, dtype=np.uint8), weighted=weighted)


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
    packed = np.asarray(table.sdrs)[rows]
    m = max_normalise(raw_backprojection(bundle.sp, packed, weighted)).astype(np.float64)
    y = np.asarray(table.images)[rows].reshape(len(rows), -1).astype(np.float64) / 255.0
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
) -> dict[str, NDArray]:
    """Train a decoder SDR -> image on the bundle's training table; returns its arrays.

    Parameters
    ----------
    kind : {"ridge", "mlp"}
        ``"ridge"``: :class:`sklearn.linear_model.Ridge` (``alpha``), closed form.
        ``"mlp"``: :class:`sklearn.neural_network.MLPRegressor` (``hidden_layer_sizes``, relu,
        adam, ``max_iter`` epochs, L2 ``alpha_mlp``), squared error on [0, 1] pixels.
    n_rows : int, optional
        Train on this many random rows (default: all).

    Returns
    -------
    dict name -> ndarray (float32 weights; see :data:`DECODER_KEYS`), ready to merge into
    ``bundle.decoder``; nothing is pickled.
    """
    rows = training_rows(bundle, n_rows, seed)
    n_bits = int(bundle.sp.n_columns)
    packed = np.asarray(bundle.table.sdrs)[rows]
    y = np.asarray(bundle.table.images)[rows].reshape(len(rows), -1).astype(np.float32) / 255.0
    if kind == "ridge":
        from sklearn.linear_model import Ridge

        X = dense_sdrs(packed, n_bits, np.float32)
        model = Ridge(alpha=float(alpha), solver="cholesky").fit(X, y)
        return {
            "ridge_coef": np.ascontiguousarray(model.coef_, np.float32),
            "ridge_intercept": np.asarray(model.intercept_, np.float32),
        }
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
    bundle: Any, C: float = 0.01, max_iter: int = 300, n_rows: int | None = None, seed: int = 0
) -> dict[str, NDArray]:
    """Train a multinomial logistic readout SDR -> label on the training table.

    Returns the arrays ``logistic_coef``, ``logistic_intercept``, ``logistic_classes``.
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    if bundle.table.labels is None:
        raise ParameterError("this bundle has no labels: build it from labelled data")
    rows = training_rows(bundle, n_rows, seed)
    X = design_matrix(np.asarray(bundle.table.sdrs)[rows], int(bundle.sp.n_columns))
    y = np.asarray(bundle.table.labels)[rows]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = LogisticRegression(C=float(C), max_iter=int(max_iter)).fit(X, y)
    return {
        "logistic_coef": np.asarray(model.coef_, np.float32),
        "logistic_intercept": np.asarray(model.intercept_, np.float32),
        "logistic_classes": np.asarray(model.classes_, np.int64),
    }


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
    for kind in ("ridge", "mlp"):
        if kind in kinds:
            steps.append((f"{kind} decoder", lambda kind=kind: train_decoder(bundle, kind)))
    if "logistic" in kinds and bundle.table.labels is not None:
        steps.append(("logistic readout", lambda: fit_logistic(bundle)))
    arrays: dict[str, NDArray] = {}
    for name, fn in steps:
        t = time.perf_counter()
        arrays.update(fn())
        if log is not None:
            log(name, time.perf_counter() - t)
    return arrays
