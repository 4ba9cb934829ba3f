"""NN-descent, the graph backend's k-NN graph builder (sdrindex.index._nndescent)."""

import numpy as np
import pytest

from sdrindex import sdr
from sdrindex.index import _nndescent
from sdrindex.index._nndescent import nn_descent


@pytest.fixture(scope="module")
def clustered():
    n_bits = 512
    packed = sdr.random_sdrs(3000, n_bits, 24, seed=3, clusters=40, spread=0.6)
    return n_bits, np.unique(packed, axis=0)


def exact_knn(words, k, hamming=False):
    """Brute force: the k nearest distances of every row (self excluded)."""
    counts = sdr.row_popcount(words).astype(np.int64)
    ov = np.empty((len(words), len(words)), np.int32)
    sdr.overlap_matrix(words, words, ov)
    union = counts[:, None] + counts[None, :] - ov
    d = (union - ov).astype(float) if hamming else 1.0 - ov / np.maximum(union, 1)
    np.fill_diagonal(d, np.inf)
    return d, np.sort(d, axis=1)[:, :k]


@pytest.mark.parametrize("hamming, large", [(False, False), (True, False), (False, True)])
def test_nn_descent_finds_the_nearest_neighbours(clustered, hamming, large, monkeypatch):
    if large:  # the large-input path: fewer candidates, rows worked on in min-hash order
        monkeypatch.setattr(_nndescent, "_LARGE", 1000)
    n_bits, packed = clustered
    words = sdr.to_words(packed)
    k = 10
    graph = nn_descent(words, n_bits, k, hamming=hamming, seed=1)
    assert graph.shape == (len(words), k) and graph.dtype == np.int32
    d, kth = exact_knn(words, k, hamming)
    rows = np.arange(len(words))[:, None]
    got = d[rows, graph]
    # each row lists distinct other vertices, nearest first
    assert np.all(graph != rows) and all(len(set(r)) == k for r in graph)
    assert np.all(np.diff(got, axis=1) >= 0)
    # recall counting ties: a neighbour is right when it is no farther than the true k-th
    recall = float(np.mean(got <= kth[:, -1:]))
    assert recall >= (0.9 if large else 0.97), recall


@pytest.mark.parametrize("large", [False, True])
def test_nn_descent_is_the_same_for_any_number_of_threads(clustered, large, monkeypatch):
    if large:
        monkeypatch.setattr(_nndescent, "_LARGE", 1000)
    n_bits, packed = clustered
    words = sdr.to_words(packed)
    one = nn_descent(words, n_bits, 8, seed=5, threads=1)
    three = nn_descent(words, n_bits, 8, seed=5, threads=3)
    np.testing.assert_array_equal(one, three)


def test_nn_descent_rejects_a_k_it_cannot_fill(clustered):
    n_bits, packed = clustered
    words = sdr.to_words(packed[:20])
    with pytest.raises(ValueError, match="k must be in 1..19"):
        nn_descent(words, n_bits, 20)
