"""``sdrindex serve``: start the HTTP service (uvicorn) over a bundle.

The CLI finds :func:`add_parser` through the ``sdrindex.commands`` entry point (the library
never imports the app); it also runs as ``python -m sdr_service.serve``. Without a
bundle at ``--bundle`` (default ``$SDRINDEX_BUNDLE``, else ``bundles/mnist``) it first
builds the default one there through :func:`sdrindex.pipeline.build_bundle`, as
``sdrindex build --out DIR --decoder`` does (MNIST's 60,000 training digits, a few minutes
on 2 cores, with progress on stderr).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import sys
import tempfile
from pathlib import Path

#: The ASGI app factory uvicorn imports in each worker.
APP_FACTORY = "sdr_service.app:create_app"


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
    p.add_argument(
        "--ray",
        metavar="ADDRESS",
        default=None,
        help="serve a sharded bundle (sdrindex build --shards N) from Ray actors on the "
        "cluster whose head is ADDRESS (HOST:PORT); needs the cluster extra",
    )
    p.add_argument(
        "--replicas",
        type=int,
        default=None,
        help="with --ray: actors per shard (default 1; $SDRINDEX_RAY_REPLICAS)",
    )
    p.set_defaults(func=cmd_serve)
    return p


def _needs_build(bundle: Path) -> bool:
    """True when there is no bundle at ``bundle`` and nothing but what sdrindex left there.

    A bundle exists only when ``current`` names a version with a valid manifest. Lock files,
    the leftovers of a killed build (``.tmp-v-...``, ``.current-...``) and versions never made
    live do not make one: a build may start. Anything else (a broken ``current``, files that
    sdrindex did not write) is never built over: loading it then fails with a clear message.
    """
    from sdrindex.bundle import inspect_bundle

    return inspect_bundle(bundle).vacant


def ensure_bundle(bundle: Path, build: bool = True) -> None:
    """Build the default bundle at ``bundle`` when there is none there."""
    from sdrindex.bundle import clean_leftovers, resolve_version, update_lock
    from sdrindex.errors import BundleError

    if _needs_build(bundle):
        if not build:
            raise BundleError(
                f"{bundle}: no bundle; build one with `sdrindex build --out {bundle}`"
            )
        removed = clean_leftovers(bundle)
        if removed:
            print(
                f"sdrindex serve: removed what an interrupted build left in {bundle}: "
                + ", ".join(p.name for p in removed),
                file=sys.stderr,
                flush=True,
            )
        print(
            f"sdrindex serve: no bundle at {bundle}; building the default one (MNIST training "
            "set, sdrindex-mnist SP, nndescent index, Ridge decoder; about 2 minutes)...",
            file=sys.stderr,
            flush=True,
        )
        if bundle.is_dir():
            # as `sdrindex build`: another starting server or a CLI writer waits, then finds it
            with update_lock(bundle):
                if _needs_build(bundle):
                    build_default_bundle(bundle)
        else:
            build_default_bundle(bundle)
    resolve_version(bundle)  # a clear error now rather than a failing /readyz later


def build_default_bundle(out: Path) -> None:
    """Build and save the default bundle at ``out`` (as ``sdrindex build --out DIR --decoder``).

    MNIST's training digits, the default SP and threshold, the nndescent index, and the
    default decoders: the back-projection calibration, the Ridge decoder, the logistic
    label readout. Stage progress goes to stderr.
    """
    from sdrindex.images import load_source
    from sdrindex.pipeline import build_bundle, stderr_progress
    from sdrindex.sp import learn_limit_for, preprocess_for, sp_from_config, threshold_for

    data = load_source(None, None, None)
    bundle = build_bundle(
        data.images,
        data.labels,
        sp=sp_from_config(None),
        threshold=threshold_for(None),
        preprocess=preprocess_for(None),
        learn_limit=learn_limit_for(None),
        backend="nndescent",
        decoders="default",
        dataset={
            "source": "mnist",
            "description": data.description,
            "skipped_files": len(data.skipped),
        },
        progress=stderr_progress,
    )
    bundle.save(out)


def _cluster_options(args: argparse.Namespace, bundle: Path) -> None:
    """Check ``--ray``/``--replicas`` and hand them to the app (``SDRINDEX_RAY_*``)."""
    from sdrindex.cluster import is_sharded
    from sdrindex.cluster.ray_connect import import_ray
    from sdrindex.errors import ParameterError

    if not args.ray:
        raise ParameterError("--replicas needs --ray ADDRESS (the cluster the shards run on)")
    if args.replicas is not None and args.replicas < 1:
        raise ParameterError(f"--replicas must be >= 1, got {args.replicas}")
    if args.workers != 1:
        raise ParameterError(
            "--ray serves with one worker process (the shards' work runs on the cluster, and "
            "each worker would start its own shard actors): drop --workers, or run several "
            "`sdrindex serve --ray` behind a load balancer"
        )
    import_ray()  # the install hint now, not a failing /readyz later
    if not is_sharded(bundle):
        raise ParameterError(
            f"--ray serves a sharded bundle and {bundle} is not one: build it with "
            f"`sdrindex build --out {bundle} --shards N`"
        )
    os.environ["SDRINDEX_RAY_ADDRESS"] = args.ray
    if args.replicas is not None:
        os.environ["SDRINDEX_RAY_REPLICAS"] = str(args.replicas)


def cmd_serve(args: argparse.Namespace) -> int:
    """Start uvicorn with ``args.workers`` workers over the bundle."""
    import uvicorn

    from sdrindex.errors import ParameterError

    if args.workers < 1:
        raise ParameterError(f"--workers must be >= 1, got {args.workers}")
    if not 0 <= args.port <= 65535:
        raise ParameterError(f"--port must be in 0..65535, got {args.port}")
    bundle = args.bundle or Path(os.environ.get("SDRINDEX_BUNDLE") or "bundles/mnist")
    if args.ray or args.replicas is not None:
        _cluster_options(args, bundle)
    else:
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
        # uvicorn's supervisor restarts a worker that misses its 5 s ping; a worker that is
        # importing numpy/numba on a busy machine takes longer than that just to start.
        timeout_worker_healthcheck=60,
    )
    try:
        if args.workers > 1 and hasattr(socket, "SO_REUSEPORT"):
            from sdr_service._reuseport import run_reuseport

            run_reuseport(uvicorn.Config(APP_FACTORY, **options))
        else:
            uvicorn.run(APP_FACTORY, **options)
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m sdr_service.serve [options]``: as ``sdrindex serve``."""
    from sdrindex.cli import error_message, exit_code
    from sdrindex.errors import SDRIndexError

    parser = argparse.ArgumentParser(prog="sdrindex")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(["serve", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.func(args) or 0)
    except (SDRIndexError, OSError, KeyboardInterrupt) as exc:
        # the same one line and exit codes as `sdrindex serve` (README: Exit codes)
        print(error_message(exc), file=sys.stderr)
        return exit_code(exc)


if __name__ == "__main__":
    sys.exit(main())
