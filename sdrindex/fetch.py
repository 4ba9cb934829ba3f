"""Downloads from mirrors: each file streamed to a temporary file, checked, then renamed.

A mirror's failure (HTTP error, no connection, stalled transfer, wrong content) is a
:class:`MirrorFailure` the caller reports before trying the next mirror; a mirror that cannot be
reached at all says so (``unreachable``), so the caller skips it for the other files. Local
trouble (disk full, permission) is a :class:`~sdrindex.errors.DataError` naming the file.
:func:`sdrindex.datasets.fetch_mnist` uses this for MNIST.
"""

from __future__ import annotations

import errno
import http.client
import os
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO

from sdrindex._store import atomic_write
from sdrindex.errors import ParameterError

__all__ = [
    "MirrorFailure",
    "download",
    "fetch_file",
    "is_unreachable",
    "megabytes",
    "mirror_url",
    "resolve_mirrors",
]

_CHUNK = 1 << 20
_USER_AGENT = "sdrindex (python urllib)"


class MirrorFailure(Exception):
    """One mirror could not deliver one file; `unreachable` means skip it for the other files."""

    def __init__(self, reason: str, unreachable: bool = False) -> None:
        super().__init__(reason)
        self.unreachable = unreachable


_UNREACHABLE_ERRNOS = {errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH}


def is_unreachable(reason: object) -> bool:
    """True when a connection failure means the whole mirror is out of reach."""
    if isinstance(reason, socket.gaierror | TimeoutError):
        return True
    return isinstance(reason, OSError) and reason.errno in _UNREACHABLE_ERRNOS


def resolve_mirrors(
    mirrors: str | Sequence[str] | None, defaults: Sequence[str], env_var: str
) -> list[str]:
    """Base URLs to try, in order: `mirrors` (URLs or local folders), else the comma-separated
    environment variable `env_var`, else `defaults`; ParameterError for anything else."""
    if mirrors is None:
        env = os.environ.get(env_var, "")
        items = [m.strip() for m in env.split(",") if m.strip()]
        source = env_var
        if not items:
            return list(defaults)
    elif isinstance(mirrors, str | os.PathLike):
        items, source = [os.fspath(mirrors)], "mirrors"
    else:
        items, source = [os.fspath(m) for m in mirrors], "mirrors"
    if not items:
        raise ParameterError(
            "mirrors: the list is empty; give at least one base URL, or None for the defaults."
        )
    resolved = []
    for item in items:
        if "://" not in item and Path(item).expanduser().is_dir():
            item = Path(item).expanduser().resolve().as_uri()
        parts = urllib.parse.urlsplit(item)
        if parts.scheme not in ("http", "https", "file") or (
            parts.scheme != "file" and not parts.netloc
        ):
            raise ParameterError(
                f"{source}: {item!r} is not a mirror; give base URLs such as "
                f"{defaults[0]!r} (http://, https:// or file://) or a local folder."
            )
        resolved.append(item)
    return resolved


def megabytes(n: int) -> str:
    """A byte count for people: "47.0 MB", "28.9 kB"."""
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


def mirror_url(base: str, name: str) -> str:
    """The URL of file `name` on the mirror `base`."""
    return (base if base.endswith("/") else base + "/") + name


def download(url: str, out: BinaryIO, timeout: float, progress: bool, max_bytes: int) -> int:
    """Stream `url` into `out`, at most `max_bytes`; returns the bytes received.

    Network trouble raises MirrorFailure; local trouble (writing `out`) propagates.
    """
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        raise MirrorFailure(f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise MirrorFailure(
            f"cannot connect ({exc.reason})", unreachable=is_unreachable(exc.reason)
        ) from None
    except TimeoutError:
        raise MirrorFailure(f"no answer within {timeout} s", unreachable=True) from None
    except (http.client.HTTPException, OSError) as exc:
        raise MirrorFailure(f"connection failed ({exc!r})") from None
    with response:
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        show = progress and sys.stderr.isatty()
        received = 0
        while True:
            try:
                chunk = response.read(_CHUNK)
            except TimeoutError:
                raise MirrorFailure(f"stalled for more than {timeout} s") from None
            except (http.client.HTTPException, OSError) as exc:
                raise MirrorFailure(f"connection broke after {received} bytes ({exc!r})") from None
            if not chunk:
                break
            received += len(chunk)
            if received > max_bytes:
                raise MirrorFailure(f"sent more than {max_bytes} bytes; not MNIST")
            out.write(chunk)
            if show:
                of = f" of {total / 1e6:.1f}" if total else ""
                sys.stderr.write(f"\r  {received / 1e6:.1f}{of} MB")
                sys.stderr.flush()
        if show:
            sys.stderr.write("\n")
    if total is not None and received != total:
        raise MirrorFailure(f"incomplete download: got {received} of {total} bytes")
    return received


def fetch_file(
    url: str,
    final: Path,
    check: Callable[[Path], str | None],
    timeout: float,
    progress: bool,
    max_bytes: int,
) -> int:
    """Download `url` to `final` atomically; returns its size in bytes.

    The bytes go to a temporary file next to `final`; `check(temp_path)` returns what is
    wrong with them (a MirrorFailure "verification failed: ...") or None, and only then is
    the file renamed into place, so `final` never holds a partial or unchecked download (not
    even after Ctrl-C). Local write errors raise DataError naming `final`.
    """

    def verified(tmp: Path) -> None:
        problem = check(tmp)
        if problem is not None:
            raise MirrorFailure(f"verification failed: {problem}")

    return atomic_write(
        final, lambda out: download(url, out, timeout, progress, max_bytes), verified
    )
