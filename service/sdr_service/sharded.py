"""Writes to a sharded bundle served without Ray (every shard in the worker's process)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sdrindex.errors import BundleError, SDRIndexError

from .errors import ApiError


def add_items(
    svc: Any, images: NDArray[np.uint8], labels: NDArray[np.int64] | None
) -> tuple[NDArray[np.int64], Any]:
    """``BundleService.add_items`` (``svc``) on a sharded bundle: opened afresh (another
    worker may have added), each item saved on its shard before the answer, then a top-level version
    pinning them (the shard set holds the bundle's update lock for all of it), which every
    worker loads at its next request."""
    with svc._write_lock:
        try:
            bundle = svc.open_bundle(verify=False)
        except SDRIndexError as exc:
            raise ApiError(
                503,
                f"the items were not added: {svc.name} does not load ({svc.public(str(exc))})",
                {"Retry-After": str(max(1, math.ceil(svc.settings.retry_backoff_s)))},
            ) from exc
        try:
            if bundle.table.has_labels != (labels is not None):
                has = (
                    "has labels: give a `label` for every image"
                    if bundle.table.has_labels
                    else "has no labels: add images without `label`"
                )
                raise ApiError(422, f"this bundle {has}")
            ids = bundle.add(images, labels)
        except (BundleError, OSError) as exc:
            raise svc._write_failure(exc, "save the new items") from exc
        finally:
            bundle.close()
    return ids, svc.current()
