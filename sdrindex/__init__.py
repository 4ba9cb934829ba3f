"""sdrindex: Spatial Pooler SDRs of images, indexed for overlap search, and the ways back."""

from sdrindex.errors import BundleError, DataError, ParameterError, SDRIndexError
from sdrindex.sp import SpatialPooler

__version__ = "0.1.0"

__all__ = [
    "SpatialPooler",
    "SDRIndexError",
    "ParameterError",
    "DataError",
    "BundleError",
    "__version__",
]
