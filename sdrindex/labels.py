"""Labels from SDRs: one small class per readout, one interface (``predict``).

Registered names (:data:`LABELERS`; ``make_labeler(name, bundle, **params)`` builds one):

``knn``
    An overlap-weighted vote of the k nearest stored SDRs (:class:`KNNLabeler`); the vote
    itself is :func:`knn_vote`, the one every caller (the service, ``evaluate``, ``sweep``)
    uses.
``logistic``
    A multinomial logistic-regression readout (what NuPIC's SDR Classifier gives), from the
    arrays stored in ``bundle.decoder`` or fitted on demand (:class:`LogisticLabeler`).

A labeler never writes into ``bundle.decoder``: what it fits stays in the labeler
(:attr:`LogisticLabeler.arrays`, ready to merge into a bundle the caller means to save).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sdrindex.decoders import dense_sdrs, fit_logistic
from sdrindex.errors import ParameterError
from sdrindex.reconstruct import _check_int
from sdrindex.sdr import validate

__all__ = ["knn_vote", "KNNLabeler", "LogisticLabeler", "LABELERS", "make_labeler"]

_LOGISTIC_KEYS = ("logistic_coef", "logistic_intercept", "logistic_classes")


def knn_vote(
    labels: NDArray,
    overlaps: NDArray,
    classes: NDArray,
    power: float = 1.0,
    valid: NDArray[np.bool_] | None = None,
) -> NDArray[np.int64]:
    """Overlap-weighted vote of neighbours: ``argmax_c sum_j w_ij [labels_ij == c]``.

    ``w_ij = max(overlap_ij, 0) ** power`` (0 where ``valid`` is False), and the nearest
    neighbour (column 0) gets a 1e-9 bonus so it breaks ties; remaining ties go to the
    smaller class.

    Parameters
    ----------
    labels : array of shape (n, k)
        Labels of each query's neighbours, nearest first; every value must be in ``classes``.
    overlaps : array of shape (n, k)
        Their overlaps with the query.
    classes : array of shape (n_classes,)
        The sorted distinct labels (``np.unique`` of the stored labels).
    power : float
        Exponent of the overlap weights (0: one vote each).
    valid : bool array of shape (n, k), optional
        False for missing neighbours (id -1), which do not vote.

    Returns
    -------
    array of shape (n,), int64: the winning label per query.
    """
    n, k = labels.shape
    lab = np.searchsorted(classes, labels)
    w = np.maximum(overlaps, 0).astype(np.float64) ** power
    if valid is not None:
        w = np.where(valid, w, 0.0)
    w[:, 0] += 1e-9
    votes = np.zeros((n, classes.size))
    np.add.at(votes, (np.repeat(np.arange(n), k), lab.ravel()), w.ravel())
    return classes[votes.argmax(axis=1)].astype(np.int64)


class KNNLabeler:
    """Labels from SDRs by an overlap-weighted vote of the k nearest stored SDRs.

    Parameters
    ----------
    k : int
        Neighbours voting (default 5).
    power : float
        Each neighbour votes with ``overlap ** power`` (0: one vote each).
    """

    name = "knn"

    def __init__(self, bundle: Any, k: int = 5, power: float = 1.0) -> None:
        if bundle.table.labels is None:
            raise ParameterError("this bundle has no labels: build it from labelled data")
        self.bundle = bundle
        self.k = _check_int(k, "k")
        self.power = float(power)
        self.n_bits = int(bundle.sp.n_columns)
        labels = np.asarray(bundle.table.labels)
        self.classes_ = np.unique(labels)

    def predict_from_neighbours(self, ids: NDArray, overlaps: NDArray) -> NDArray[np.int64]:
        """Votes of already-found neighbours (ids, overlaps of shape (n, >= k)) -> (n,)."""
        ids, overlaps = ids[:, : self.k], overlaps[:, : self.k]
        table = self.bundle.table
        ok = ids >= 0
        pos = np.zeros(ids.shape, np.int64)
        pos[ok] = table.positions(ids[ok])
        labels = np.asarray(table.labels)[pos]
        return knn_vote(labels, overlaps, self.classes_, self.power, valid=ok)

    def predict(self, sdrs: ArrayLike) -> NDArray[np.int64]:
        """Packed SDRs (n, ceil(n_columns/8)) -> labels (n,)."""
        packed = validate(sdrs, self.n_bits, "SDRs")
        ids, ov = self.bundle.index.query(packed, self.k)
        return self.predict_from_neighbours(ids, ov)


class LogisticLabeler:
    """Labels from SDRs by a logistic-regression readout (what the SDR Classifier gives).

    Uses the readout stored in ``bundle.decoder`` (``sdrindex build --decoder``), else
    trains one on the training table (:func:`~sdrindex.decoders.fit_logistic`, keyword
    ``fit_params``). The bundle is never changed: the arrays used are in :attr:`arrays`
    (``bundle.decoder.update(labeler.arrays)`` keeps a trained readout for saving).

    Attributes
    ----------
    arrays : dict
        ``logistic_coef`` (n_classes, n_columns), ``logistic_intercept`` (n_classes,),
        ``logistic_classes`` (n_classes,).
    fitted : bool
        True when the readout was trained here (the bundle had none).
    """

    name = "logistic"

    def __init__(self, bundle: Any, **fit_params: Any) -> None:
        self.bundle = bundle
        self.n_bits = int(bundle.sp.n_columns)
        dec = bundle.decoder or {}
        self.fitted = "logistic_coef" not in dec or np.shape(dec["logistic_coef"])[1] != self.n_bits
        if self.fitted:
            dec = fit_logistic(bundle, **fit_params)
        self.arrays: dict[str, NDArray] = {k: dec[k] for k in _LOGISTIC_KEYS}
        self.coef_t = np.ascontiguousarray(np.asarray(dec["logistic_coef"], np.float32).T)
        self.intercept = np.asarray(dec["logistic_intercept"], np.float32)
        self.classes_ = np.asarray(dec["logistic_classes"], np.int64)
        if self.coef_t.shape[1] == 1:  # binary problem: sklearn keeps one row
            self.coef_t = np.hstack([-self.coef_t, self.coef_t]) / 2
            self.intercept = np.array([-self.intercept[0], self.intercept[0]]) / 2

    def decision_function(self, sdrs: ArrayLike) -> NDArray[np.float32]:
        """Class scores (n, n_classes) of packed SDRs (n, ceil(n_columns/8))."""
        packed = validate(sdrs, self.n_bits, "SDRs")
        if packed.shape[0] <= 4:
            # A few SDRs (the service's one query): add the rows of the active bits, ~4x
            # faster than unpacking and multiplying (same scores up to float rounding).
            out = np.empty((packed.shape[0], self.coef_t.shape[1]), np.float32)
            for i, row in enumerate(packed):
                active = np.flatnonzero(np.unpackbits(row, count=self.n_bits))
                out[i] = self.coef_t[active].sum(axis=0) + self.intercept
            return out
        return dense_sdrs(packed, self.n_bits) @ self.coef_t + self.intercept

    def predict_proba(self, sdrs: ArrayLike) -> NDArray[np.float64]:
        """Class probabilities (n, n_classes), columns in ``classes_`` order."""
        z = self.decision_function(sdrs).astype(np.float64)
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, sdrs: ArrayLike) -> NDArray[np.int64]:
        """Packed SDRs (n, ceil(n_columns/8)) -> labels (n,)."""
        return self.classes_[self.decision_function(sdrs).argmax(axis=1)]


LABELERS: dict[str, type] = {KNNLabeler.name: KNNLabeler, LogisticLabeler.name: LogisticLabeler}


def make_labeler(name: str, bundle: Any, **params: Any) -> KNNLabeler | LogisticLabeler:
    """Build the labeler registered under ``name`` (``knn`` or ``logistic``)."""
    try:
        cls = LABELERS[name]
    except KeyError:
        raise ParameterError(
            f"unknown label method {name!r}; known: {', '.join(LABELERS)}"
        ) from None
    return cls(bundle, **params)
