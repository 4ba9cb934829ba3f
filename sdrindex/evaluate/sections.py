"""The report's sections other than reconstruction: each a function returning a dataclass.

Every section's ``to_dict()`` is its part of ``report.json`` (keys starting with ``_`` hold
arrays for the figures and are not written).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sdrindex.evaluate.metrics import mse, recall_at_k

__all__ = [
    "Section",
    "TestSet",
    "Encoded",
    "Neighbours",
    "Classification",
    "IndexRow",
    "NoiseRow",
    "NoiseSection",
    "SPStats",
    "load_test_set",
    "encode_queries",
    "find_neighbours",
    "classification_section",
    "index_section",
    "noise_section",
    "sp_stats",
]

#: Progress messages: ``log("building the index...")``.
Log = Callable[[str], None]


def plain(value: Any) -> Any:
    """Sections (and dicts / lists of them) -> their report dicts; anything else unchanged."""
    if isinstance(value, Section):
        return value.to_dict()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


class Section:
    """Base of the section dataclasses: ``to_dict`` maps each field to its report key
    (the field name, or ``metadata["key"]``), in field order."""

    def to_dict(self) -> dict[str, Any]:
        return {
            f.metadata.get("key", f.name): plain(getattr(self, f.name))
            for f in fields(self)  # type: ignore[arg-type]
        }


# --------------------------------------------------------------------------- inputs


@dataclass
class TestSet:
    """The evaluation queries: images (n, H, W) uint8, labels (n,), truth (n, H, W) on [0, 1]."""

    images: NDArray[np.uint8]
    labels: NDArray
    truth: NDArray[np.float32]

    @property
    def n(self) -> int:
        return int(self.images.shape[0])


def load_test_set(limit: int | None = None, data_dir: str | Path | None = None) -> TestSet:
    """The MNIST test set, or its first ``limit`` images."""
    from sdrindex.datasets import load_mnist

    images, labels = load_mnist("test", data_dir=data_dir)
    if limit:
        images, labels = images[:limit], labels[:limit]
    return TestSet(images, labels, images.astype(np.float32) / 255.0)


@dataclass
class Encoded:
    """The queries' packed SDRs (n, ceil(n_columns/8)) and the encoding time per query."""

    queries: NDArray[np.uint8]
    ms_per_query: float


def encode_queries(bundle: Any, images: NDArray) -> Encoded:
    """Encode images (n, H, W) with the bundle's SP, timed."""
    t = time.perf_counter()
    queries = bundle.encode(images)
    return Encoded(queries, 1000.0 * (time.perf_counter() - t) / images.shape[0])


@dataclass
class Neighbours:
    """The k nearest stored SDRs of every query: ids, overlaps (n, k); search time."""

    ids: NDArray[np.int64]
    overlaps: NDArray
    ms_per_query: float


def find_neighbours(bundle: Any, queries: NDArray[np.uint8], k: int) -> Neighbours:
    """One batched search of the bundle's index (after a warm-up call), timed."""
    bundle.index.query(queries[:2], k)
    t = time.perf_counter()
    ids, ov = bundle.index.query(queries, k)
    return Neighbours(ids, ov, 1000.0 * (time.perf_counter() - t) / queries.shape[0])


# --------------------------------------------------------------------------- labels


@dataclass
class Classification(Section):
    """Label accuracies from the SDRs: 1-NN, k-NN vote, logistic readout."""

    nn1_accuracy: float
    knn_accuracy: float
    logistic_accuracy: float
    k: int
    vote: str
    index_ms_per_query: float


def nearest_labels(bundle: Any, ids: NDArray) -> NDArray:
    """The stored label of each query's nearest neighbour (ids of shape (n, >= 1))."""
    return np.asarray(bundle.table.labels)[bundle.table.positions(ids[:, 0])]


def classification_section(
    bundle: Any,
    test: TestSet,
    queries: NDArray[np.uint8],
    neighbours: Neighbours,
    knn: Any,
    logistic: Any,
) -> Classification:
    """Accuracy of the labels read from the query SDRs (``knn``, ``logistic``: labelers)."""
    knn_pred = knn.predict_from_neighbours(neighbours.ids, neighbours.overlaps)
    return Classification(
        nn1_accuracy=float(np.mean(nearest_labels(bundle, neighbours.ids) == test.labels)),
        knn_accuracy=float(np.mean(knn_pred == test.labels)),
        logistic_accuracy=float(np.mean(logistic.predict(queries) == test.labels)),
        k=knn.k,
        vote="overlap-weighted",
        index_ms_per_query=neighbours.ms_per_query,
    )


# --------------------------------------------------------------------------- index


@dataclass
class IndexRow(Section):
    """One backend: recall@10 against exact (ties counted), QPS batched / one at a time."""

    recall_at_10: float | None
    qps: float
    qps_single: float
    build_seconds: float | None


def _timed_queries(idx: Any, queries: NDArray[np.uint8]) -> tuple[NDArray, float, float]:
    """Overlaps of a batched top-10 search and the QPS batched / one query at a time."""
    idx.query(queries[:2], 10)  # warm-up: numba dispatch of the batched path
    idx.query(queries[:1], 10)  # and of the one-query path
    t = time.perf_counter()
    _, ov = idx.query(queries, 10)
    batch_s = time.perf_counter() - t
    n_single = min(300, queries.shape[0])
    t = time.perf_counter()
    for i in range(n_single):
        idx.query(queries[i : i + 1], 10)
    single_s = time.perf_counter() - t
    return ov, queries.shape[0] / max(batch_s, 1e-9), n_single / max(single_s, 1e-9)


def index_section(
    bundle: Any, queries: NDArray[np.uint8], backends: tuple[str, ...], log: Log
) -> dict[str, IndexRow]:
    """Recall@10 against the exact backend and QPS, per backend (the bundle's own index is
    reused; the others are built from its SDRs)."""
    from sdrindex.index import SDRIndex

    n_bits = int(bundle.sp.n_columns)
    sdrs = np.asarray(bundle.table.sdrs)
    indexes: dict[str, Any] = {}
    builds: dict[str, float | None] = {}
    for b in backends:
        if bundle.index.backend == b:
            indexes[b], builds[b] = bundle.index, None
        else:
            log(f"  building the {b} index...")
            t = time.perf_counter()
            indexes[b] = SDRIndex(b).fit(sdrs, n_bits)
            builds[b] = time.perf_counter() - t
    rows: dict[str, IndexRow] = {}
    exact_ov = None
    for b in ("exact", *[x for x in backends if x != "exact"]):
        if b not in indexes:
            continue
        ov, qps, qps_single = _timed_queries(indexes[b], queries)
        if b == "exact":
            exact_ov = ov
        recall = recall_at_k(ov, exact_ov, 10) if exact_ov is not None else None
        rows[b] = IndexRow(recall, qps, qps_single, builds[b])
    return rows


# --------------------------------------------------------------------------- noise


@dataclass
class NoiseRow(Section):
    """Accuracies and MSE at one fraction of swapped active bits (``mse``: the knn blend)."""

    swap_fraction: float
    accuracy: float
    nn1_accuracy: float
    logistic_accuracy: float
    mse: float
    mse_by_method: dict[str, float]


@dataclass
class NoiseSection:
    """The rows, and the k-NN accuracy lost at 30 % swapped (points; None if not measured)."""

    rows: list[NoiseRow]
    drop_at_30pct_points: float | None = None


def noise_section(
    bundle: Any,
    test: TestSet,
    queries: NDArray[np.uint8],
    fractions: tuple[float, ...],
    k: int,
    knn: Any,
    logistic: Any,
    reconstructors: Mapping[str, Any],
    seed: int = 0,
) -> NoiseSection:
    """Labels and reconstructions when a fraction of each query's active bits is swapped
    for random inactive ones (``reconstructors``: name -> reconstructor, ``knn`` among them)."""
    from sdrindex.sdr import add_noise

    n_bits = int(bundle.sp.n_columns)
    rows = []
    for f in fractions:
        noisy = queries if f == 0 else add_noise(queries, n_bits, f, "swap", seed=seed)
        nids, nov = bundle.index.query(noisy, k)
        by_method = {}
        for name, rec in reconstructors.items():
            if hasattr(rec, "from_neighbours"):
                img = rec.from_neighbours(nids, nov)
            else:
                img = rec.reconstruct(noisy)
            by_method[name] = mse(test.truth, img)
        pred = knn.predict_from_neighbours(nids, nov)
        rows.append(
            NoiseRow(
                swap_fraction=float(f),
                accuracy=float(np.mean(pred == test.labels)),
                nn1_accuracy=float(np.mean(nearest_labels(bundle, nids) == test.labels)),
                logistic_accuracy=float(np.mean(logistic.predict(noisy) == test.labels)),
                mse=by_method["knn"],
                mse_by_method=by_method,
            )
        )
    at30 = [r for r in rows if abs(r.swap_fraction - 0.3) < 1e-9]
    drop = 100.0 * (rows[0].accuracy - at30[0].accuracy) if rows and at30 else None
    return NoiseSection(rows, drop)


# --------------------------------------------------------------------------- SP


@dataclass
class SPStats(Section):
    """Sparsity and column usage of the SP on the training table and the queries."""

    n_columns: int
    active_bits_mean: float
    active_bits_min: int
    active_bits_max: int
    sparsity: float
    columns_ever_active: int
    columns_ever_active_test: int
    mean_column_entropy_bits: float
    activation_histogram: dict[str, Any]
    #: (n_columns,) fraction of training images activating each column (for the figure).
    activation_frequency: NDArray[np.float64] = field(metadata={"key": "_activation_frequency"})


def _activation_frequency(sdrs: NDArray[np.uint8], n_bits: int) -> NDArray[np.float64]:
    freq = np.zeros(n_bits, np.float64)
    for lo in range(0, sdrs.shape[0], 8192):
        freq += np.unpackbits(sdrs[lo : lo + 8192], axis=1, count=n_bits).sum(axis=0)
    return freq / max(sdrs.shape[0], 1)


def sp_stats(bundle: Any, queries: NDArray[np.uint8]) -> SPStats:
    """Sparsity of the query SDRs; column activation frequencies and entropies on the
    training table."""
    n_bits = int(bundle.sp.n_columns)
    freq = _activation_frequency(np.asarray(bundle.table.sdrs), n_bits)
    test_dense = np.unpackbits(queries, axis=1, count=n_bits)
    active = test_dense.sum(axis=1)
    p = np.clip(freq, 1e-12, 1 - 1e-12)
    entropy = np.where((freq > 0) & (freq < 1), -(p * np.log2(p) + (1 - p) * np.log2(1 - p)), 0.0)
    counts, edges = np.histogram(freq, bins=20, range=(0.0, max(float(freq.max()), 1e-9)))
    return SPStats(
        n_columns=n_bits,
        active_bits_mean=float(active.mean()),
        active_bits_min=int(active.min()),
        active_bits_max=int(active.max()),
        sparsity=float(active.mean() / n_bits),
        columns_ever_active=int((freq > 0).sum()),
        columns_ever_active_test=int((test_dense.sum(axis=0) > 0).sum()),
        mean_column_entropy_bits=float(entropy.mean()),
        activation_histogram={
            "bin_edges": edges.tolist(),
            "counts": counts.tolist(),
            "what": "columns by the fraction of training images that activate them",
        },
        activation_frequency=freq,
    )
