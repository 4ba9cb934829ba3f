"""Merging per-shard top-k lists into one, with the single index's ordering.

Each shard answers its own top k by (overlap descending, global id ascending); the global
top k is a subset of the union of those lists, so sorting the union by the same key and
keeping k reproduces what one exact index over all items returns, ties included.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from sdrindex.errors import ParameterError

__all__ = ["merge_topk"]


def merge_topk(
    ids: Sequence[NDArray[np.int64]], overlaps: Sequence[NDArray[np.int32]], k: int
) -> tuple[NDArray[np.int64], NDArray[np.int32]]:
    """The top ``k`` of several shards' answers, by overlap descending then id ascending.

    Parameters
    ----------
    ids : sequence of ndarray of shape (nq, k_s), int64
        Each shard's global ids, padded with -1 (as ``SDRIndex.query`` pads).
    overlaps : sequence of ndarray of shape (nq, k_s), int
        Their overlaps, padded with -1.
    k : int
        Columns of the answer.

    Returns
    -------
    ids : ndarray of shape (nq, k), int64
    overlaps : ndarray of shape (nq, k), int32
        Padded with id -1 and overlap -1 when the shards hold fewer than k items in all.
    """
    if len(ids) == 0 or len(ids) != len(overlaps):
        raise ParameterError(
            f"merge_topk needs one overlaps array per ids array, got {len(ids)} and {len(overlaps)}"
        )
    all_ids = np.concatenate([np.asarray(a, dtype=np.int64) for a in ids], axis=1)
    all_ov = np.concatenate([np.asarray(a, dtype=np.int64) for a in overlaps], axis=1)
    if all_ids.shape != all_ov.shape:
        raise ParameterError(f"ids {all_ids.shape} and overlaps {all_ov.shape} differ in shape")
    nq, width = all_ids.shape
    # padding (overlap -1) sorts after every real item; among real items the single
    # index's key: overlap descending, then id ascending
    order = np.lexsort((all_ids, -all_ov), axis=-1)[:, :k]
    out_ids = np.full((nq, k), -1, dtype=np.int64)
    out_ov = np.full((nq, k), -1, dtype=np.int32)
    m = min(k, width)
    out_ids[:, :m] = np.take_along_axis(all_ids, order, axis=1)[:, :m]
    out_ov[:, :m] = np.take_along_axis(all_ov, order, axis=1)[:, :m]
    pad = out_ov < 0
    out_ids[pad] = -1
    return out_ids, out_ov
