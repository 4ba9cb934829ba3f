"""One exception family for every user-facing failure.

Each message says what was wrong and how to fix it.

Files: a part that is missing, unreadable or damaged raises :class:`DataError` naming the
file (whoever loads it: ``read_idx``, ``TrainingTable.load``, ``SDRIndex.load``,
``SpatialPooler.load``); a bundle raises :class:`BundleError`, naming the bundle and, when one
file is to blame, that file. ``sdrindex._store`` holds the one mapping of OS and format errors
onto these two (see its module docstring).
"""

from __future__ import annotations

from pathlib import Path


class SDRIndexError(Exception):
    """Base class of every error sdrindex raises on purpose."""


class ParameterError(SDRIndexError, ValueError):
    """A parameter or an input has a value outside its allowed range."""


class DataError(SDRIndexError, ValueError):
    """A data file (IDX, image, array, JSON) is missing, truncated, corrupt or of the wrong kind.

    Attributes
    ----------
    path : Path or None
        The file, when the error is about one file (set by ``sdrindex._store``).
    problem : str or None
        What is wrong with it, without the fix (so a bundle can give its own).
    fix : str or None
        How to fix it.
    """

    path: Path | None = None
    problem: str | None = None
    fix: str | None = None


class BundleError(SDRIndexError):
    """A bundle is missing, damaged, of an unknown format version, or cannot be written."""


class ShardUnavailableError(SDRIndexError):
    """A shard of a sharded bundle cannot answer (not loaded, its actors gone, its node down).

    Raised instead of answering from the other shards: a top-k missing a shard's items would
    be wrong while looking complete. ``shards`` holds the shard numbers; the message names
    them and says what to do.
    """

    def __init__(self, shards: list[int] | tuple[int, ...], reason: str = "") -> None:
        self.shards = tuple(int(s) for s in shards)
        names = ", ".join(f"shard-{s:05d}" for s in self.shards)
        why = f" ({reason})" if reason else ""
        super().__init__(
            f"{names} unavailable{why}; no partial answer is given: bring the shard back "
            "(restart its worker, or restore its folder) and ask again"
        )
