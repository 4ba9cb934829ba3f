"""Answers' pieces: stage timings, PNGs, SDRs as index lists, match descriptions."""

from __future__ import annotations

import base64
import io
import time
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sdr_service.state import Loaded
from sdrindex.sdr import row_popcount


class Timer:
    """Collects stage durations in milliseconds."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.last = self.start
        self.ms: dict[str, float] = {}

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.ms[stage] = round(self.ms.get(stage, 0.0) + (now - self.last) * 1000.0, 3)
        self.last = now

    def total(self) -> dict[str, float]:
        self.ms["total"] = round((time.perf_counter() - self.start) * 1000.0, 3)
        return self.ms


def png_bytes(image: NDArray[np.uint8], scale: int = 1) -> bytes:
    """A greyscale image (H, W) uint8 -> PNG bytes, upscaled ``scale`` times."""
    from PIL import Image

    if scale > 1:
        image = np.kron(image, np.ones((scale, scale), np.uint8))
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image), mode="L").save(buf, "PNG", compress_level=1)
    return buf.getvalue()


def b64png(image: NDArray[np.uint8]) -> str:
    """A greyscale image (H, W) uint8 -> base64 PNG text (for JSON)."""
    return base64.b64encode(png_bytes(image)).decode("ascii")


def to_uint8(images: NDArray) -> NDArray[np.uint8]:
    """Reconstructions in [0, 1] (any float shape) -> uint8 0-255, rounded."""
    return np.rint(np.clip(np.asarray(images, np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)


def sdr_out(packed_row: NDArray[np.uint8], n_columns: int) -> dict[str, Any]:
    """One packed SDR (ceil(n_columns / 8),) -> ``{"active": [ints], "size": n_columns}``."""
    active = np.flatnonzero(np.unpackbits(packed_row, count=n_columns))
    return {"active": active.tolist(), "size": n_columns}


def describe_matches(
    loaded: Loaded, query: NDArray[np.uint8], ids: NDArray, overlaps: NDArray
) -> list[dict[str, Any]]:
    """``[{"id", "label", "overlap", "jaccard"}]`` for one query's neighbours.

    ``query`` is the packed SDR (ceil(n_columns / 8),); ``ids`` and ``overlaps`` are (k,)
    with -1 ids for missing neighbours (left out).
    """
    ok = ids >= 0
    ids, overlaps = ids[ok].astype(np.int64), overlaps[ok].astype(np.int64)
    if ids.size == 0:
        return []
    table = loaded.bundle.table
    pos = table.positions(ids)
    sizes = row_popcount(np.asarray(table.sdrs[pos]))  # only these rows (a sharded table fetches)
    union = int(row_popcount(query).sum()) + sizes - overlaps
    jac = np.where(union > 0, overlaps / np.maximum(union, 1), 0.0)
    labels = None if table.labels is None else np.asarray(table.labels)[pos].tolist()
    return [
        {
            "id": int(i),
            "label": None if labels is None else int(labels[j]),
            "overlap": int(overlaps[j]),
            "jaccard": round(float(jac[j]), 6),
        }
        for j, i in enumerate(ids.tolist())
    ]
