"""SDRIndex: nearest neighbours of SDRs by overlap, over a pluggable backend.

The score of a stored SDR ``x`` for a query ``q`` is their **overlap** ``|q AND x|`` (shared
active bits). Results are ordered by overlap descending, then id ascending, and ids are the
insertion positions: ``fit`` numbers its rows 0..n-1 and each ``add`` continues from there
(so an index built from ``TrainingTable.sdrs`` answers with table row positions).

Backends (:mod:`sdrindex.index.registry`; each behind :class:`~sdrindex.index.backend.Backend`):
``"exact"`` (:mod:`~sdrindex.index.exact`: posting lists or a popcount scan; the ground
truth), ``"nndescent"`` (:mod:`~sdrindex.index.graph`: an NN-descent k-NN graph searched
best-first by our kernels; approximate, returns true overlaps) and ``"dyadic"``
(:mod:`~sdrindex.index.dyadic`: Overmann's Dyadic Memory recalling identifier codes,
re-ranked by true overlap; approximate, for SDRs with few active bits).

Thread safety: queries read an immutable snapshot of the index (a backend instance) and
allocate their own work space, so any number of threads may query at once, also while
another thread calls ``add`` or ``rebuild`` (mutations are serialised by a lock and publish
a new snapshot). Batched queries run in parallel over numba's threads (OpenMP layer here,
which is thread safe but not fork safe: fork worker processes before the first batched
query).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numba
import numpy as np
from numpy.typing import ArrayLike, NDArray

from .._store import load_array, read_json, save_arrays, write_json
from ..errors import ParameterError, SDRIndexError
from ..sdr import validate
from .backend import Backend, Prepared
from .format import FORMAT, FORMAT_VERSION, check_array_specs, check_header
from .params import NNDESCENT_DEFAULTS, check_params
from .registry import backend_class, backend_names

__all__ = ["SDRIndex"]


def _parallel_ok() -> bool:
    """False under numba's workqueue threading layer, which must not be entered concurrently."""
    try:
        return numba.threading_layer() != "workqueue"
    except ValueError:  # no parallel function has run yet
        return True


class SDRIndex:
    """Nearest neighbours of SDRs by overlap.

    Parameters
    ----------
    backend : {"exact", "nndescent", "dyadic"} or a name given to ``register_backend``
        ``"exact"``: inverted index, exact. ``"nndescent"``: approximate, graph search.
        ``"dyadic"``: approximate, associative memory (its shape: ``DyadicConfig``'s
        defaults; ``random_state`` seeds it). The other parameters concern nndescent only
        (defaults: ``NNDESCENT_DEFAULTS``).
    n_neighbors : int or None
        nndescent: neighbours per distinct SDR in the k-NN graph NN-descent builds (None:
        20 for up to 100,000 distinct SDRs with >= 64 active bits on average, else 30;
        ``_graph_neighbors``).
    n_trees : int or None
        nndescent: min-hash orders NN-descent starts from (the part pynndescent's random
        projection trees play; None: 6).
    n_iters : int or None
        nndescent: NN-descent rounds at most (None: max(5, round(log2 n))).
    diversify_prob : float in [0, 1]
        nndescent: probability of dropping an edge i->j when a kept neighbour of i is closer
        to j than i is (0 keeps every k-NN edge).
    pruning_degree_multiplier : float
        nndescent: the search graph keeps at most ``round(multiplier * n_neighbors)`` edges
        per vertex (the closest of the kept and reverse edges).
    ef : int or None
        nndescent: the search keeps the ``max(ef, k)`` best distinct SDRs it meets
        (more: higher recall, slower). None: 10 (16 for SDRs with < 64 active bits on
        average), growing beyond 100k distinct SDRs (``_auto_search``: 32 at 1M). Can be
        overridden per query.
    epsilon : float >= 0 or None
        nndescent: vertices are explored while their overlap exceeds
        ``worst - floor(epsilon * (active_query_bits - worst))`` (``worst``: the smallest
        overlap kept), so only queries with many active bits search wider. None: 0.1,
        growing beyond 100k distinct SDRs (0.2 at 1M). Can be overridden per query.
    n_entry_points : int
        nndescent: start vertices per query, at most, taken among vertices that share the
        query's active bits (``entries_per_bit`` per bit; a query without any starts from
        8 spread-out vertices). Can be overridden per query.
    entries_per_bit : int
        nndescent: random vertices remembered per bit as start vertices (build time).
    metric : {"bit_jaccard", "bit_hamming"}
        nndescent: metric of the k-NN graph (both order neighbours by overlap when all SDRs
        have the same number of active bits).
    random_state : int or None
        nndescent: seed of the build. dyadic: seed of the identifier codes and of the
        order that picks the bits an SDR writes (None: 0; must be >= 0).
    n_jobs : int or None
        nndescent: threads used by NN-descent while building (None: numba's setting).

    Notes
    -----
    Ids are insertion positions (``fit``: 0..n-1, then ``add`` continues). ``query`` returns
    exactly k columns: when the index holds fewer than k items, the missing slots have id -1
    and overlap -1 (padding, not clamping, keeps result shapes fixed).

    nndescent returns true overlaps, ordered like the exact backend; it may miss items
    (approximate), and among equal overlaps it may return other ids than the exact backend's
    lowest ones.

    Examples
    --------
    >>> index = SDRIndex("nndescent").fit(sdrs, n_bits=1369)  # doctest: +SKIP
    >>> ids, overlaps = index.query(queries, k=10)  # doctest: +SKIP
    >>> index.save("index/"); index = SDRIndex.load("index/")  # doctest: +SKIP
    """

    def __init__(
        self,
        backend: str = "exact",
        *,
        n_neighbors: int | None = NNDESCENT_DEFAULTS["n_neighbors"],
        n_trees: int | None = NNDESCENT_DEFAULTS["n_trees"],
        n_iters: int | None = NNDESCENT_DEFAULTS["n_iters"],
        diversify_prob: float = NNDESCENT_DEFAULTS["diversify_prob"],
        pruning_degree_multiplier: float = NNDESCENT_DEFAULTS["pruning_degree_multiplier"],
        ef: int | None = NNDESCENT_DEFAULTS["ef"],
        epsilon: float | None = NNDESCENT_DEFAULTS["epsilon"],
        n_entry_points: int = NNDESCENT_DEFAULTS["n_entry_points"],
        entries_per_bit: int = NNDESCENT_DEFAULTS["entries_per_bit"],
        metric: str = NNDESCENT_DEFAULTS["metric"],
        random_state: int | None = NNDESCENT_DEFAULTS["random_state"],
        n_jobs: int | None = NNDESCENT_DEFAULTS["n_jobs"],
    ) -> None:
        self.backend = backend
        self.params: dict[str, Any] = {
            "n_neighbors": n_neighbors,
            "n_trees": n_trees,
            "n_iters": n_iters,
            "diversify_prob": diversify_prob,
            "pruning_degree_multiplier": pruning_degree_multiplier,
            "ef": ef,
            "epsilon": epsilon,
            "n_entry_points": n_entry_points,
            "entries_per_bit": entries_per_bit,
            "metric": metric,
            "random_state": random_state,
            "n_jobs": n_jobs,
        }
        self._backend_class = backend_class(backend)
        check_params(self.params)
        self.n_bits: int | None = None
        self._state: Backend | None = None  # the snapshot queries read; replaced, never changed
        self._lock = threading.Lock()  # serialises writers only
        self._builder: Prepared | None = None

    # ------------------------------------------------------------------ sizes

    def __len__(self) -> int:
        state = self._state
        return 0 if state is None else state.n_items

    @property
    def n_buffered(self) -> int:
        """Items added since the last build/rebuild, searched exactly beside the graph."""
        state = self._state
        return 0 if state is None else state.n_buffered

    def __repr__(self) -> str:
        return f"SDRIndex(backend={self.backend!r}, n_bits={self.n_bits}, n_items={len(self)})"

    # ------------------------------------------------------------------ input

    def _packed(self, sdrs: ArrayLike, n_bits: int | None, what: str) -> NDArray[np.uint8]:
        if n_bits is None:
            arr = np.asarray(sdrs)
            if arr.ndim != 2:
                raise ParameterError(
                    f"{what} must be 2-D (n, n_bits) dense 0/1, or packed with n_bits given; "
                    f"got shape {arr.shape}"
                )
            if arr.dtype == np.uint8 and arr.size and int(arr.max()) > 1:
                raise ParameterError(
                    f"{what} look packed (uint8 values above 1): pass n_bits= to say the SDR width"
                )
            n_bits = arr.shape[1]
        return validate(sdrs, n_bits, what)

    def _query_packed(self, sdrs: ArrayLike) -> NDArray[np.uint8]:
        if self._state is None or self.n_bits is None:
            raise SDRIndexError("the index is empty: call fit(sdrs) before query or add")
        return validate(sdrs, self.n_bits, "query SDRs")

    # ------------------------------------------------------------------ build

    def prepare_fit(self, n_bits: int, n_items: int) -> None:
        """Start, in the background, the one-off work a later ``fit`` of ``n_items``
        ``n_bits``-bit SDRs begins with (``Backend.prepare``; the built-in backends have
        none), so that it overlaps with whatever the caller does first. The next ``fit``
        uses (and then stops) it; it does nothing when the backend has no such work."""
        prepared = self._backend_class.prepare(n_bits, n_items, self.params)
        if prepared is None:
            return
        if self._builder is not None:
            self._builder.close()
        self._builder = prepared

    def cancel_fit(self) -> None:
        """End what :meth:`prepare_fit` started, when the fit will not come (an error)."""
        builder, self._builder = self._builder, None
        if builder is not None:
            builder.close()

    def fit(self, sdrs: ArrayLike, n_bits: int | None = None) -> SDRIndex:
        """Index a batch of SDRs (replacing anything indexed before).

        Parameters
        ----------
        sdrs : array_like
            Dense of shape (n, n_bits) with 0/1 values, or packed of shape
            (n, ceil(n_bits/8)) uint8 together with ``n_bits``.
        n_bits : int, optional
            The SDR width; required for packed input, inferred from dense input.

        Returns
        -------
        self
        """
        packed = self._packed(sdrs, n_bits, "SDRs")
        if packed.shape[0] == 0:
            raise ParameterError("cannot fit an index on 0 SDRs: pass at least one row")
        if packed.shape[0] >= 2**31:
            raise ParameterError("at most 2**31 - 1 SDRs can be indexed")
        n_bits = n_bits if n_bits is not None else np.asarray(sdrs).shape[-1]
        builder, self._builder = self._builder, None
        try:
            with self._lock:
                state = self._backend_class.build(packed, n_bits, self.params, builder)
                self.n_bits = int(n_bits)
                self._state = state
        finally:
            if builder is not None:
                builder.close()
        return self

    def add(self, sdrs: ArrayLike) -> NDArray[np.int64]:
        """Add SDRs; they are found by the very next query.

        Parameters
        ----------
        sdrs : array_like
            Dense (n, n_bits) 0/1 or packed (n, ceil(n_bits/8)) uint8, of the fitted width.

        Returns
        -------
        ndarray of shape (n,), int64
            The new ids, continuing after the largest id so far.
        """
        packed = self._query_packed(sdrs)
        with self._lock:
            state = self._state
            start = state.n_items
            if packed.shape[0] == 0:
                return np.zeros(0, dtype=np.int64)
            if start + packed.shape[0] >= 2**31:
                raise ParameterError("at most 2**31 - 1 SDRs can be indexed")
            self._state = state.add(packed, self.n_bits)
        return np.arange(start, start + packed.shape[0], dtype=np.int64)

    def rebuild(self) -> SDRIndex:
        """Fold the added SDRs into the main structure (nndescent: rebuilds the graph)."""
        with self._lock:
            state = self._state
            if state is None or state.n_buffered == 0:
                return self
            self._state = state.rebuild(self.n_bits, self.params)
        return self

    # ------------------------------------------------------------------ query

    def query(
        self,
        sdrs: ArrayLike,
        k: int = 10,
        *,
        ef: int | None = None,
        epsilon: float | None = None,
        n_entry_points: int | None = None,
    ) -> tuple[NDArray[np.int64], NDArray[np.int32]]:
        """The k stored SDRs of largest overlap with each query.

        Parameters
        ----------
        sdrs : array_like
            Queries, dense (n_queries, n_bits) 0/1 or packed (n_queries, ceil(n_bits/8))
            uint8; a 1-D array is one query.
        k : int
            Neighbours per query.
        ef, epsilon, n_entry_points : optional
            nndescent: override the search parameters of the same names for this call.

        Returns
        -------
        ids : ndarray of shape (n_queries, k), int64
        overlaps : ndarray of shape (n_queries, k), int32
            Row i is ordered by overlap descending, then id ascending. When fewer than k
            items are indexed the remaining slots hold id -1 and overlap -1.
        """
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ParameterError(f"k must be an integer >= 1, got {k!r}")
        k = int(k)
        queries = self._query_packed(sdrs)
        if not queries.flags.writeable:
            # numba compiles a kernel once per array type and read-only is another type:
            # every caller (a memory-mapped table row too) meets the one compiled version
            queries = queries.copy()
        state = self._state  # one snapshot for the whole call
        nq = queries.shape[0]
        if nq == 0:
            return np.empty((0, k), dtype=np.int64), np.empty((0, k), dtype=np.int32)
        p = self.params
        if ef is not None or epsilon is not None or n_entry_points is not None:
            given = {"ef": ef, "epsilon": epsilon, "n_entry_points": n_entry_points}
            over = {n: v for n, v in given.items() if v is not None and n in state.search_params}
            if over:
                p = {**p, **over}
                check_params(p)
        parallel = nq > 1 and _parallel_ok()
        n_chunks = min(nq, 4 * numba.get_num_threads()) if parallel else 1
        return state.query(queries, k, p, n_chunks)

    # ------------------------------------------------------------------ persistence

    def _arrays(self) -> dict[str, np.ndarray]:
        """The arrays ``save`` writes, named as the backend's ``array_specs``."""
        return self._state.arrays(self.n_bits)

    def save(self, path: str | Path) -> None:
        """Write the index to a directory as plain ``.npy`` files and ``index.json``.

        Nothing is pickled. Existing files of the same names are replaced; the directory is
        created if needed. (For atomic replacement, save into a fresh directory and rename.)
        """
        state = self._state
        if state is None:
            raise SDRIndexError("nothing to save: call fit(sdrs) first")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        arrays = state.arrays(self.n_bits)
        specs = save_arrays(path, arrays)
        meta = {
            "format": FORMAT,
            "version": FORMAT_VERSION,
            "backend": self.backend,
            "n_bits": self.n_bits,
            "n_items": state.n_items,
            "params": self.params,
            "arrays": specs,
        }
        write_json(path / "index.json", meta)

    @classmethod
    def load(cls, path: str | Path, mmap: bool = True) -> SDRIndex:
        """Read an index written by :meth:`save`.

        Parameters
        ----------
        path : str or Path
            The directory.
        mmap : bool
            Map the arrays read-only (``mmap_mode="r"``) so processes share one copy through
            the page cache; ``False`` reads them into memory.

        Raises
        ------
        DataError
            When a file is missing, unreadable, of the wrong dtype/shape, or inconsistent;
            the message names the file (``Bundle.load`` turns it into a ``BundleError``).
        """
        path = Path(path)
        meta_file = path / "index.json"
        meta = read_json(meta_file, f"is {path} an index saved by SDRIndex.save?")
        check_header(meta, meta_file, backend_names())
        backend = meta["backend"]
        check_array_specs(meta, meta_file, backend_class(backend).array_specs)
        index = cls(backend, **meta["params"])
        n_bits, n_items = meta["n_bits"], meta["n_items"]
        arrays = {
            name: load_array(path / f"{name}.npy", mmap, spec["dtype"], spec["shape"], "index")
            for name, spec in meta["arrays"].items()
        }
        index.n_bits = n_bits
        index._state = index._backend_class.from_arrays(arrays, n_bits, n_items, path)
        return index
