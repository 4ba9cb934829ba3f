"""Ways back from an SDR to an image: one small class each, one interface.

Every reconstructor is built from a :class:`~sdrindex.bundle.Bundle` and maps packed SDRs
(n, ceil(n_columns / 8)) uint8 to images (n, 28, 28) float32 in [0, 1]
(``reconstruct``), with ``reconstruct_uint8`` giving the 0-255 view.

Registered names (:data:`RECONSTRUCTORS`; ``make_reconstructor(name, bundle, **params)``
builds one):

``nearest``
    The stored original whose SDR overlaps the query most.
``knn``
    Overlap-weighted blend of the top-k stored originals.
``backprojection``
    The Spatial Pooler run backwards (connected synapses, or permanences, of the active
    columns summed per pixel), mapped to intensities by a rule calibrated on the training
    table (see :class:`BackprojectionReconstructor`).
``decoder``
    A learned inverse SDR -> image: scikit-learn ``Ridge`` or ``MLPRegressor`` trained on the
    training table (:func:`train_decoder`), stored in the bundle as plain arrays and run in
    numpy (:class:`DecoderReconstructor`).

Also here: the labels of SDRs (:class:`KNNLabeler`, :class:`LogisticLabeler`,
:func:`make_labeler`) and a baseline outside the Spatial Pooler, the forum's dictionary /
matching-pursuit encoder (:class:`MatchingPursuitCoder`).

Learned arrays live in ``bundle.decoder`` (a dict name -> ndarray saved as
``decoder/weights.npz``, never pickled); the key names are listed in :data:`DECODER_KEYS`.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sdrindex.errors import ParameterError
from sdrindex.sdr import validate

__all__ = [
    "Reconstructor",
    "NearestReconstructor",
    "KNNReconstructor",
    "BackprojectionReconstructor",
    "DecoderReconstructor",
    "RECONSTRUCTORS",
    "make_reconstructor",
    "train_decoder",
    "fit_backprojection",
    "fit_logistic",
    "KNNLabeler",
    "LogisticLabeler",
    "LABELERS",
    "make_labeler",
    "MatchingPursuitCoder",
    "DECODER_KEYS",
]

#: Arrays a bundle's ``decoder`` dict may hold (``{w}`` = ``connected`` or ``weighted``,
#: ``{i}`` = layer number).
DECODER_KEYS: dict[str, str] = {
    "ridge_coef": "Ridge coef_, (n_pixels, n_columns) float32",
    "ridge_intercept": "Ridge intercept_, (n_pixels,) float32",
    "mlp_coef_{i}": "MLPRegressor coefs_[i], (n_in, n_out) float32",
    "mlp_intercept_{i}": "MLPRegressor intercepts_[i], (n_out,) float32",
    "mlp_activation": "hidden activation name, 0-d str array (relu, tanh, logistic, identity)",
    "backprojection_{w}_scale": "per-pixel slope of the calibrated back-projection",
    "backprojection_{w}_offset": "per-pixel offset of the calibrated back-projection",
    "logistic_coef": "LogisticRegression coef_, (n_classes, n_columns) float32",
    "logistic_intercept": "LogisticRegression intercept_, (n_classes,) float32",
    "logistic_classes": "LogisticRegression classes_, (n_classes,) int64",
}


def _check_int(value: Any, name: str, lo: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise ParameterError(f"{name} must be an integer >= {lo}, got {value!r}")
    return int(value)


def _dense(packed: NDArray[np.uint8], n_bits: int, dtype=np.float32) -> NDArray:
    """Packed SDRs -> dense (n, n_bits) array of ``dtype``."""
    return np.unpackbits(packed, axis=1, count=n_bits).astype(dtype, copy=False)


def _csr(packed: NDArray[np.uint8], n_bits: int):
    """Packed SDRs -> scipy CSR float32 matrix (n, n_bits)."""
    import scipy.sparse as sp

    from sdrindex.sdr import to_csr

    indptr, indices = to_csr(packed, n_bits)
    data = np.ones(indices.shape[0], np.float32)
    return sp.csr_matrix((data, indices, indptr), shape=(packed.shape[0], n_bits))


def _design(packed: NDArray[np.uint8], n_bits: int):
    """Training matrix for scikit-learn: dense float32 (BLAS, several times faster than
    scipy's single-threaded sparse products) while it fits in ~2 GB, else CSR."""
    if packed.shape[0] * n_bits <= 5 * 10**8:
        return _dense(packed, n_bits, np.float32)
    return _csr(packed, n_bits)


def _training_rows(bundle: Any, n: int | None, seed: int = 0) -> NDArray[np.int64]:
    """Row positions used for fitting: all rows, or ``n`` of them drawn without replacement."""
    total = len(bundle.table)
    if n is None or n >= total:
        return np.arange(total)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(total, size=int(n), replace=False))


def _decoder_dict(bundle: Any) -> dict[str, NDArray]:
    if bundle.decoder is None:
        bundle.decoder = {}
    return bundle.decoder


# =========================================================================== reconstructors


class Reconstructor:
    """Base class: SDRs -> images. Subclasses implement :meth:`_reconstruct`."""

    name: ClassVar[str] = ""

    def __init__(self, bundle: Any) -> None:
        self.bundle = bundle
        self.n_bits = int(bundle.sp.n_columns)
        self.image_shape = tuple(np.asarray(bundle.table.images).shape[1:])

    def reconstruct(self, sdrs: ArrayLike) -> NDArray[np.float32]:
        """Packed SDRs (n, ceil(n_columns/8)) -> images (n, H, W) float32 in [0, 1]."""
        packed = validate(sdrs, self.n_bits, "SDRs")
        out = np.asarray(self._reconstruct(packed), dtype=np.float32)
        return np.clip(out.reshape((packed.shape[0], *self.image_shape)), 0.0, 1.0)

    def reconstruct_uint8(self, sdrs: ArrayLike) -> NDArray[np.uint8]:
        """As :meth:`reconstruct`, scaled to 0..255 uint8."""
        return np.rint(self.reconstruct(sdrs) * 255.0).astype(np.uint8)

    def _reconstruct(self, packed: NDArray[np.uint8]) -> NDArray:  # pragma: no cover
        raise NotImplementedError


class NearestReconstructor(Reconstructor):
    """The stored original whose SDR overlaps the query most (top-1, ties to the lower id)."""

    name = "nearest"

    def _reconstruct(self, packed):
        ids, ov = self.bundle.index.query(packed, 1)
        return self.from_neighbours(ids, ov)

    def from_neighbours(self, ids: NDArray, overlaps: NDArray) -> NDArray[np.float32]:
        """Images (n, H, W) from already-found neighbours (ids of shape (n, >= 1))."""
        table = self.bundle.table
        return np.asarray(table.images)[table.positions(ids[:, 0])].astype(np.float32) / 255.0


class KNNReconstructor(Reconstructor):
    """Overlap-weighted mean of the top-k stored originals.

    Parameters
    ----------
    k : int
        Neighbours blended (default 10).
    power : float
        Weights are ``overlap ** power`` (0: plain mean; larger: closer to ``nearest``).
    """

    name = "knn"

    def __init__(self, bundle: Any, k: int = 10, power: float = 1.0) -> None:
        super().__init__(bundle)
        self.k = _check_int(k, "k")
        self.power = float(power)
        if not np.isfinite(self.power) or self.power < 0:
            raise ParameterError(f"power must be a finite number >= 0, got {power!r}")

    def _reconstruct(self, packed):
        ids, ov = self.bundle.index.query(packed, self.k)
        return self.from_neighbours(ids, ov)

    def from_neighbours(self, ids: NDArray, overlaps: NDArray) -> NDArray[np.float32]:
        """Blend already-found neighbours (ids, overlaps of shape (n, >= k)) -> (n, H, W)."""
        ids, ov = ids[:, : self.k], overlaps[:, : self.k]
        table = self.bundle.table
        images = np.asarray(table.images)
        ok = ids >= 0
        pos = np.zeros(ids.shape, np.int64)
        pos[ok] = table.positions(ids[ok])
        w = np.where(ok, np.maximum(ov, 0).astype(np.float64) ** self.power, 0.0)
        empty = w.sum(axis=1) == 0
        w[empty] = ok[empty].astype(np.float64)  # all overlaps 0: plain mean of what was found
        w = (w / np.maximum(w.sum(axis=1, keepdims=True), 1e-12)).astype(np.float32)
        flat = images.reshape(images.shape[0], -1)
        out = np.empty((ids.shape[0], flat.shape[1]), np.float32)
        step = 1024
        for lo in range(0, ids.shape[0], step):
            gathered = flat[pos[lo : lo + step]].astype(np.float32)
            out[lo : lo + step] = np.einsum("qk,qkp->qp", w[lo : lo + step], gathered)
        return (out / 255.0).reshape((ids.shape[0], *self.image_shape))


# --------------------------------------------------------------------------- back-projection


def _backprojection_weights(sp: Any, weighted: bool) -> NDArray[np.float32]:
    """(n_columns, n_inputs) float32: connected synapses 0/1, or permanences."""
    w = sp.permanences_ if weighted else sp.connected_matrix()
    return np.ascontiguousarray(w, dtype=np.float32)


def _raw_backprojection(
    sp: Any, packed: NDArray[np.uint8], weighted: bool, weights: NDArray | None = None
) -> NDArray[np.float32]:
    """Per-pixel sum over the active columns of connected synapses (or permanences).

    The same numbers as ``sp.inverse_transform`` (its numba kernel, fed the packed rows
    directly and the weights computed once).
    """
    from sdrindex.sp._infer import back_project

    if weights is None:
        weights = _backprojection_weights(sp, weighted)
    packed = np.ascontiguousarray(packed, dtype=np.uint8)
    return back_project(packed, int(sp.n_columns), weights)


def _max_normalise(raw: NDArray[np.float32]) -> NDArray[np.float32]:
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
    rows = _training_rows(bundle, n_rows, seed)
    table = bundle.table
    packed = np.asarray(table.sdrs)[rows]
    m = _max_normalise(_raw_backprojection(bundle.sp, packed, weighted)).astype(np.float64)
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


class BackprojectionReconstructor(Reconstructor):
    """The Spatial Pooler run backwards, with intensities calibrated on the training set.

    **Raw map** (:meth:`raw_map`, NuPIC forum's ``getConnectedSynapses`` loop, vectorised):
    for each pixel, the number of active columns having a connected synapse onto it
    (``weighted=True``: the sum of the active columns' permanences onto it).

    **Rule** (``rule=``):

    ``"affine"`` (default)
        ``m = raw / max(raw)`` per image (the map's scale depends on how many columns are
        active and how many synapses they keep, so only its shape is kept), then per pixel
        ``image[p] = offset[p] + scale[p] * m[p]``, clipped to [0, 1]. ``offset`` and ``scale``
        are the least-squares line of the training images' pixel ``p`` on ``m[p]``, fitted on
        (up to) 10,000 training rows (:func:`fit_backprojection`). A pixel no column reaches
        gets the training mean there. Stored in the bundle by ``sdrindex build --decoder``,
        else fitted when the reconstructor is made (about a second).
    ``"topk"``
        Keep the expected number of on-pixels: the ``n_on`` pixels of largest ``raw`` are set
        to ``on_value`` and the rest to 0, where ``n_on`` and ``on_value`` are the mean
        count and mean intensity of the pixels >= 128 of the training images.
    ``"max"``
        ``raw / max(raw)``: the uncalibrated shape of the map.
    """

    name = "backprojection"
    RULES = ("affine", "topk", "max")

    def __init__(
        self,
        bundle: Any,
        weighted: bool = False,
        rule: str = "affine",
        n_calibration: int | None = 10000,
    ) -> None:
        super().__init__(bundle)
        if rule not in self.RULES:
            raise ParameterError(f"rule must be one of {self.RULES}, got {rule!r}")
        self.weighted = bool(weighted)
        self.rule = rule
        self.weights = _backprojection_weights(bundle.sp, self.weighted)
        kind = "weighted" if self.weighted else "connected"
        if rule == "affine":
            dec = bundle.decoder or {}
            keys = (f"backprojection_{kind}_scale", f"backprojection_{kind}_offset")
            n_pix = int(np.prod(self.image_shape))
            if all(k in dec and np.shape(dec[k]) == (n_pix,) for k in keys):
                arrays = {k: dec[k] for k in keys}
            else:
                arrays = fit_backprojection(bundle, self.weighted, n_calibration)
            self.scale = np.asarray(arrays[keys[0]], np.float32)
            self.offset = np.asarray(arrays[keys[1]], np.float32)
        elif rule == "topk":
            rows = _training_rows(bundle, n_calibration)
            imgs = np.asarray(bundle.table.images)[rows].reshape(len(rows), -1)
            on = imgs >= 128
            self.n_on = max(1, int(round(on.sum(axis=1).mean())))
            self.on_value = float(imgs[on].mean() / 255.0) if on.any() else 1.0

    def raw_map(self, sdrs: ArrayLike) -> NDArray[np.float32]:
        """The uncalibrated back-projection, (n, H, W) float32 (counts, or permanence sums)."""
        packed = validate(sdrs, self.n_bits, "SDRs")
        raw = _raw_backprojection(self.bundle.sp, packed, self.weighted, self.weights)
        return raw.reshape((packed.shape[0], *self.image_shape))

    def _reconstruct(self, packed):
        raw = _raw_backprojection(self.bundle.sp, packed, self.weighted, self.weights)
        if self.rule == "max":
            return _max_normalise(raw)
        if self.rule == "affine":
            return self.offset + self.scale * _max_normalise(raw)
        out = np.zeros_like(raw)
        top = np.argpartition(-raw, self.n_on - 1, axis=1)[:, : self.n_on]
        np.put_along_axis(out, top, self.on_value, axis=1)
        out[raw.max(axis=1) <= 0] = 0.0
        return out


# --------------------------------------------------------------------------- learned decoder

_ACTIVATIONS = {
    "relu": lambda x: np.maximum(x, 0, out=x),
    "tanh": lambda x: np.tanh(x, out=x),
    "logistic": lambda x: np.divide(1.0, 1.0 + np.exp(-x), out=x),
    "identity": lambda x: x,
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
    rows = _training_rows(bundle, n_rows, seed)
    n_bits = int(bundle.sp.n_columns)
    packed = np.asarray(bundle.table.sdrs)[rows]
    y = np.asarray(bundle.table.images)[rows].reshape(len(rows), -1).astype(np.float32) / 255.0
    if kind == "ridge":
        from sklearn.linear_model import Ridge

        X = _dense(packed, n_bits, np.float32)
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
            model.fit(_design(packed, n_bits), y)
        out: dict[str, NDArray] = {"mlp_activation": np.array(model.activation)}
        for i, (w, b) in enumerate(zip(model.coefs_, model.intercepts_, strict=True)):
            out[f"mlp_coef_{i}"] = np.ascontiguousarray(w, np.float32)
            out[f"mlp_intercept_{i}"] = np.asarray(b, np.float32)
        return out
    raise ParameterError(f"decoder kind must be 'ridge' or 'mlp', got {kind!r}")


def _mlp_layers(dec: dict[str, NDArray]) -> list[tuple[NDArray, NDArray]]:
    layers = []
    i = 0
    while f"mlp_coef_{i}" in dec:
        layers.append(
            (np.asarray(dec[f"mlp_coef_{i}"], np.float32), np.asarray(dec[f"mlp_intercept_{i}"]))
        )
        i += 1
    return layers


class DecoderReconstructor(Reconstructor):
    """A learned inverse SDR -> image, run in numpy from the arrays stored in the bundle.

    Parameters
    ----------
    model : {"ridge", "mlp"}, optional
        Which stored decoder to use; default Ridge when the bundle has one, else the MLP.
        On full MNIST with the default SP, Ridge (alpha 10) reconstructs better (MSE
        0.0076) than the MLP ``build --decoder`` trains (512 relu units, 10 epochs: 0.0100),
        and trains in under a minute instead of several.

    Raises
    ------
    ParameterError
        When the bundle holds no such decoder (build with ``sdrindex build --decoder``, or
        ``bundle.decoder.update(train_decoder(bundle, "ridge"))``).
    """

    name = "decoder"

    def __init__(self, bundle: Any, model: str | None = None) -> None:
        super().__init__(bundle)
        dec = bundle.decoder or {}
        has = {"mlp": "mlp_coef_0" in dec, "ridge": "ridge_coef" in dec}
        if model is None:
            model = "ridge" if has["ridge"] else "mlp"
        if model not in has:
            raise ParameterError(f"model must be 'mlp' or 'ridge', got {model!r}")
        if not has[model]:
            raise ParameterError(
                f"this bundle has no {model} decoder: rebuild it with `sdrindex build --decoder` "
                "(or train one with sdrindex.reconstruct.train_decoder and save the bundle)"
            )
        self.model = model
        n_pix = int(np.prod(self.image_shape))
        if model == "ridge":
            self.coef = np.asarray(dec["ridge_coef"], np.float32)
            self.intercept = np.asarray(dec["ridge_intercept"], np.float32)
            if self.coef.shape != (n_pix, self.n_bits) or self.intercept.shape != (n_pix,):
                raise ParameterError(
                    f"stored ridge decoder has shape {self.coef.shape}, expected "
                    f"{(n_pix, self.n_bits)}; retrain it with `sdrindex build --decoder`"
                )
            self.coef_t = np.ascontiguousarray(self.coef.T)
        else:
            self.layers = _mlp_layers(dec)
            act = str(np.asarray(dec.get("mlp_activation", "relu")))
            if act not in _ACTIVATIONS:
                raise ParameterError(f"unknown MLP activation {act!r} in the bundle's decoder")
            self.activation = act
            shapes_ok = (
                self.layers[0][0].shape[0] == self.n_bits and self.layers[-1][0].shape[1] == n_pix
            )
            if not shapes_ok:
                raise ParameterError(
                    "stored MLP decoder does not match this SP / image size; retrain it with "
                    "`sdrindex build --decoder`"
                )

    def _reconstruct(self, packed):
        out = np.empty((packed.shape[0], int(np.prod(self.image_shape))), np.float32)
        step = 2048
        for lo in range(0, packed.shape[0], step):
            x = _dense(packed[lo : lo + step], self.n_bits, np.float32)
            if self.model == "ridge":
                out[lo : lo + step] = x @ self.coef_t + self.intercept
                continue
            act = _ACTIVATIONS[self.activation]
            for i, (w, b) in enumerate(self.layers):
                x = x @ w + b
                if i < len(self.layers) - 1:
                    x = act(x)
            out[lo : lo + step] = x
        return out


RECONSTRUCTORS: dict[str, type[Reconstructor]] = {
    NearestReconstructor.name: NearestReconstructor,
    KNNReconstructor.name: KNNReconstructor,
    BackprojectionReconstructor.name: BackprojectionReconstructor,
    DecoderReconstructor.name: DecoderReconstructor,
}


def make_reconstructor(name: str, bundle: Any, **params: Any) -> Reconstructor:
    """Build the reconstructor registered under ``name`` for ``bundle``."""
    try:
        cls = RECONSTRUCTORS[name]
    except KeyError:
        raise ParameterError(
            f"unknown reconstruction method {name!r}; known: {', '.join(RECONSTRUCTORS)}"
        ) from None
    try:
        return cls(bundle, **params)
    except TypeError as exc:  # an unknown keyword for this method
        raise ParameterError(f"bad parameters for {name!r}: {exc}") from None


# =========================================================================== labels


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
        """Votes of already-found neighbours (ids, overlaps of shape (n, >= k))."""
        ids, overlaps = ids[:, : self.k], overlaps[:, : self.k]
        table = self.bundle.table
        ok = ids >= 0
        pos = np.zeros(ids.shape, np.int64)
        pos[ok] = table.positions(ids[ok])
        lab = np.searchsorted(self.classes_, np.asarray(table.labels)[pos])
        w = np.where(ok, np.maximum(overlaps, 0).astype(np.float64) ** self.power, 0.0)
        # The nearest neighbour breaks ties (tiny bonus).
        w[:, 0] += 1e-9
        votes = np.zeros((ids.shape[0], self.classes_.size))
        np.add.at(votes, (np.repeat(np.arange(ids.shape[0]), ids.shape[1]), lab.ravel()), w.ravel())
        return self.classes_[votes.argmax(axis=1)].astype(np.int64)

    def predict(self, sdrs: ArrayLike) -> NDArray[np.int64]:
        """Packed SDRs (n, ceil(n_columns/8)) -> labels (n,)."""
        packed = validate(sdrs, self.n_bits, "SDRs")
        ids, ov = self.bundle.index.query(packed, self.k)
        return self.predict_from_neighbours(ids, ov)


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
    rows = _training_rows(bundle, n_rows, seed)
    X = _design(np.asarray(bundle.table.sdrs)[rows], int(bundle.sp.n_columns))
    y = np.asarray(bundle.table.labels)[rows]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = LogisticRegression(C=float(C), max_iter=int(max_iter)).fit(X, y)
    return {
        "logistic_coef": np.asarray(model.coef_, np.float32),
        "logistic_intercept": np.asarray(model.intercept_, np.float32),
        "logistic_classes": np.asarray(model.classes_, np.int64),
    }


class LogisticLabeler:
    """Labels from SDRs by a logistic-regression readout (what the SDR Classifier gives).

    Uses the readout stored in ``bundle.decoder`` (``sdrindex build --decoder``), else
    trains one on the training table (:func:`fit_logistic`) and keeps it in
    ``bundle.decoder``.
    """

    name = "logistic"

    def __init__(self, bundle: Any, **fit_params: Any) -> None:
        self.bundle = bundle
        self.n_bits = int(bundle.sp.n_columns)
        dec = bundle.decoder or {}
        if "logistic_coef" not in dec or np.shape(dec["logistic_coef"])[1] != self.n_bits:
            _decoder_dict(bundle).update(fit_logistic(bundle, **fit_params))
            dec = bundle.decoder
        self.coef_t = np.ascontiguousarray(np.asarray(dec["logistic_coef"], np.float32).T)
        self.intercept = np.asarray(dec["logistic_intercept"], np.float32)
        self.classes_ = np.asarray(dec["logistic_classes"], np.int64)
        if self.coef_t.shape[1] == 1:  # binary problem: sklearn keeps one row
            self.coef_t = np.hstack([-self.coef_t, self.coef_t]) / 2
            self.intercept = np.array([-self.intercept[0], self.intercept[0]]) / 2

    def decision_function(self, sdrs: ArrayLike) -> NDArray[np.float32]:
        packed = validate(sdrs, self.n_bits, "SDRs")
        if packed.shape[0] <= 4:
            # A few SDRs (the service's one query): add the rows of the active bits, ~4x
            # faster than unpacking and multiplying (same scores up to float rounding).
            out = np.empty((packed.shape[0], self.coef_t.shape[1]), np.float32)
            for i, row in enumerate(packed):
                active = np.flatnonzero(np.unpackbits(row, count=self.n_bits))
                out[i] = self.coef_t[active].sum(axis=0) + self.intercept
            return out
        return _dense(packed, self.n_bits) @ self.coef_t + self.intercept

    def predict_proba(self, sdrs: ArrayLike) -> NDArray[np.float64]:
        """Class probabilities (n, n_classes), columns in ``classes_`` order."""
        z = self.decision_function(sdrs).astype(np.float64)
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, sdrs: ArrayLike) -> NDArray[np.int64]:
        """Packed SDRs (n, ceil(n_columns/8)) -> labels (n,)."""
        return self.classes_[self.decision_function(sdrs).argmax(axis=1)]


LABELERS: dict[str, type] = {"knn": KNNLabeler, "logistic": LogisticLabeler}


def make_labeler(name: str, bundle: Any, **params: Any):
    """Build the labeler registered under ``name`` (``knn`` or ``logistic``)."""
    try:
        cls = LABELERS[name]
    except KeyError:
        raise ParameterError(
            f"unknown label method {name!r}; known: {', '.join(LABELERS)}"
        ) from None
    return cls(bundle, **params)


# =========================================================================== baseline


class MatchingPursuitCoder:
    """The forum's dictionary encoder: images as sparse sums of 7x7 patch atoms.

    A baseline outside the Spatial Pooler. ``fit`` samples ``n_patches`` 7x7 patches
    (with ink) from training images; each, normalised to unit length, is placed at every
    position of a grid with step ``stride`` to give the atoms of a full-image dictionary.
    ``transform`` selects atoms greedily with orthogonal matching pursuit
    (scikit-learn's :class:`~sklearn.decomposition.SparseCoder`, ``omp``) until the atom
    budget ``n_atoms`` is spent, or, when ``tol`` is given, until the residual's mean square
    per pixel is <= ``tol`` (capped at ``n_atoms`` atoms).

    Parameters
    ----------
    n_atoms : int
        Atom budget per image (compare with the SDR's active bits).
    tol : float, optional
        Residual threshold, mean squared error per pixel on [0, 1].
    n_patches, patch_size, stride : int
        Dictionary: patches sampled, their side, the placement step.
    seed : int
        Seed of the patch sampling.
    """

    def __init__(
        self,
        n_atoms: int = 64,
        tol: float | None = None,
        n_patches: int = 32,
        patch_size: int = 7,
        stride: int = 4,
        seed: int = 0,
    ) -> None:
        self.n_atoms = _check_int(n_atoms, "n_atoms")
        self.tol = None if tol is None else float(tol)
        self.n_patches = _check_int(n_patches, "n_patches")
        self.patch_size = _check_int(patch_size, "patch_size")
        self.stride = _check_int(stride, "stride")
        self.seed = seed

    def fit(self, images: ArrayLike) -> MatchingPursuitCoder:
        """Sample the patch atoms from training images (n, H, W) uint8 or float in [0, 1]."""
        from sklearn.decomposition import SparseCoder

        imgs = np.asarray(images)
        x = imgs.astype(np.float64) / (255.0 if imgs.dtype == np.uint8 else 1.0)
        n, h, w = x.shape
        p = self.patch_size
        if p > min(h, w):
            raise ParameterError(f"patch_size {p} is larger than the images ({h}x{w})")
        rng = np.random.default_rng(self.seed)
        patches = []
        tries = 0
        while len(patches) < self.n_patches and tries < 100 * self.n_patches:
            tries += 1
            i = rng.integers(n)
            r, c = rng.integers(h - p + 1), rng.integers(w - p + 1)
            patch = x[i, r : r + p, c : c + p]
            ink = (patch > 0.5).mean()
            if 0.15 <= ink <= 0.85:  # strokes, not blank or solid
                patches.append(patch / np.linalg.norm(patch))
        if not patches:
            raise ParameterError("no patch with ink found in the training images")
        self.patches_ = np.stack(patches)
        rows = list(range(0, h - p + 1, self.stride))
        cols = list(range(0, w - p + 1, self.stride))
        if rows[-1] != h - p:
            rows.append(h - p)
        if cols[-1] != w - p:
            cols.append(w - p)
        atoms = np.zeros((len(patches) * len(rows) * len(cols), h, w))
        a = 0
        for patch in self.patches_:
            for r in rows:
                for c in cols:
                    atoms[a, r : r + p, c : c + p] = patch
                    a += 1
        self.dictionary_ = atoms.reshape(a, h * w)
        self.gram_ = self.dictionary_ @ self.dictionary_.T
        self.image_shape_ = (h, w)
        self.coder_ = SparseCoder(
            self.dictionary_,
            transform_algorithm="omp",
            transform_n_nonzero_coefs=min(self.n_atoms, a),
        )
        return self

    def transform(self, images: ArrayLike) -> NDArray[np.float64]:
        """Codes of shape (n, n_dictionary_atoms), at most ``n_atoms`` non-zero per row."""
        imgs = np.asarray(images)
        x = imgs.reshape(imgs.shape[0], -1).astype(np.float64)
        x /= 255.0 if imgs.dtype == np.uint8 else 1.0
        if self.tol is None:
            return self.coder_.transform(x)
        # SparseCoder's omp has no residual stop: call orthogonal_mp_gram with tol, then
        # re-solve at the budget the rows that needed more atoms than it allows.
        from sklearn.linear_model import orthogonal_mp_gram

        cov = x @ self.dictionary_.T
        codes = np.asarray(
            orthogonal_mp_gram(
                self.gram_,
                cov.T,
                tol=self.tol * x.shape[1],  # squared residual norm
                norms_squared=np.einsum("ij,ij->i", x, x),
            )
        ).T.reshape(x.shape[0], -1)
        over = np.flatnonzero((codes != 0).sum(axis=1) > self.n_atoms)
        if over.size:
            codes[over] = self.coder_.transform(x[over])
        return codes

    def inverse_transform(self, codes: ArrayLike) -> NDArray[np.float32]:
        """Codes -> images (n, H, W) float32 clipped to [0, 1]."""
        out = np.asarray(codes) @ self.dictionary_
        return np.clip(out, 0, 1).reshape(-1, *self.image_shape_).astype(np.float32)

    def reconstruct(self, images: ArrayLike) -> NDArray[np.float32]:
        """Encode and decode: images -> their sparse approximations (n, H, W) in [0, 1]."""
        return self.inverse_transform(self.transform(images))
