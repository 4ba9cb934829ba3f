"""NuPIC's initial state: random potential pools and permanences (``SpatialPooler`` seeds it)."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import topology
from ._params import dims

__all__ = ["random_state", "INIT_CONNECTED_PCT"]

INIT_CONNECTED_PCT = 0.5


def random_state(sp: Any) -> dict[str, Any]:
    """NuPIC's initialisation procedure (potential pools, permanences) on our RNG."""
    in_dims, col_dims = (
        dims(sp.input_dimensions, "input_dimensions"),
        dims(sp.column_dimensions, "column_dimensions"),
    )
    n_in, n_col = sp.n_inputs, sp.n_columns
    seed = None if int(sp.seed) == -1 else int(sp.seed)
    rng = np.random.default_rng(seed)
    radius = int(min(sp.potential_radius, n_in))
    conn = float(sp.syn_perm_connected)
    trim = np.float32(sp.syn_perm_active_inc / 2.0)
    potential = np.zeros((n_col, n_in), np.uint8)
    perm = np.zeros((n_col, n_in), np.float32)
    hood = topology.wrapping_neighborhood if sp.wrap_around else topology.neighborhood
    for c in range(n_col):
        center = topology.map_column(c, col_dims, in_dims)
        inputs = hood(center, radius, in_dims)
        n_pot = int(inputs.size * float(sp.potential_pct) + 0.5)
        chosen = np.sort(rng.choice(inputs, size=n_pot, replace=False))
        potential[c, chosen] = 1
        connected = rng.random(n_pot) <= INIT_CONNECTED_PCT
        r = rng.random(n_pot)
        p = np.where(connected, conn + (1.0 - conn) * r, conn * r)
        p = np.floor(p * 100000) / 100000.0
        row = p.astype(np.float32)
        row[row < trim] = 0
        perm[c, chosen] = row
    return {"potential": potential, "permanences": perm, "inhibition_radius": None}
