"""``sdrindex serve --workers N``: uvicorn's supervisor with one listening socket per worker."""

from __future__ import annotations

import logging
import socket
from typing import Any

from uvicorn.supervisors import multiprocess as uvicorn_multiprocess


def _reuseport_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


class _OwnSocketProcess(uvicorn_multiprocess.Process):
    """A uvicorn worker that listens on its own SO_REUSEPORT socket.

    With one shared listening socket (uvicorn's way) whichever worker wakes first accepts
    a burst of new connections: 30 of 32 keep-alive clients ended up on one of two
    workers here, halving throughput and doubling latency. With a socket per worker the
    kernel spreads connections over the workers by a hash of their addresses.
    """

    def target(self, sockets: list[socket.socket] | None = None) -> None:
        super().target([_reuseport_socket(self.config.host, self.config.port)])


def run_reuseport(config: Any) -> None:
    """uvicorn's supervisor (restarts, signals, graceful stop) with a socket per worker."""
    # Reserve the port (a bound socket that does not listen gets no connections) so every
    # worker binds the same one, also when port 0 asked for a free port.
    try:
        holder = _reuseport_socket(config.host, config.port)
    except OSError as exc:
        # imported here: a worker process imports this module before it can answer the
        # supervisor's first ping, and all of sdrindex takes seconds on a busy machine
        from sdrindex.errors import ParameterError

        raise ParameterError(
            f"cannot listen on {config.host}:{config.port} ({exc.strerror or exc}); "
            "is another server using the port? Choose another with --port"
        ) from None
    try:
        config.port = holder.getsockname()[1]
        log = logging.getLogger("uvicorn.error")
        log.info("Uvicorn running on http://%s:%d, one socket per worker", config.host, config.port)
        saved = uvicorn_multiprocess.Process
        uvicorn_multiprocess.Process = _OwnSocketProcess  # what Multiprocess instantiates
        try:
            uvicorn_multiprocess.Multiprocess(config, sockets=[]).run()
        finally:
            uvicorn_multiprocess.Process = saved
    finally:
        holder.close()
