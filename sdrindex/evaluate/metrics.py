"""The measures of the evaluation: image errors, recall with ties, a fixed pixel classifier.

Definitions: MSE is the mean over images and pixels of the squared error on [0, 1];
``psnr = 10 log10(1 / mse)`` of that mean; SSIM is the mean of scikit-image's
``structural_similarity(data_range=1)`` over images. The pixel-space classifier is PCA
(50 components) followed by a distance-weighted 3-NN vote, fitted on the training images
once and applied unchanged to originals and reconstructions.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray

__all__ = ["mse", "psnr", "mean_ssim", "recall_at_k", "PixelClassifier", "flat01", "pixel_oracle"]


def mse(a: NDArray, b: NDArray) -> float:
    """Mean squared error over all images and pixels (inputs in [0, 1])."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return float(np.mean(d * d))


def psnr(m: float) -> float:
    """PSNR in dB of a mean squared error on [0, 1] pixels (``inf`` for 0)."""
    return float("inf") if m <= 0 else float(10.0 * math.log10(1.0 / m))


def mean_ssim(a: NDArray, b: NDArray) -> float:
    """Mean SSIM over images (scikit-image, ``data_range=1``), images (n, H, W) in [0, 1]."""
    from skimage.metrics import structural_similarity

    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    return float(
        np.mean([structural_similarity(x, y, data_range=1.0) for x, y in zip(a, b, strict=True)])
    )


def recall_at_k(approx_overlaps: NDArray, exact_overlaps: NDArray, k: int = 10) -> float:
    """Recall@k with ties counted.

    A returned item is right when its overlap is at least the exact k-th best overlap of its
    query (items tied there are interchangeable). Overlaps are those the index returns (the
    backends rank by exact overlap, so they are true overlaps).
    """
    kth = exact_overlaps[:, k - 1 : k]
    got = approx_overlaps[:, :k]
    return float(np.mean((got >= kth) & (got >= 0)))


def flat01(images: NDArray) -> NDArray[np.float32]:
    """Images (n, H, W), uint8 or float in [0, 1] -> (n, H * W) float32 in [0, 1]."""
    arr = np.asarray(images)
    x = arr.reshape(arr.shape[0], -1).astype(np.float32)
    return x / 255.0 if arr.dtype == np.uint8 else x


def pixel_oracle(train01: NDArray[np.float32], test01: NDArray[np.float32]) -> NDArray[np.int64]:
    """Row positions (n_test,) of the training images (n_train, P) nearest (Euclidean) to
    each test image (n_test, P)."""
    sq = np.einsum("ij,ij->i", train01, train01)
    out = np.empty(test01.shape[0], np.int64)
    for lo in range(0, test01.shape[0], 1000):
        d = sq[None, :] - 2.0 * (test01[lo : lo + 1000] @ train01.T)
        out[lo : lo + 1000] = np.argmin(d, axis=1)
    return out


class PixelClassifier:
    """The fixed pixel-space classifier: PCA (50 components) + distance-weighted 3-NN.

    Fitted once on the training images and applied unchanged to originals and every
    reconstruction, so its accuracy measures how much of the digit a reconstruction keeps.
    """

    description = "PCA(50) + distance-weighted 3-NN on [0,1] pixels, fitted on the training images"

    def __init__(self, n_components: int = 50, k: int = 3) -> None:
        self.n_components = n_components
        self.k = k

    def fit(self, images: NDArray, labels: NDArray) -> PixelClassifier:
        """Fit on images (n, H, W) and their labels (n,)."""
        from sklearn.decomposition import PCA
        from sklearn.neighbors import KNeighborsClassifier

        x = flat01(images)
        self.pca_ = PCA(n_components=min(self.n_components, *x.shape), random_state=0).fit(x)
        self.knn_ = KNeighborsClassifier(self.k, weights="distance", algorithm="brute")
        self.knn_.fit(self.pca_.transform(x), labels)
        return self

    def predict(self, images: NDArray) -> NDArray:
        """Labels (n,) of images (n, H, W)."""
        return self.knn_.predict(self.pca_.transform(flat01(images)))
