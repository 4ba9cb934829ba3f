"""The preamble every query endpoint shares: parse the body, encode, search the index.

``/v1/reconstruct``, ``/v1/search`` and ``/v1/search/batch`` differ only in what they do
with the neighbours; the parsing, the encoding of image queries (one ``Bundle.encode``
call for all of them) and the search, with their stage timings, are here once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from sdr_service.inputs import Query, parse_query
from sdr_service.render import Timer
from sdr_service.state import BundleService, Loaded


@dataclass(frozen=True)
class Searched:
    """Queries with their SDRs and nearest stored items."""

    queries: list[Query]
    packed: NDArray[np.uint8]  # (n, ceil(n_columns / 8)) packed SDRs
    ids: NDArray[np.int64]  # (n, want) item ids, -1 where fewer items exist
    overlaps: NDArray[np.int64]  # (n, want) active bits shared with each item


def encode_queries(
    svc: BundleService, loaded: Loaded, queries: list[Query], timer: Timer
) -> NDArray[np.uint8]:
    """Parsed queries -> packed SDRs (n, ceil(n_columns / 8)); images encoded in one call."""
    packed = np.zeros((len(queries), (loaded.n_columns + 7) // 8), np.uint8)
    img_rows = []
    for i, q in enumerate(queries):
        if q.kind == "sdr":
            assert q.packed is not None
            packed[i] = q.packed[0]
        else:
            img_rows.append(i)
    if img_rows:
        images = np.stack([queries[i].image for i in img_rows])
        packed[img_rows] = svc.encode(loaded, images)
        timer.lap("encode")
    return packed


def search_queries(
    svc: BundleService, loaded: Loaded, queries: list[Query], want: int, timer: Timer
) -> Searched:
    """Encode ``queries`` and find the ``want`` stored items overlapping each most."""
    packed = encode_queries(svc, loaded, queries, timer)
    ids, overlaps = svc.query(loaded, packed, want)
    timer.lap("search")
    return Searched(queries, packed, ids, overlaps)


def search_body(
    svc: BundleService,
    loaded: Loaded,
    content_type: str | None,
    body: bytes,
    want: int,
    timer: Timer,
) -> Searched:
    """One query from any accepted body (upload, pixels, SDR), encoded and searched."""
    q = parse_query(
        content_type, body, loaded.n_columns, loaded.image_shape, svc.settings.max_image_pixels
    )
    timer.lap("decode" if q.kind == "image" else "parse")
    return search_queries(svc, loaded, [q], want, timer)
