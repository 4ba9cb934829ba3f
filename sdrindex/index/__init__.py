"""Nearest neighbours of SDRs by overlap: the :class:`SDRIndex` facade and its backends.

Layout: ``facade`` (:class:`SDRIndex`: validation, snapshots, save/load), ``backend`` (the
protocol every backend implements), ``registry`` (names -> backend classes), ``exact``,
``graph`` and ``dyadic`` (the three backends; ``_postings``, ``_graph_build``,
``_graph_search`` and ``_dyadic`` hold their kernels; ``_nndescent`` builds the k-NN
graph), ``params`` (the parameters and their
checks) and ``format`` (``index.json`` checks).
"""

from .backend import Backend
from .facade import SDRIndex
from .graph import collection_search
from .params import NNDESCENT_DEFAULTS
from .registry import BACKENDS, backend_names, register_backend

__all__ = [
    "SDRIndex",
    "collection_search",
    "BACKENDS",
    "NNDESCENT_DEFAULTS",
    "Backend",
    "backend_names",
    "register_backend",
]
