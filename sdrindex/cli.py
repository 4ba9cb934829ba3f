"""The ``sdrindex`` command."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from sdrindex.errors import ParameterError, SDRIndexError
from sdrindex.sdr import row_popcount


def _threshold(value: str):
    return value if value == "mean" else int(value)


def cmd_fetch_mnist(args: argparse.Namespace) -> int:
    from sdrindex.datasets import fetch_mnist

    paths = fetch_mnist(args.dir, mirrors=args.mirror or None, timeout=args.timeout)
    for name, path in sorted(paths.items()):
        print(f"{name}: {path}")
    print(f"MNIST verified in {args.dir}; point SDRINDEX_MNIST_DIR there to use it.")
    return 0


def cmd_figure(args: argparse.Namespace) -> int:
    from sdrindex.datasets import binarize, load_mnist
    from sdrindex.evaluate.plots import comparison_figure
    from sdrindex.sp import SpatialPooler, sp_from_config, threshold_for

    t0 = time.perf_counter()
    if args.threshold is None:
        args.threshold = threshold_for(None if args.load_sp else args.config)
    if args.load_sp:
        sp = SpatialPooler.load(args.load_sp)
        print(f"loaded SP from {args.load_sp}", file=sys.stderr)
    else:
        sp = sp_from_config(args.config)
        images, _ = load_mnist("train", data_dir=args.data_dir)
        if args.limit:
            images = images[: args.limit]
        X = binarize(images, args.threshold)
        print(
            f"learning the SP on {len(X)} MNIST training images x {args.epochs} epoch(s) "
            f"({sp.n_columns} columns)...",
            file=sys.stderr,
        )
        t1 = time.perf_counter()
        sp.fit(X, epochs=args.epochs)
        print(f"  learned in {time.perf_counter() - t1:.1f} s", file=sys.stderr)
        if args.save_sp:
            sp.save(args.save_sp)
            print(f"  SP saved to {args.save_sp}", file=sys.stderr)
    test_images, test_labels = load_mnist("test", data_dir=args.data_dir)
    pick = np.arange(args.n)
    imgs = test_images[pick]
    sdrs = sp.transform(binarize(imgs, args.threshold))
    rows = {
        "back-projection\n(connected)": sp.inverse_transform(sdrs).reshape(imgs.shape),
        "back-projection\n(permanence)": sp.inverse_transform(sdrs, weighted=True).reshape(
            imgs.shape
        ),
    }
    out = comparison_figure(
        imgs,
        sdrs,
        rows,
        tuple(sp.column_dimensions),
        args.out,
        labels=test_labels[pick],
        title=f"MNIST test digits through the Spatial Pooler ({sp.n_columns} columns)",
    )
    sparsity = sdrs.mean()
    print(f"wrote {out} (SDR sparsity {sparsity:.4f}; {time.perf_counter() - t0:.1f} s in all)")
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from sdrindex.images import load_source
    from sdrindex.pipeline import BuildTimes, build_bundle, stderr_progress
    from sdrindex.sp import sp_from_config, threshold_for

    if args.epochs < 1:
        raise ParameterError(f"--epochs must be >= 1, got {args.epochs}")
    sp = sp_from_config(args.config)  # validate the config before any long work
    threshold = threshold_for(args.config) if args.threshold is None else args.threshold
    t = time.perf_counter()
    data = load_source(args.data, args.labels, args.limit or None)
    times = BuildTimes({"load": time.perf_counter() - t})
    bundle = build_bundle(
        data.images,
        data.labels,
        sp=sp,
        threshold=threshold,
        epochs=args.epochs,
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


def _load_query_images(paths: list[str]) -> tuple[np.ndarray, list[str]]:
    from sdrindex.images import load_image_file

    if not paths:
        raise ParameterError("give at least one image file")
    return np.stack([load_image_file(p) for p in paths]), list(paths)


def cmd_add(args: argparse.Namespace) -> int:
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
    with update_lock(args.dir):  # another add (CLI or service) waits; none is lost
        bundle = Bundle.load(args.dir)
        if bundle.table.labels is not None and args.label is None:
            raise ParameterError("this bundle has labels: pass --label L for the added images")
        if bundle.table.labels is None and args.label is not None:
            raise ParameterError("this bundle has no labels: add without --label")
        lab = None if args.label is None else np.full(len(images), args.label, np.int64)
        ids = bundle.add(images, lab)
        out = bundle.save(args.dir)
    for name, i in zip(names, ids, strict=True):
        print(f"{name}: id {int(i)}")
    print(f"added {len(ids)} items; bundle now holds {len(bundle.table)} ({out})")
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    import json

    from sdrindex.bundle import Bundle

    if args.k < 1:
        raise ParameterError(f"-k must be >= 1, got {args.k}")
    images, names = _load_query_images(args.images)
    bundle = Bundle.load(args.dir)
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

    from sdrindex.bundle import Bundle

    bundle = Bundle.load(args.dir, verify=not args.no_verify)
    print(json.dumps(bundle.summary(), indent=2))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from sdrindex.bundle import Bundle
    from sdrindex.evaluate import evaluate, write_report
    from sdrindex.index import BACKENDS

    if args.limit < 0 or args.k < 1 or args.k_blend < 1:
        raise ParameterError("--limit must be >= 0 and -k, --k-blend >= 1")
    backends = tuple(b.strip() for b in args.backends.split(",") if b.strip())
    if not backends or any(b not in BACKENDS for b in backends):
        raise ParameterError(f"--backends takes a comma-separated subset of {', '.join(BACKENDS)}")
    bundle = Bundle.load(args.dir)
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
    f.add_argument("--timeout", type=float, default=30.0, help="seconds per request (default 30)")
    f.set_defaults(func=cmd_fetch_mnist)


def _add_figure(sub: argparse._SubParsersAction) -> None:
    g = sub.add_parser(
        "figure", help="learn the SP on MNIST and draw original / SDR / back-projection"
    )
    g.add_argument("--out", required=True, type=Path, help="PNG file to write")
    g.add_argument(
        "--config",
        default=None,
        help="SP preset (sdrindex-mnist, htmcore-mnist, forum-global, forum-local) or a "
        "TOML/JSON file; default sdrindex-mnist",
    )
    g.add_argument("--limit", type=int, default=0, help="learn on the first N training images only")
    g.add_argument("--epochs", type=int, default=1)
    g.add_argument(
        "--threshold",
        type=_threshold,
        default=None,
        help="pixel >= T is on (or 'mean'); default: the preset's ('mean' for sdrindex-mnist), "
        "else 128",
    )
    g.add_argument("--n", type=int, default=10, help="number of test digits to draw (default 10)")
    g.add_argument("--save-sp", type=Path, help="also save the learned SP (.npz)")
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
    b.add_argument("--limit", type=int, default=0, help="use the first N images only")
    b.add_argument(
        "--config", default=None, help="SP preset or TOML/JSON file (default sdrindex-mnist)"
    )
    b.add_argument("--backend", choices=("nndescent", "exact"), default="nndescent")
    b.add_argument("--epochs", type=int, default=1)
    b.add_argument(
        "--threshold",
        type=_threshold,
        default=None,
        help="pixel >= T is on (or 'mean'); default: the preset's ('mean' for sdrindex-mnist), "
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
    b.set_defaults(func=cmd_build)


def _add_add(sub: argparse._SubParsersAction) -> None:
    a = sub.add_parser("add", help="append images to a bundle (atomic)")
    a.add_argument("dir", type=Path, help="bundle directory")
    a.add_argument("images", nargs="+", help="image files or folders")
    a.add_argument("--label", type=int, default=None, help="label of the added images")
    a.set_defaults(func=cmd_add)


def _add_query(sub: argparse._SubParsersAction) -> None:
    q = sub.add_parser("query", help="nearest stored items of images, by SDR overlap")
    q.add_argument("dir", type=Path, help="bundle directory")
    q.add_argument("images", nargs="+", help="image files")
    q.add_argument("-k", type=int, default=5, help="matches per image (default 5)")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.add_argument("--figure", type=Path, help="write a side-by-side PNG")
    q.set_defaults(func=cmd_query)


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser(
        "evaluate", help="reconstruction, classification, index and noise report on MNIST test"
    )
    e.add_argument("dir", type=Path, help="bundle directory (built from MNIST training images)")
    e.add_argument("--limit", type=int, default=0, help="use the first N test images only")
    e.add_argument("--out", type=Path, default=Path("out/evaluation"), help="report folder")
    e.add_argument("-k", type=int, default=5, help="neighbours in the k-NN label vote")
    e.add_argument("--k-blend", type=int, default=10, help="neighbours in the knn blend")
    e.add_argument(
        "--mp-limit",
        type=int,
        default=2000,
        help="run matching pursuit (slow) on the first N queries only; 0 = all (default 2000)",
    )
    e.add_argument(
        "--backends",
        default="exact,nndescent",
        help="index backends measured in the index section, comma-separated "
        "(default exact,nndescent)",
    )
    e.add_argument("--data-dir", type=Path, default=None, help="MNIST folder (default: bundled)")
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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="sdrindex",
        description="Spatial Pooler SDRs of images: learn, index, search, reconstruct.",
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SDRIndexError as exc:
        print(f"sdrindex: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sdrindex: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
