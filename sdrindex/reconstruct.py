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
    training table (:func:`~sdrindex.decoders.train_decoder`), stored in the bundle as plain
    arrays and run in numpy (:class:`DecoderReconstructor`).

The labels of SDRs live in :mod:`sdrindex.labels`, the matching-pursuit baseline outside
the Spatial Pooler in :mod:`sdrindex.baselines`.

Learned arrays live in ``bundle.decoder`` (a dict name -> ndarray saved as
``decoder/weights.npz``, never pickled); the key names are listed in :data:`DECODER_KEYS`.
A reconstructor reads them and never writes them: what it fits on demand (the
back-projection calibration) stays in the reconstructor.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sdrindex.decoders import (
    dense_sdrs,
    fit_backprojection,
    max_normalise,
    raw_backprojection,
    training_rows,
)
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


# =========================================================================== reconstructors


class Reconstructor:
    """Base class: SDRs -> images. Subclasses implement :meth:`_reconstruct`."""

    name: ClassVar[str] = ""

    def __init__(self, bundle: Any) -> None:
        self.bundle = bundle
        self.n_bits = int(bundle.sp.n_columns)
        self.image_shape = tuple(int(d) for d in bundle.table.image_shape)

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
        # table.get fetches just these rows (from their shards, for a sharded bundle)
        return self.bundle.table.get(ids[:, 0]).images.astype(np.float32) / 255.0


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
        ok = ids >= 0
        pos = np.where(ok, ids, 0)  # a padded slot (weight 0) reads id 0's image
        w = np.where(ok, np.maximum(ov, 0).astype(np.float64) ** self.power, 0.0)
        empty = w.sum(axis=1) == 0
        w[empty] = ok[empty].astype(np.float64)  # all overlaps 0: plain mean of what was found
        w = (w / np.maximum(w.sum(axis=1, keepdims=True), 1e-12)).astype(np.float32)
        n_pix = int(np.prod(self.image_shape))
        out = np.empty((ids.shape[0], n_pix), np.float32)
        step = 1024
        for lo in range(0, ids.shape[0], step):
            chunk = pos[lo : lo + step]
            rows = table.get(chunk.ravel()).images.reshape(*chunk.shape, n_pix)
            out[lo : lo + step] = np.einsum(
                "qk,qkp->qp", w[lo : lo + step], rows.astype(np.float32)
            )
        return (out / 255.0).reshape((ids.shape[0], *self.image_shape))


# --------------------------------------------------------------------------- back-projection


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
            rows = training_rows(bundle, n_calibration)
            imgs = np.asarray(bundle.table.images[rows]).reshape(len(rows), -1)
            on = imgs >= 128
            self.n_on = max(1, int(round(on.sum(axis=1).mean())))
            self.on_value = float(imgs[on].mean() / 255.0) if on.any() else 1.0

    def raw_map(self, sdrs: ArrayLike) -> NDArray[np.float32]:
        """The uncalibrated back-projection, (n, H, W) float32 (counts, or permanence sums)."""
        packed = validate(sdrs, self.n_bits, "SDRs")
        raw = raw_backprojection(self.bundle.sp, packed, self.weighted)
        return raw.reshape((packed.shape[0], *self.image_shape))

    def _reconstruct(self, packed):
        raw = raw_backprojection(self.bundle.sp, packed, self.weighted)
        if self.rule == "max":
            return max_normalise(raw)
        if self.rule == "affine":
            return self.offset + self.scale * max_normalise(raw)
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
                "(or train one with sdrindex.decoders.train_decoder and save the bundle)"
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
            x = dense_sdrs(packed[lo : lo + step], self.n_bits, np.float32)
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
