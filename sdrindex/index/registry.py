"""Backend names -> backend classes: how ``SDRIndex(backend=...)`` and ``load`` find one."""

from __future__ import annotations

from ..errors import ParameterError
from .backend import Backend
from .dyadic import DyadicBackend
from .exact import ExactBackend
from .graph import GraphBackend

__all__ = ["BACKENDS", "backend_class", "backend_names", "register_backend"]

#: The backends built in (``sdrindex build --backend`` offers these).
BACKENDS = (ExactBackend.name, GraphBackend.name, DyadicBackend.name)

_REGISTRY: dict[str, type[Backend]] = {
    ExactBackend.name: ExactBackend,
    GraphBackend.name: GraphBackend,
    DyadicBackend.name: DyadicBackend,
}


def register_backend(cls: type[Backend]) -> type[Backend]:
    """Make ``cls`` available as ``SDRIndex(cls.name)`` (and loadable); usable as a decorator.

    Raises :class:`ParameterError` when another class already holds the name.
    """
    other = _REGISTRY.get(cls.name)
    if other is not None and other is not cls:
        raise ParameterError(f"backend {cls.name!r} is already registered ({other.__qualname__})")
    _REGISTRY[cls.name] = cls
    return cls


def backend_names() -> tuple[str, ...]:
    """The names of every registered backend, built-in ones first."""
    return tuple(_REGISTRY)


def backend_class(name: str) -> type[Backend]:
    """The backend registered as ``name``; :class:`ParameterError` naming the choices if none."""
    cls = _REGISTRY.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ParameterError(f"backend must be one of {backend_names()}, got {name!r}")
    return cls
