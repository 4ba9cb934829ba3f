"""sdrindex: Spatial Pooler SDRs of images, indexed for overlap search, and the ways back."""

from sdrindex.bundle import Bundle
from sdrindex.datasets import binarize, load_mnist
from sdrindex.errors import BundleError, DataError, ParameterError, SDRIndexError
from sdrindex.index import SDRIndex
from sdrindex.sp import SpatialPooler
from sdrindex.table import TrainingTable

__version__ = "0.1.0"

__all__ = [
    "SpatialPooler",
    "SDRIndex",
    "TrainingTable",
    "Bundle",
    "binarize",
    "load_mnist",
    "SDRIndexError",
    "ParameterError",
    "DataError",
    "BundleError",
    "__version__",
]
