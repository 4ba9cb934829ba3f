"""One exception family for every user-facing failure.

Each message says what was wrong and how to fix it.
"""

from __future__ import annotations


class SDRIndexError(Exception):
    """Base class of every error sdrindex raises on purpose."""


class ParameterError(SDRIndexError, ValueError):
    """A parameter or an input has a value outside its allowed range."""


class DataError(SDRIndexError, ValueError):
    """A data file (IDX, image, array) is missing, truncated, corrupt or of the wrong kind."""


class BundleError(SDRIndexError):
    """A bundle on disk is missing a file, damaged, or of an unknown format version."""
