"""Joining a Ray cluster: the one place the cluster code calls ``ray.init``.

Imported only by the ``ray_*`` modules; ``import sdrindex.cluster`` works without Ray.
"""

from __future__ import annotations

from typing import Any

from sdrindex.errors import ParameterError

#: The Ray namespace sdrindex's actors live in (apart from other applications' actors).
NAMESPACE = "sdrindex"

_MISSING = "--ray needs the cluster extra: pip install 'sdrindex[cluster]'"


def import_ray() -> Any:
    """The ``ray`` module, or a :class:`ParameterError` saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise ParameterError(_MISSING) from exc
    return ray


def connect(address: str | None) -> Any:
    """Join the Ray cluster at ``address`` (once per process); the ``ray`` module.

    Parameters
    ----------
    address : str or None
        ``HOST:PORT`` of the cluster's head (its GCS), ``"auto"`` (the cluster this machine
        belongs to), or None / ``"local"``: start a Ray instance in this process.

    Returns
    -------
    module
        ``ray``, initialised.

    Raises
    ------
    ParameterError
        Ray is not installed, or nothing answers at ``address``.
    """
    ray = import_ray()
    if ray.is_initialized():
        return ray
    where = None if address in (None, "", "local") else address
    try:
        # log_to_driver: the workers' stderr (progress bars, numba warnings) would interleave
        # with the caller's own output; a task's exception still reaches the caller.
        ray.init(
            address=where,
            namespace=NAMESPACE,
            log_to_driver=False,
            include_dashboard=False if where is None else None,
            configure_logging=False,
        )
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
        raise ParameterError(
            f"cannot join the Ray cluster at {address}: {exc}; check that `ray start --head` "
            "runs there and that the address is HOST:PORT of its head (default port 6379)"
        ) from exc
    return ray
