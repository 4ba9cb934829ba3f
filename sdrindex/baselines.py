"""Baselines outside the Spatial Pooler, measured beside the SDRs' ways back.

:class:`MatchingPursuitCoder`: the NuPIC forum's dictionary encoder (images as sparse sums of
patch atoms, chosen by orthogonal matching pursuit), compared with the SDR reconstructions
at the same atom budget in the evaluation report.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from sdrindex.errors import ParameterError
from sdrindex.reconstruct import _check_int

__all__ = ["MatchingPursuitCoder"]


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
