"""Topology: coordinates, neighbourhoods and the column -> input mapping (any rank).

These follow NuPIC's ``nupic.math.topology`` and ``SpatialPooler._mapColumn`` so that
potential pools and inhibition neighbourhoods are the ones NuPIC users know.
"""

from __future__ import annotations

import itertools

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "coordinates_from_index",
    "index_from_coordinates",
    "neighborhood",
    "wrapping_neighborhood",
    "map_column",
]


def coordinates_from_index(index: int, dimensions: tuple[int, ...]) -> tuple[int, ...]:
    """Row-major coordinates of a flat index in a grid of the given dimensions."""
    return tuple(int(c) for c in np.unravel_index(int(index), tuple(dimensions)))


def index_from_coordinates(coordinates, dimensions: tuple[int, ...]) -> int:
    """Flat row-major index of coordinates in a grid of the given dimensions."""
    return int(np.ravel_multi_index(tuple(int(c) for c in coordinates), tuple(dimensions)))


def neighborhood(center: int, radius: int, dimensions: tuple[int, ...]) -> NDArray[np.int64]:
    """Flat indices within ``radius`` of ``center`` (a hyper-cube clipped at the edges).

    The centre itself is included. Order: row-major over the cube.
    """
    pos = coordinates_from_index(center, dimensions)
    ranges = [
        range(max(0, p - radius), min(d - 1, p + radius) + 1)
        for p, d in zip(pos, dimensions, strict=True)
    ]
    coords = np.array(list(itertools.product(*ranges)), dtype=np.int64).reshape(-1, len(dimensions))
    return np.ravel_multi_index(tuple(coords.T), tuple(dimensions)).astype(np.int64)


def wrapping_neighborhood(
    center: int, radius: int, dimensions: tuple[int, ...]
) -> NDArray[np.int64]:
    """Flat indices within ``radius`` of ``center``, wrapping around every edge.

    Each side is capped at the dimension's size, so no index appears twice.
    """
    pos = coordinates_from_index(center, dimensions)
    ranges = []
    for p, d in zip(pos, dimensions, strict=True):
        left = p - radius
        right = min(p + radius, left + d - 1)
        ranges.append([v % d for v in range(left, right + 1)])
    coords = np.array(list(itertools.product(*ranges)), dtype=np.int64).reshape(-1, len(dimensions))
    return np.ravel_multi_index(tuple(coords.T), tuple(dimensions)).astype(np.int64)


def map_column(
    column: int, column_dimensions: tuple[int, ...], input_dimensions: tuple[int, ...]
) -> int:
    """The input index at the centre of a column's receptive field.

    Columns are spread uniformly over the inputs: coordinate ``c`` of a column maps to
    ``int(input_dim * c / column_dim + 0.5 * input_dim / column_dim)`` in each dimension.
    """
    cdims = np.asarray(column_dimensions, dtype=np.float64)
    idims = np.asarray(input_dimensions, dtype=np.float64)
    ccoords = np.asarray(coordinates_from_index(column, column_dimensions), dtype=np.float32)
    icoords = idims * (ccoords / cdims)
    icoords += 0.5 * idims / cdims
    return index_from_coordinates(icoords.astype(np.int64), input_dimensions)
