"""Ways back from an SDR to an image: one small class each, one interface.

Every reconstructor is built from a :class:`~sdrindex.bundle.Bundle` and maps packed SDRs
(n, ceil(n_columns / 8)) uint8 to images (n, 28, 28) float32 in [0, 1]
(``reconstruct``), with ``reconstruct_uint8`` giving the 0-255 view.

Registered names: see :data:`RECONSTRUCTORS`; ``make_reconstructor(name, bundle, **params)``
builds one.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sdrindex.errors import ParameterError
from sdrindex.sdr import validate


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
        ids, _ = self.bundle.index.query(packed, 1)
        table = self.bundle.table
        return np.asarray(table.images)[table.positions(ids[:, 0])] / 255.0


class KNNReconstructor(Reconstructor):
    """Overlap-weighted mean of the top-k stored originals."""

    name = "knn"

    def __init__(self, bundle: Any, k: int = 10, power: float = 1.0) -> None:
        super().__init__(bundle)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ParameterError(f"k must be an integer >= 1, got {k!r}")
        self.k = int(k)
        self.power = float(power)

    def _reconstruct(self, packed):
        ids, ov = self.bundle.index.query(packed, self.k)
        table = self.bundle.table
        images = np.asarray(table.images)
        out = np.zeros((packed.shape[0], *self.image_shape), np.float64)
        for q in range(packed.shape[0]):
            ok = ids[q] >= 0
            w = np.maximum(ov[q, ok], 0).astype(np.float64) ** self.power
            if w.sum() == 0:
                w = np.ones_like(w)
            imgs = images[table.positions(ids[q, ok])].astype(np.float64)
            out[q] = np.tensordot(w / w.sum(), imgs, axes=1) / 255.0
        return out


RECONSTRUCTORS: dict[str, type[Reconstructor]] = {
    NearestReconstructor.name: NearestReconstructor,
    KNNReconstructor.name: KNNReconstructor,
}


def make_reconstructor(name: str, bundle: Any, **params: Any) -> Reconstructor:
    """Build the reconstructor registered under ``name`` for ``bundle``."""
    try:
        cls = RECONSTRUCTORS[name]
    except KeyError:
        raise ParameterError(
            f"unknown reconstruction method {name!r}; known: {', '.join(RECONSTRUCTORS)}"
        ) from None
    return cls(bundle, **params)
