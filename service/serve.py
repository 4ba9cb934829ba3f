"""``sdrindex serve``: start the HTTP service (uvicorn) over a bundle.

Wired into :mod:`sdrindex.cli` with :func:`add_parser` and :func:`cmd_serve`; also runs
as ``python -m service.serve``. Without a bundle at ``--bundle`` (default
``$SDRINDEX_BUNDLE``, else ``bundles/mnist``) it first builds the default one there
(``sdrindex build --out DIR``: MNIST's 60,000 training digits, a few minutes on 2 cores,
with progress on stderr).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``serve`` command to ``sdrindex``'s sub-commands."""
    p = subparsers.add_parser(
        "serve",
        help="start the HTTP service (FastAPI/uvicorn) over a bundle",
        description="Start the HTTP service over a bundle; builds the default MNIST bundle "
        "first when there is none. Other settings come from SDRINDEX_* variables "
        "(SDRINDEX_API_KEY enables POST /v1/items).",
    )
    p.add_argument(
        "--bundle",
        type=Path,
        default=None,
        help="bundle directory (default: $SDRINDEX_BUNDLE, else bundles/mnist)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    p.add_argument(
        "--no-build",
        action="store_true",
        help="fail instead of building the default bundle when there is none",
    )
    p.add_argument(
        "--log-level",
        default="info",
        choices=("critical", "error", "warning", "info", "debug"),
    )
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.set_defaults(func=cmd_serve)
    return p


def _needs_build(bundle: Path) -> bool:
    """True when there is nothing at ``bundle`` (a broken bundle is never overwritten)."""
    if not bundle.exists():
        return True
    return bundle.is_dir() and not any(p for p in bundle.iterdir() if p.name != ".lock")


def ensure_bundle(bundle: Path, build: bool = True) -> None:
    """Build the default bundle at ``bundle`` when there is none there."""
    from sdrindex.bundle import resolve_version
    from sdrindex.errors import BundleError

    if _needs_build(bundle):
        if not build:
            raise BundleError(
                f"{bundle}: no bundle; build one with `sdrindex build --out {bundle}`"
            )
        from sdrindex import cli

        print(
            f"sdrindex serve: no bundle at {bundle}; building the default one (MNIST training "
            "set, sdrindex-mnist SP, nndescent index, Ridge decoder; about 2 minutes)...",
            file=sys.stderr,
            flush=True,
        )
        # With the Ridge decoder, the back-projection calibration and the logistic readout.
        argv = ["build", "--out", str(bundle), "--decoder"]
        code = cli.main(argv)
        if code != 0:
            raise BundleError(f"{bundle}: building the default bundle failed (exit {code})")
    resolve_version(bundle)  # a clear error now rather than a failing /readyz later


def cmd_serve(args: argparse.Namespace) -> int:
    """Start uvicorn with ``args.workers`` workers over the bundle."""
    import uvicorn

    from sdrindex.errors import ParameterError

    if args.workers < 1:
        raise ParameterError(f"--workers must be >= 1, got {args.workers}")
    if not 0 <= args.port <= 65535:
        raise ParameterError(f"--port must be in 0..65535, got {args.port}")
    bundle = args.bundle or Path(os.environ.get("SDRINDEX_BUNDLE") or "bundles/mnist")
    ensure_bundle(bundle, build=not args.no_build)
    # The workers read their settings from the environment.
    os.environ["SDRINDEX_BUNDLE"] = str(bundle.resolve())
    metrics_dir = None
    if args.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        metrics_dir = tempfile.mkdtemp(prefix="sdrindex-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    print(
        f"sdrindex serve: http://{args.host}:{args.port}/ ({args.workers} worker(s), bundle "
        f"{bundle}); API docs at /docs",
        file=sys.stderr,
        flush=True,
    )
    options = dict(
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        access_log=args.access_log,
        timeout_graceful_shutdown=10,
    )
    try:
        if args.workers > 1 and hasattr(socket, "SO_REUSEPORT"):
            from service._reuseport import run_reuseport

            run_reuseport(uvicorn.Config("service.app:create_app", **options))
        else:
            uvicorn.run("service.app:create_app", **options)
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m service.serve [options]``: as ``sdrindex serve``."""
    from sdrindex.errors import SDRIndexError

    parser = argparse.ArgumentParser(prog="sdrindex")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(["serve", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.func(args) or 0)
    except SDRIndexError as exc:
        print(f"sdrindex: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
