"""The protocol between :class:`~sdrindex.index.SDRIndex` and its backends.

A backend instance is one immutable **snapshot** of the indexed items: ``build`` and
``from_arrays`` make one, ``add`` and ``rebuild`` return a new one and leave the old one
untouched, so a query holding a snapshot never sees a half-made change. The facade does
everything else once for all backends: input validation, ids, the writer-only lock that
publishes snapshots, the file format (``index.json`` plus one ``.npy`` per array) and the
choice between serial and parallel batches.

Ids are insertion positions: ``build`` numbers its rows 0..n-1 and ``add`` continues from
``n_items``. ``query`` answers the top k by overlap ``|q AND x|``, ordered by overlap
descending then id ascending, padded with id -1 and overlap -1.

A new backend implements this protocol and registers under its name with
:func:`sdrindex.index.register_backend`; the facade needs no change.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
from numpy.typing import NDArray

__all__ = ["Backend", "Prepared"]


class Prepared(Protocol):
    """Background work a backend started ahead of a build (see ``Backend.prepare``)."""

    def close(self) -> None:
        """Stop the work and free what it holds (idempotent)."""


class Backend(Protocol):
    """One immutable snapshot of a backend's structures (see the module docstring)."""

    #: The name stored in ``index.json`` and accepted by ``SDRIndex(backend=...)``.
    name: ClassVar[str]
    #: The arrays ``arrays`` returns and ``from_arrays`` takes: name -> (dtype.str, ndim).
    array_specs: ClassVar[Mapping[str, tuple[str, int]]]
    #: The parameters a single query may override (``SDRIndex.query``'s keywords).
    search_params: ClassVar[tuple[str, ...]]

    @property
    def n_items(self) -> int:
        """Items indexed (the next id ``add`` gives)."""
        ...

    @property
    def n_buffered(self) -> int:
        """Items added since the last build/rebuild (``rebuild`` folds them in)."""
        ...

    @classmethod
    def prepare(cls, n_bits: int, n_items: int, params: dict[str, Any]) -> Prepared | None:
        """Start the one-off work a later ``build`` of ``n_items`` SDRs begins with, or None."""
        ...

    @classmethod
    def build(
        cls,
        packed: NDArray[np.uint8],
        n_bits: int,
        params: dict[str, Any],
        prepared: Prepared | None = None,
    ) -> Backend:
        """A snapshot of ``packed`` (n, n_bytes) uint8 SDRs, ids 0..n-1 (n >= 1)."""
        ...

    def add(self, packed: NDArray[np.uint8], n_bits: int) -> Backend:
        """A snapshot with ``packed`` (m >= 1 rows) added as ids n_items..n_items+m-1."""
        ...

    def rebuild(self, n_bits: int, params: dict[str, Any]) -> Backend:
        """A snapshot of the same items with the added ones folded into the main structure."""
        ...

    def query(
        self, queries: NDArray[np.uint8], k: int, params: dict[str, Any], n_chunks: int
    ) -> tuple[NDArray[np.int64], NDArray[np.int32]]:
        """(ids (nq, k) int64, overlaps (nq, k) int32) of nq >= 1 packed queries.

        ``n_chunks`` 1: on the calling thread; more: that many chunks of queries in
        parallel over numba's threads.
        """
        ...

    def arrays(self, n_bits: int) -> dict[str, np.ndarray]:
        """The arrays to save, as ``array_specs`` names them."""
        ...

    @classmethod
    def from_arrays(
        cls, arrays: dict[str, np.ndarray], n_bits: int, n_items: int, path: Path
    ) -> Backend:
        """The snapshot ``arrays`` saved; raises ``DataError`` naming the file at fault
        (under directory ``path``) when they are inconsistent."""
        ...
