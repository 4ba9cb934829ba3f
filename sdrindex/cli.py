"""The ``sdrindex`` command.

Every failure ends in one line on stderr, ``sdrindex: error: <file>: <problem>; <fix>``, and
an exit code that says what kind of failure it was (:data:`EXIT_CODES`, also in
``sdrindex --help`` and the README); ``--debug`` shows the Python traceback instead.
"""

from __future__ import annotations

import argparse
import errno
import sys
import time
from pathlib import Path

import numpy as np

from sdrindex.errors import BundleError, ParameterError, SDRIndexError
from sdrindex.sdr import row_popcount

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_DATA = 3
EXIT_BUNDLE = 4
EXIT_SYSTEM = 5
EXIT_LOCKED = 6
EXIT_INTERRUPTED = 130

#: Exit code -> what it means (the ``--help`` epilog and the README's table).
EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_INTERNAL: "internal error: a bug (rerun with --debug for the traceback, report it)",
    EXIT_USAGE: "usage: a bad command line or argument value (--limit -5, a missing folder)",
    EXIT_DATA: "bad input data: an input file missing, unreadable or not downloadable",
    EXIT_BUNDLE: "bundle: none there, damaged, not a bundle folder, a rebuild without --force",
    EXIT_SYSTEM: "the system refused a read or write: permission, disk full, read-only",
    EXIT_LOCKED: "lock busy: another writer held the bundle longer than --lock-timeout",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C); bundles are left as they were",
}

#: errnos about the machine rather than the input: exit 5 whichever file it was.
_SYSTEM_ERRNOS = frozenset(
    {errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EMFILE}
)


# ============================================================================ argument types


def _int_in(lo: int, hi: int | None = None, name: str = "int"):
    """An argparse type: a whole number in lo..hi (hi None: no upper bound)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < lo or (hi is not None and value > hi):
            allowed = f">= {lo}" if hi is None else f"in {lo}..{hi}"
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {value}")
        return value

    parse.__name__ = name
    return parse


_positive = _int_in(1, name="positive int")
_count_or_all = _int_in(0, name="count")  # 0 = no limit
_label = _int_in(0, 2**63 - 1, name="label")


def _seconds(text: str) -> float:
    """An argparse type: a number of seconds >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, got {text}")
    return value


def _positive_seconds(text: str) -> float:
    value = _seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be > 0 seconds")
    return value


def _learn_limit(value: str) -> int | str:
    """An argparse type: 'all' or a positive number of images."""
    if value == "all":
        return value
    return _positive(value)


def _threshold(value: str) -> int | str:
    """An argparse type: 'mean' or a grey level in 1..255."""
    if value == "mean":
        return value
    try:
        level = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'mean' or 1..255, got {value!r}") from None
    if not 1 <= level <= 255:
        raise argparse.ArgumentTypeError(f"must be 'mean' or in 1..255, got {level}")
    return level


def _output_file(text: str) -> Path:
    """An argparse type: a file to write, in a folder that exists."""
    path = Path(text)
    folder = path.parent
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{path} is a folder; give a file name inside it")
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(
            f"the folder {folder} does not exist; create it first (mkdir -p {folder})"
        )
    return path


def cmd_fetch_mnist(args: argparse.Namespace) -> int:
    from sdrindex.datasets import fetch_mnist

    paths = fetch_mnist(args.dir, mirrors=args.mirror or None, timeout=args.timeout)
    for name, path in sorted(paths.items()):
        print(f"{name}: {path}")
    print(f"MNIST verified in {args.dir}; point SDRINDEX_MNIST_DIR there to use it.")
    return 0


def cmd_figure(args: argparse.Namespace) -> int:
    from sdrindex._cli_figure import figure

    return figure(args)


def _check_build_target(out: Path, force: bool) -> None:
    """Refuse an --out that is not ours to write, or a live bundle without --force."""
    from sdrindex.bundle import MANIFEST, inspect_bundle

    state = inspect_bundle(out)
    if state.vacant:
        return
    if not out.is_dir():
        raise BundleError(f"{out}: exists and is not a folder; give a new folder with --out")
    if state.is_version:
        raise BundleError(
            f"{out}: is one version of a bundle (it holds {MANIFEST}), not a bundle folder; "
            "give a new folder with --out, or the bundle folder above it with --force"
        )
    if state.link is None:
        shown = ", ".join(p.name for p in state.foreign[:3])
        more = f" and {len(state.foreign) - 3} more" if len(state.foreign) > 3 else ""
        raise BundleError(
            f"{out}: not empty and not a bundle (it holds {shown}{more}); give a new or empty "
            "folder with --out (sdrindex never writes into a folder that it did not make)"
        )
    if not force:
        live = state.live or f"a `current` link to {state.link!r}, which is broken"
        raise BundleError(
            f"{out}: already holds a bundle (live: {live}); pass --force to build a new "
            f"version and make it live (the live one is kept: `sdrindex rollback {out}` brings "
            "it back), or give another folder with --out"
        )


def _waiting(root: Path):
    def note() -> None:
        print(
            f"sdrindex: waiting for the update lock of {root} (another add, build, rollback "
            "or the service's POST /v1/items holds it)...",
            file=sys.stderr,
            flush=True,
        )

    return note


def cmd_build(args: argparse.Namespace) -> int:
    from sdrindex.bundle import update_lock
    from sdrindex.images import load_source
    from sdrindex.pipeline import BuildTimes, build_bundle, stderr_progress
    from sdrindex.sp import learn_limit_for, preprocess_for, sp_from_config, threshold_for

    if args.learn_limit is None:
        args.learn_limit = learn_limit_for(args.config)
    elif args.learn_limit == "all":
        args.learn_limit = None
    if args.shards > 1 or args.ray:
        from sdrindex import _cli_sharded

        return _cli_sharded.build(args, _check_build_target, _waiting)
    if args.workers != 1:
        raise ParameterError("--workers goes with --shards N (N > 1)")
    _check_build_target(args.out, args.force)  # before any long work
    sp = sp_from_config(args.config)  # validate the config before any long work
    threshold = threshold_for(args.config) if args.threshold is None else args.threshold
    t = time.perf_counter()
    data = load_source(args.data, args.labels, args.limit)
    times = BuildTimes({"load": time.perf_counter() - t})
    bundle = build_bundle(
        data.images,
        data.labels,
        sp=sp,
        threshold=threshold,
        preprocess=preprocess_for(args.config),
        epochs=args.epochs,
        learn_limit=args.learn_limit,
        backend=args.backend,
        decoders={None: None, "ridge": "default", "all": "all"}[args.decoder],
        dataset={
            "source": str(args.data or "mnist"),
            "description": data.description,
            "skipped_files": len(data.skipped),
        },
        progress=stderr_progress,
        times=times,
    )
    t = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    # the lock of `add` and the service: a concurrent add lands before or after, never over it
    with update_lock(args.out, args.lock_timeout, _waiting(args.out)):
        _check_build_target(args.out, args.force)  # again: the folder may have changed since
        out = bundle.save(args.out)
    times.seconds["save"] = time.perf_counter() - t
    n = len(data.images)
    counts = row_popcount(np.asarray(bundle.table.sdrs))
    print(f"bundle: {out}")
    print(f"items: {n}" + (f" ({len(data.skipped)} files skipped)" if data.skipped else ""))
    print(
        f"SP: {sp.n_columns} columns, {counts.mean():.1f} active on average "
        f"(sparsity {counts.mean() / sp.n_columns:.4f}, min {counts.min()}, max {counts.max()})"
    )
    print(f"seconds: {times}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from sdrindex.bundle import rollback

    was, now = rollback(args.dir, args.to, args.lock_timeout, _waiting(args.dir))
    if was == now:
        print(f"{args.dir}: {now} is already live")
    else:
        print(f"{args.dir}: {now} is live now (was {was or 'none'})")
    return 0


def cmd_versions(args: argparse.Namespace) -> int:
    import json

    from sdrindex.bundle import inspect_bundle

    state = inspect_bundle(args.dir)
    if not state.versions:
        raise BundleError(f"{args.dir}: no bundle versions written by sdrindex here")
    rows = state.listing()
    if args.json:
        print(json.dumps([vars(v) for v in rows], indent=2))
        return 0
    for v in rows:
        mark = "*" if v.live else " "
        print(f"{mark} {v.name}  {v.created}  {v.n_items} items  (after {v.previous or '-'})")
    if state.live is None:
        print(f"no live version: `current` is {state.link!r}; `sdrindex rollback --to` one")
    for p in state.leftovers:
        print(f"leftover of an interrupted save (the next save removes it): {p.name}")
    return 0


def _load_query_images(paths: list[str]) -> tuple[np.ndarray, list[str]]:
    from sdrindex.images import load_image_file

    if not paths:
        raise ParameterError("give at least one image file")
    return np.stack([load_image_file(p) for p in paths]), list(paths)


def cmd_add(args: argparse.Namespace) -> int:
    from sdrindex import _cli_sharded
    from sdrindex.bundle import Bundle, update_lock
    from sdrindex.images import load_folder

    images_list, names = [], []
    for p in args.images:
        if Path(p).is_dir():
            got = load_folder(p)
            images_list.append(got.images)
            names += got.names
        else:
            imgs, nm = _load_query_images([p])
            images_list.append(imgs)
            names += nm
    images = np.concatenate(images_list)
    from sdrindex.cluster import is_sharded

    if is_sharded(args.dir):
        return _cli_sharded.add(args, images, names)
    # another add (CLI or service) waits; none is lost
    with update_lock(args.dir, args.lock_timeout, _waiting(args.dir)):
        bundle = Bundle.load(args.dir)
        ids = bundle.add(images, _cli_sharded.added_labels(bundle, args.label, len(images)))
        out = bundle.save(args.dir)
    for name, i in zip(names, ids, strict=True):
        print(f"{name}: id {int(i)}")
    print(f"added {len(ids)} items; bundle now holds {len(bundle.table)} ({out})")
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    import json

    from sdrindex._cli_sharded import open_any

    images, names = _load_query_images(args.images)
    bundle = open_any(args.dir, args.ray)
    sdrs = bundle.encode(images)
    ids, overlaps = bundle.index.query(sdrs, args.k)
    labels = bundle.table.labels
    results = []
    for q, name in enumerate(names):
        matches = []
        for i, ov in zip(ids[q], overlaps[q], strict=True):
            if i < 0:
                continue
            pos = bundle.table.positions([int(i)])[0]
            lab = None if labels is None else int(labels[pos])
            matches.append({"id": int(i), "label": lab, "overlap": int(ov)})
        results.append({"query": name, "matches": matches})
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            print(r["query"])
            for m in r["matches"]:
                lab = "-" if m["label"] is None else m["label"]
                print(f"  id {m['id']:>7}  label {lab}  overlap {m['overlap']}")
    if args.figure:
        from sdrindex.evaluate.plots import matches_figure

        stored = [
            bundle.table.images[bundle.table.positions([m["id"] for m in r["matches"]])]
            for r in results
        ]
        matches_figure(images, stored, results, args.figure)
        print(f"wrote {args.figure}", file=sys.stderr)
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    import json

    from sdrindex._cli_sharded import open_any
    from sdrindex.bundle import inspect_bundle

    bundle = open_any(args.dir, verify=not args.no_verify)
    summary = bundle.summary()
    summary["bundle_versions"] = [vars(v) for v in inspect_bundle(args.dir).listing()]
    print(json.dumps(summary, indent=2))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from sdrindex._cli_sharded import open_any
    from sdrindex.evaluate import evaluate, write_report
    from sdrindex.index import BACKENDS

    backends = tuple(b.strip() for b in args.backends.split(",") if b.strip())
    if not backends or any(b not in BACKENDS for b in backends):
        raise ParameterError(f"--backends takes a comma-separated subset of {', '.join(BACKENDS)}")
    bundle = open_any(args.dir, args.ray)
    report = evaluate(
        bundle,
        limit=args.limit or None,
        k_vote=args.k,
        k_blend=args.k_blend,
        mp_limit=args.mp_limit or None,
        backends=backends,
        data_dir=args.data_dir,
        verbose=True,
    )
    paths = write_report(report, args.out)
    print(paths["md"].read_text())
    print(f"wrote {', '.join(str(p) for p in paths.values())}", file=sys.stderr)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    import json

    from sdrindex.evaluate import format_sweep, load_grid, sweep

    spec = load_grid(args.grid)
    rows = sweep(spec, data_dir=args.data_dir, verbose=True)
    print(format_sweep(rows))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2) + "\n")
        print(f"wrote {args.out}", file=sys.stderr)
    return 0


def _add_fetch_mnist(sub: argparse._SubParsersAction) -> None:
    f = sub.add_parser("fetch-mnist", help="download MNIST from mirrors and verify it")
    f.add_argument("--dir", required=True, type=Path, help="folder to write the four files to")
    f.add_argument(
        "--mirror",
        action="append",
        help="base URL of a mirror (repeatable); default: built-in list",
    )
    f.add_argument(
        "--timeout", type=_positive_seconds, default=30.0, help="seconds per request (default 30)"
    )
    f.set_defaults(func=cmd_fetch_mnist)


def _add_figure(sub: argparse._SubParsersAction) -> None:
    g = sub.add_parser(
        "figure", help="learn the SP on MNIST and draw original / SDR / back-projection"
    )
    g.add_argument("--out", required=True, type=_output_file, help="PNG file to write")
    g.add_argument(
        "--config",
        default=None,
        help="SP preset (sdrindex-mnist, htmcore-mnist, forum-global, forum-local) or a "
        "TOML/JSON file; default sdrindex-mnist-planes",
    )
    g.add_argument(
        "--limit", type=_positive, default=None, help="learn on the first N training images only"
    )
    g.add_argument("--epochs", type=_positive, default=1)
    g.add_argument(
        "--threshold",
        type=_threshold,
        default=None,
        help="pixel >= T is on (or 'mean'; planes presets ignore it); default: the preset's "
        "('mean' for sdrindex-mnist), "
        "else 128",
    )
    g.add_argument(
        "--n", type=_int_in(1, 10000), default=10, help="test digits to draw (default 10)"
    )
    g.add_argument("--save-sp", type=_output_file, help="also save the learned SP (.npz)")
    g.add_argument("--load-sp", type=Path, help="use a saved SP instead of learning one")
    g.add_argument("--data-dir", type=Path, default=None, help="MNIST folder (default: bundled)")
    g.set_defaults(func=cmd_figure)


def _add_build(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("build", help="batch offline indexing: learn the SP, encode, index, save")
    b.add_argument("--out", required=True, type=Path, help="bundle directory")
    b.add_argument(
        "--data",
        default=None,
        help="mnist (default: bundled training set), mnist-test, an IDX image file, "
        "a folder of PNG/JPEG images, or an .npy array (n, H, W)",
    )
    b.add_argument("--labels", default=None, help="labels for an IDX/.npy source (IDX or .npy)")
    b.add_argument("--limit", type=_positive, default=None, help="use the first N images only")
    b.add_argument(
        "--config", default=None, help="SP preset or TOML/JSON file (default sdrindex-mnist-planes)"
    )
    b.add_argument("--backend", choices=("nndescent", "exact", "dyadic"), default="nndescent")
    b.add_argument("--epochs", type=_positive, default=1)
    b.add_argument(
        "--threshold",
        type=_threshold,
        default=None,
        help="pixel >= T is on (or 'mean'; planes presets ignore it); default: the preset's "
        "('mean' for sdrindex-mnist), "
        "else 128",
    )
    b.add_argument(
        "--decoder",
        nargs="?",
        const="ridge",
        default=None,
        choices=("ridge", "all"),
        help="also train and store the Ridge decoder, the back-projection calibration and "
        "the logistic label readout (a minute or two); '--decoder all' adds the MLP decoder "
        "(several minutes more; its MSE is worse than Ridge's, kept for comparison)",
    )
    b.add_argument(
        "--force",
        action="store_true",
        help="when --out already holds a bundle: build a new version and make it live (the "
        "current one is kept; `sdrindex rollback` brings it back)",
    )
    b.add_argument(
        "--shards",
        type=_positive,
        default=1,
        help="split the bundle into N shards (id g in shard g %% N; 1: one bundle, as ever)",
    )
    b.add_argument(
        "--learn-limit",
        type=_learn_limit,
        default=None,
        help="the SP learns on the first N images only, then all are encoded and indexed "
        "('all': every image); default: the preset's (15000 for sdrindex-mnist-planes), "
        "else all",
    )
    b.add_argument(
        "--workers", type=_positive, default=1, help="with --shards: local build processes"
    )
    _add_ray(b, "build the shards as Ray tasks on the cluster at ADDRESS")
    _add_lock_timeout(b)
    b.set_defaults(func=cmd_build)


def _add_add(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser("add", help="append images to a bundle (atomic)")
    a.add_argument("dir", type=Path, help="bundle directory")
    a.add_argument("images", nargs="+", help="image files or folders")
    a.add_argument("--label", type=_label, default=None, help="label of the added images (>= 0)")
    _add_lock_timeout(a)
    a.set_defaults(func=cmd_add)


def _add_query(sub: argparse._SubParsersAction) -> None:
    q = sub.add_parser("query", help="nearest stored items of images, by SDR overlap")
    q.add_argument("dir", type=Path, help="bundle directory")
    q.add_argument("images", nargs="+", help="image files")
    q.add_argument("-k", type=_int_in(1, 10000), default=5, help="matches per image (default 5)")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.add_argument("--figure", type=_output_file, help="write a side-by-side PNG")
    _add_ray(q, "a sharded bundle: search its shards' actors on the Ray cluster at ADDRESS")
    q.set_defaults(func=cmd_query)


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser(
        "evaluate", help="reconstruction, classification, index and noise report on MNIST test"
    )
    e.add_argument("dir", type=Path, help="bundle directory (built from MNIST training images)")
    e.add_argument("--limit", type=_positive, default=None, help="use the first N test images only")
    e.add_argument("--out", type=Path, default=Path("out/evaluation"), help="report folder")
    e.add_argument("-k", type=_positive, default=5, help="neighbours in the k-NN label vote")
    e.add_argument("--k-blend", type=_positive, default=10, help="neighbours in the knn blend")
    e.add_argument(
        "--mp-limit",
        type=_count_or_all,
        default=2000,
        help="run matching pursuit (slow) on the first N queries only; 0 = all (default 2000)",
    )
    e.add_argument(
        "--backends",
        default="exact,nndescent",
        help="index backends measured in the index section, comma-separated, of "
        "exact,nndescent,dyadic (default exact,nndescent)",
    )
    e.add_argument("--data-dir", type=Path, default=None, help="MNIST folder (default: bundled)")
    _add_ray(e, "a sharded bundle: search its shards' actors on the Ray cluster at ADDRESS")
    e.set_defaults(func=cmd_evaluate)


def _add_sweep(sub: argparse._SubParsersAction) -> None:
    w = sub.add_parser("sweep", help="learn a grid of SP configs on MNIST and compare them")
    w.add_argument("--grid", required=True, type=Path, help="TOML or JSON grid file")
    w.add_argument("--out", type=Path, default=None, help="also write the rows as JSON here")
    w.add_argument("--data-dir", type=Path, default=None, help="MNIST folder (default: bundled)")
    w.set_defaults(func=cmd_sweep)


def _add_info(sub: argparse._SubParsersAction) -> None:
    i = sub.add_parser("info", help="describe a bundle")
    i.add_argument("dir", type=Path)
    i.add_argument("--no-verify", action="store_true", help="skip the checksum verification")
    i.set_defaults(func=cmd_info)


def _add_ray(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--ray", default=None, metavar="ADDRESS", help=what + " (cluster extra)")


def _add_lock_timeout(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--lock-timeout",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="wait at most this long for the bundle's update lock, then exit with code 6 "
        "(default: wait as long as another writer holds it)",
    )


def _add_rollback(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser(
        "rollback",
        help="make an earlier version of a bundle live again",
        description="Switch the bundle's `current` link (atomically, under the update lock) "
        "to the version live before the current one was saved, or to --to VERSION. The "
        "version is verified first; no version is deleted.",
    )
    r.add_argument("dir", type=Path, help="bundle directory")
    r.add_argument("--to", default=None, help="version name (see `sdrindex versions DIR`)")
    _add_lock_timeout(r)
    r.set_defaults(func=cmd_rollback)


def _add_versions(sub: argparse._SubParsersAction) -> None:
    v = sub.add_parser("versions", help="list a bundle's versions (* marks the live one)")
    v.add_argument("dir", type=Path, help="bundle directory")
    v.add_argument("--json", action="store_true", help="print JSON")
    v.set_defaults(func=cmd_versions)


def _epilog() -> str:
    lines = ["exit codes:"] + [f"  {code:<4} {text}" for code, text in EXIT_CODES.items()]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sdrindex",
        description="Spatial Pooler SDRs of images: learn, index, search, reconstruct.",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--debug", action="store_true", help="on an error, show the Python traceback as well"
    )
    sub = p.add_subparsers(dest="command", required=True)
    _add_fetch_mnist(sub)
    _add_figure(sub)
    _add_build(sub)
    _add_add(sub)
    _add_query(sub)
    _add_evaluate(sub)
    _add_sweep(sub)
    _add_info(sub)
    _add_versions(sub)
    _add_rollback(sub)
    _add_plugin_commands(sub)
    return p


#: Entry-point group through which installed extras add sub-commands (the service adds
#: ``serve``); the library never imports its app.
PLUGIN_GROUP = "sdrindex.commands"

#: Commands an extra provides, and the extra to install when it is missing.
_EXTRA_COMMANDS = {"serve": "service"}


def _add_plugin_commands(sub: argparse._SubParsersAction) -> None:
    """Add the sub-commands of installed extras; name the extra for a missing one."""
    from importlib.metadata import entry_points

    found = set()
    for ep in entry_points(group=PLUGIN_GROUP):
        try:
            add_parser = ep.load()
        except ImportError:
            continue  # the extra's dependencies are missing: the stub below explains
        add_parser(sub)
        found.add(ep.name)
    for name, extra in _EXTRA_COMMANDS.items():
        if name not in found:
            stub = sub.add_parser(name, help=f"(needs the '{extra}' extra)")
            stub.set_defaults(func=_missing_extra(name, extra))


def _missing_extra(name: str, extra: str):
    def run(args: argparse.Namespace) -> int:
        raise ParameterError(
            f"`sdrindex {name}` needs the {extra!r} extra, which is not installed: "
            f"pip install 'sdrindex[{extra}]'"
        )

    return run


def _system_cause(exc: BaseException) -> OSError | None:
    """The OSError about the machine (permission, space...) behind ``exc``, if any."""
    seen: BaseException | None = exc
    for _ in range(10):  # a cause chain is short; a cycle is not followed forever
        if seen is None:
            return None
        if isinstance(seen, OSError) and seen.errno in _SYSTEM_ERRNOS:
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def exit_code(exc: BaseException) -> int:
    """The documented exit code for an error that ended a command (see :data:`EXIT_CODES`)."""
    from sdrindex.bundle import LockBusyError

    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(exc, LockBusyError):
        return EXIT_LOCKED
    if _system_cause(exc) is not None or isinstance(exc, OSError):
        return EXIT_SYSTEM
    if isinstance(exc, ParameterError):
        return EXIT_USAGE
    if isinstance(exc, BundleError):
        return EXIT_BUNDLE
    if isinstance(exc, SDRIndexError):
        return EXIT_DATA
    return EXIT_INTERNAL


def _os_message(exc: OSError) -> str:
    where = Path(str(exc.filename)) if exc.filename else None
    name = f"{where}: " if where else ""
    if isinstance(exc, FileNotFoundError):
        return f"{name}no such file or folder; check the path (an output's folder must exist)"
    if exc.errno in (errno.EACCES, errno.EPERM):
        folder = where.parent if where else "."
        return f"{name}permission denied; check its permissions and its folder's (ls -ld {folder})"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{name}no space left on the device; free some space and run the command again"
    if exc.errno == errno.EROFS:
        return f"{name}the file system is read-only; write somewhere else"
    if isinstance(exc, IsADirectoryError):
        return f"{name}is a folder, expected a file; give a file name"
    return f"{name}{exc.strerror or exc}; check the path and try again"


def error_message(exc: BaseException) -> str:
    """One line for stderr saying what failed, on which file, and how to fix it."""
    if isinstance(exc, KeyboardInterrupt):
        return "sdrindex: interrupted"
    if isinstance(exc, SDRIndexError):
        text = f"error: {exc}"
    elif isinstance(exc, OSError):
        text = f"error: {_os_message(exc)}"
    else:
        text = (
            f"internal error: {type(exc).__name__}: {exc} (a bug in sdrindex; rerun with "
            "`sdrindex --debug ...` for the traceback and report it)"
        )
    return "sdrindex: " + " ".join(text.split("\n"))


def main(argv: list[str] | None = None) -> int:
    """Run ``sdrindex`` with ``argv``; returns the exit code (see :data:`EXIT_CODES`)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (Exception, KeyboardInterrupt) as exc:
        if args.debug:
            raise
        print(error_message(exc), file=sys.stderr)
        return exit_code(exc)


if __name__ == "__main__":
    sys.exit(main())
