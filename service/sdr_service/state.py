"""The bundle a worker serves: loading, warming, reloading and writing.

A worker holds one immutable :class:`Loaded` snapshot (the bundle plus what is built from
it: reconstructors, the label readout) and replaces it whole, so a request that started on
one version finishes on it. Before answering, a request looks at the bundle's ``current``
link (one ``readlink``); when another worker (or ``sdrindex add``) made a new version, the
worker loads it first, so an item added through any worker is found by the next query to
every worker.

Writes (``POST /v1/items``) never touch the served snapshot: the writer loads a private
copy of the newest version, adds to it and saves it as a new version (atomic, see
:mod:`sdrindex.bundle`), under a lock file that serialises the service's writers across
worker processes, then switches to that version.

A load that fails is remembered and retried with exponential backoff (:class:`Backoff`),
never by every request: at start-up the loader thread keeps retrying (``/readyz`` answers
503 with the reason and ``Retry-After`` meanwhile, and turns 200 by itself once the bundle
loads); a new version that does not load leaves the worker serving the last good snapshot,
and one background attempt per backoff period tries it again.

Answers go to anyone who asks, so what they say about the bundle names it by its folder
name and version, never by its absolute path (:func:`public_text`); the log keeps the paths.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sdr_service.errors import ApiError
from sdr_service.settings import Settings
from sdrindex.bundle import CURRENT, Bundle, resolve_version, update_lock
from sdrindex.errors import SDRIndexError
from sdrindex.sdr import overlap

log = logging.getLogger("service")

#: Methods that read only the SP and the decoder arrays (kept across versions sharing them).
_SP_ONLY = ("backprojection", "decoder")

#: An absolute path in a message: a "/" not preceded by a word, a dot or another "/" (which
#: leaves URLs and relative paths alone), up to a space, quote, bracket or colon.
_ABS_PATH = re.compile(r"(?<![\w.:/~-])/[^\s'\"()<>,;:|*?]+")

#: Attempts at loading a new version that keeps moving while it is read (a writer replaced
#: it again) before the worker gives up until the next request.
_MOVING_TRIES = 3


def public_text(text: str, root: str | Path) -> str:
    """``text`` without absolute filesystem paths, for answers to unauthenticated clients.

    Paths inside the bundle start at its folder name (``mnist/v-.../manifest.json``); any
    other absolute path is shortened to its last part. The server log keeps the full paths.

    Parameters
    ----------
    text : str
        A message (an error's text, a reason).
    root : str or Path
        The bundle directory the service serves.

    Returns
    -------
    str
        The message, its paths made relative to the bundle's folder or shortened.
    """
    root = Path(root)
    name = root.name or "bundle"
    for prefix in sorted({str(root.absolute()), str(root.resolve())}, key=len, reverse=True):
        if len(prefix) > 1:
            text = text.replace(prefix, name)

    def shorten(m: re.Match[str]) -> str:
        path = m.group(0)
        top = path.split("/", 2)[1]
        if not top or not os.path.isdir("/" + top):
            return path  # not a file's path (an API route such as /v1/items)
        return os.path.basename(path.rstrip("/")) or path

    return _ABS_PATH.sub(shorten, text)


def _when(seconds: float) -> str:
    return f"next attempt in {math.ceil(seconds)} s" if seconds > 0 else "retrying now"


#: numpy writes an array to a file with ``fwrite`` and reports a short write (the device
#: filled up mid-array) as an OSError without an errno: "N requested and M written".
_SHORT_WRITE = re.compile(r"\b\d+ requested and \d+ written\b")


def disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error it was raised from) says the disk or the quota is full.

    Parameters
    ----------
    exc : BaseException
        An error from writing a bundle (a ``BundleError`` wraps the ``OSError``).

    Returns
    -------
    bool
        True for ``ENOSPC``, ``EDQUOT`` or numpy's short write, anywhere in the chain.
    """
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError):
            if cur.errno in (errno.ENOSPC, errno.EDQUOT):
                return True
            if cur.errno is None and _SHORT_WRITE.search(str(cur)):
                return True
        cur = cur.__cause__ or cur.__context__
    return False


class Backoff:
    """When to try a failing load again: ``first``, 2x, 4x ... seconds, at most ``cap``.

    Parameters
    ----------
    first, cap : float
        The first delay and the longest one (seconds).
    clock : callable
        Monotonic seconds (``time.monotonic``; tests pass a clock they move by hand).
    """

    def __init__(self, first: float, cap: float, clock: Callable[[], float]) -> None:
        self.first = first
        self.cap = max(cap, first)
        self.clock = clock
        self.failures = 0
        self.next_at = 0.0

    def failed(self) -> float:
        """Count a failure; the delay (seconds) until the next attempt is due."""
        self.failures += 1
        delay = min(self.cap, self.first * 2.0 ** min(self.failures - 1, 60))
        self.next_at = self.clock() + delay
        return delay

    def reset(self) -> None:
        self.failures = 0
        self.next_at = 0.0

    def remaining(self) -> float:
        """Seconds until the next attempt is due (0 when it is)."""
        return max(0.0, self.next_at - self.clock())

    def due(self) -> bool:
        return self.clock() >= self.next_at


@dataclass
class Loaded:
    """One version of the bundle and everything built from it (never mutated)."""

    bundle: Bundle
    version: str
    n_columns: int
    image_shape: tuple[int, int]
    column_dims: tuple[int, ...]
    reconstructors: dict[str, Any]
    unavailable: dict[str, str]
    labeler: Any | None
    label_method: str | None
    loaded_at: float = field(default_factory=time.time)

    @property
    def n_items(self) -> int:
        return len(self.bundle.table)

    @property
    def has_labels(self) -> bool:
        return self.bundle.table.labels is not None

    def methods(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name, rec in self.reconstructors.items():
            if isinstance(rec, Deferred) and rec.error is not None:
                out[name] = {"available": False, "reason": rec.error}
            elif isinstance(rec, Deferred) and not rec.built:
                out[name] = {"available": True, "detail": "being prepared"}
            else:
                out[name] = {"available": True}
        for name, why in self.unavailable.items():
            out[name] = {"available": False, "reason": why}
        return out

    def reconstructor(self, name: str) -> Any:
        rec = self.reconstructors[name]
        return rec.get() if isinstance(rec, Deferred) else rec


def _file_sha(bundle: Bundle, rel: str) -> str | None:
    info = (bundle.manifest.get("files") or {}).get(rel)
    return info.get("sha256") if isinstance(info, dict) else None


def _settle_heap(collect: bool) -> None:
    """Exclude everything alive now (imports, numba, the bundle) from the cyclic GC.

    A full collection of a worker's ~190,000 start-up objects takes ~110 ms with the GIL
    held, stalling every request in that worker; it ran every few seconds under load (each
    answer allocates thousands of small objects) and set the latency tail. Frozen objects
    are still freed by reference counting when dropped (an old bundle version after a
    reload); only cyclic garbage among them would stay.
    """
    import gc

    if collect:
        gc.collect()
    gc.freeze()


class Deferred:
    """A reconstructor built on first use (or by the background warm-up after ready)."""

    def __init__(self, name: str, factory: Any, public: Callable[[str], str] = str) -> None:
        self.name = name
        self._factory = factory
        self._public = public  # the error as answers show it (no filesystem paths)
        self._lock = threading.Lock()
        self._value: Any = None
        self._error: str | None = None

    @property
    def built(self) -> bool:
        return self._value is not None or self._error is not None

    @property
    def error(self) -> str | None:
        return self._error

    def get(self) -> Any:
        with self._lock:
            if self._value is None and self._error is None:
                try:
                    self._value = self._factory()
                except (SDRIndexError, ValueError) as exc:
                    log.warning("method %s unavailable: %s", self.name, exc)
                    self._error = self._public(str(exc))
            if self._error is not None:
                raise ApiError(
                    422, f"method {self.name!r} is not available for this bundle: {self._error}"
                )
            return self._value


class BundleService:
    """Holds the served bundle of one worker process.

    Parameters
    ----------
    settings : Settings
        The bundle directory, the limits, the retry backoff.
    clock : callable, optional
        Monotonic seconds deciding when a failed load is due again (tests move it by hand).
    """

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.root = Path(settings.bundle)
        self.status = "starting"  # starting -> loading -> ready | failed (retried) -> ready
        self._cause: str | None = "the service is starting"
        self.started_at = time.time()
        self.ready_at: float | None = None
        self._loaded: Loaded | None = None
        self._linked = True  # the bundle path has a `current` link (not a version dir)
        self._clock = clock
        self._start_backoff = self._backoff()
        #: The newest version that failed to load (None: none failed), and why (public text).
        self._failed_target: str | None = None
        self._reload_cause: str | None = None
        self._reload_backoff = self._backoff()
        self._retrying = False  # a background retry of the failed version runs
        self._retry_guard = threading.Lock()
        self._closed = threading.Event()
        self._reload_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._samples_lock = threading.Lock()
        self._samples: tuple[str, NDArray[np.uint8], NDArray[np.int64] | None] | None = None
        #: Serialises numba's parallel kernels when its threading layer is not thread-safe.
        self.compute_lock: threading.Lock | None = None

    def _backoff(self) -> Backoff:
        s = self.settings
        return Backoff(s.retry_backoff_s, s.retry_backoff_max_s, self._clock)

    @property
    def name(self) -> str:
        """The bundle's folder name: how answers refer to it (never its absolute path)."""
        return self.root.name or "bundle"

    def public(self, text: str) -> str:
        """``text`` fit for an answer: :func:`public_text` for this bundle."""
        return public_text(text, self.root)

    # ------------------------------------------------------------------ start-up

    def start(self) -> None:
        """Load and warm the bundle (the loader thread); retry with backoff until it loads.

        A worker whose load fails stays up and keeps trying (its socket keeps taking
        connections: they get 503 with the reason and ``Retry-After``), at most every
        ``retry_backoff_max_s`` seconds, so it recovers by itself once the bundle is fixed.
        """
        self.status, self._cause = "loading", f"loading the bundle {self.name}"
        while True:
            t0 = time.perf_counter()
            try:
                loaded = self._load_first()
                break
            except Exception as exc:  # noqa: BLE001 - reported by /readyz; retried below
                delay = self._start_backoff.failed()
                log.exception(
                    "could not load the bundle %s (failure %d); retrying in %.1f s",
                    self.root,
                    self._start_backoff.failures,
                    delay,
                )
                self._cause = f"could not load the bundle {self.name}: {self.public(str(exc))}"
                self.status = "failed"
            if not self._wait_due(self._start_backoff):
                return
        self._loaded = loaded
        self.ready_at = time.time()
        self.status, self._cause = "ready", None
        self._start_backoff.reset()
        log.info(
            "bundle %s (%s, %d items) loaded and warmed in %.2f s",
            self.root,
            loaded.version,
            loaded.n_items,
            time.perf_counter() - t0,
        )
        self.build_deferred(loaded)
        self.warm_batches(loaded)
        _settle_heap(collect=False)

    def _load_first(self) -> Loaded:
        """One attempt at the start-up load: verified, prepared, single-query paths warmed."""
        vdir = resolve_version(self.root)
        self._linked = vdir.resolve() != self.root.resolve()
        bundle = self.open_bundle(verify=True)
        loaded = self._prepare(bundle, previous=None)
        self._warm(loaded, check=True)
        _settle_heap(collect=True)
        return loaded

    def open_bundle(self, verify: bool) -> Any:
        """The live version of the bundle: a ``Bundle``, or a sharded bundle read like one
        (every shard in this process: ``sdrindex.cluster.LocalShardSet``)."""
        from sdrindex.cluster import open_bundle

        return open_bundle(self.root, verify=verify)

    def _wait_due(self, backoff: Backoff) -> bool:
        """Wait until ``backoff``'s next attempt is due; False once :meth:`close` was called."""
        while not backoff.due():
            # Short waits: the clock, not the wait, decides (a test's clock jumps).
            if self._closed.wait(min(0.5, max(0.01, backoff.remaining()))):
                return False
        return not self._closed.is_set()

    def close(self) -> None:
        """Stop retrying failed loads (the app's shutdown)."""
        self._closed.set()

    @property
    def reason(self) -> str | None:
        """Why the worker is not ready (None when it is), for ``/readyz`` and 503 answers."""
        cause = self._cause
        if cause is None or self.status != "failed":
            return cause
        b = self._start_backoff
        return f"{cause}; {_when(b.remaining())} (failed {b.failures} time(s))"

    def retry_after(self) -> str:
        """Seconds a client should wait before asking again (``Retry-After``)."""
        if self.status == "failed":
            return str(max(1, math.ceil(self._start_backoff.remaining())))
        return "2"

    @property
    def reload_error(self) -> str | None:
        """Why the newest version is not served (None when it is), with the next attempt."""
        cause = self._reload_cause
        if cause is None:
            return None
        b = self._reload_backoff
        when = _when(0.0 if self._retrying else b.remaining())
        return f"{cause}; still serving the previous version; {when} (failed {b.failures} time(s))"

    def reload_state(self) -> dict[str, Any] | None:
        """The failed reload, for ``/v1/info`` (None when the newest version is served)."""
        if self._reload_cause is None:
            return None
        b = self._reload_backoff
        return {
            "failed_version": self._failed_target,
            "error": self._reload_cause,
            "failures": b.failures,
            "retry_in_s": round(b.remaining(), 3),
            "retrying": self._retrying,
        }

    def warm_batches(self, loaded: Loaded) -> None:
        """Run the batch paths once (after ready: a batch request meanwhile just waits)."""
        t0 = time.perf_counter()
        packed = np.asarray(loaded.bundle.table.sdrs[: min(16, loaded.n_items)])
        loaded.bundle.index.query(packed, max(10, self.settings.knn_k, self.settings.label_k))
        log.info("batch queries ready in %.1f s", time.perf_counter() - t0)

    def build_deferred(self, loaded: Loaded) -> None:
        """Build (and run once) the methods left for after start-up."""
        for rec in loaded.reconstructors.values():
            if isinstance(rec, Deferred) and not rec.built:
                t0 = time.perf_counter()
                try:
                    made = rec.get()
                    made.reconstruct(np.asarray(loaded.bundle.table.sdrs[:1]))
                    log.info("method %s ready in %.1f s", rec.name, time.perf_counter() - t0)
                except ApiError as exc:
                    log.warning("%s", exc.detail)

    def _prepare(self, bundle: Bundle, previous: Loaded | None) -> Loaded:
        from sdrindex.reconstruct import RECONSTRUCTORS, make_reconstructor

        same_sp = previous is not None and (
            _file_sha(bundle, "sp.npz") == _file_sha(previous.bundle, "sp.npz")
            and _file_sha(bundle, "decoder/weights.npz")
            == _file_sha(previous.bundle, "decoder/weights.npz")
        )
        dec = bundle.decoder or {}
        recs: dict[str, Any] = {}
        unavailable: dict[str, str] = {}
        for name in RECONSTRUCTORS:
            params = {"k": self.settings.knn_k} if name == "knn" else {}
            if name in _SP_ONLY and same_sp and name in previous.reconstructors:
                # It reads only the SP and the decoder arrays, which did not change.
                recs[name] = previous.reconstructors[name]
                continue
            if name in _SP_ONLY and same_sp and name in previous.unavailable:
                unavailable[name] = previous.unavailable[name]
                continue
            if name == "backprojection" and "backprojection_connected_scale" not in dec:
                # Calibrated when made (seconds): build it after the service is ready.
                factory = partial(make_reconstructor, name, bundle, **params)
                recs[name] = Deferred(name, factory, public=self.public)
                continue
            try:
                recs[name] = make_reconstructor(name, bundle, **params)
            except (SDRIndexError, ValueError) as exc:
                unavailable[name] = self.public(str(exc))
        labeler, label_method = self._labeler(bundle)
        height, width = bundle.table.image_shape
        dims = tuple(int(d) for d in bundle.sp.column_dimensions)
        return Loaded(
            bundle=bundle,
            version=Path(bundle.path).name if bundle.path else self.name,
            n_columns=int(bundle.sp.n_columns),
            image_shape=(int(height), int(width)),
            column_dims=dims,
            reconstructors=recs,
            unavailable=unavailable,
            labeler=labeler,
            label_method=label_method,
        )

    def _labeler(self, bundle: Bundle) -> tuple[Any | None, str | None]:
        from sdrindex.labels import make_labeler

        if bundle.table.labels is None:
            return None, None
        dec = bundle.decoder or {}
        if "logistic_coef" in dec:  # a stored readout (never trained here: minutes)
            try:
                return make_labeler("logistic", bundle), "logistic"
            except (SDRIndexError, ValueError, KeyError, IndexError) as exc:
                log.warning("stored logistic readout unusable (%s); using knn votes", exc)
        return make_labeler("knn", bundle, k=self.settings.label_k), "knn"

    def _warm(self, loaded: Loaded, check: bool) -> None:
        """Run every code path once (numba's cache, page cache); check the SP's SDRs."""
        import numba

        b = loaded.bundle
        n = min(16, loaded.n_items)
        images = np.asarray(b.table.images[:n])
        packed = b.encode(images)
        if check and not np.array_equal(packed, np.asarray(b.table.sdrs[:n])):
            log.warning(
                "the SP's SDRs of the first %d stored images differ from the stored ones: "
                "was the bundle built with another version of sdrindex?",
                n,
            )
        b.encode(images[:1])
        # One query at a time runs on the calling thread: what /v1/search and
        # /v1/reconstruct need. Batches (the parallel kernel) are warmed after ready
        # (warm_batches): on a cold numba cache that kernel alone compiles for ~20 s.
        ids, ov = b.index.query(packed[:1], max(10, self.settings.knn_k, self.settings.label_k))
        b.index.query(packed[:1], 1)
        for rec in loaded.reconstructors.values():
            if not isinstance(rec, Deferred):
                rec.reconstruct(packed[:1])
        if loaded.labeler is not None:
            predict(loaded, packed[:1], ids, ov)
        # The threading layer is chosen by the first parallel kernel: run a small one
        # (the batch paths, which would choose it, are warmed only after ready).
        overlap(packed[:1], packed[:1])
        layer = numba.threading_layer()
        if layer == "workqueue" and self.compute_lock is None:
            log.warning("numba's threading layer is workqueue: parallel kernels serialised")
            self.compute_lock = threading.Lock()

    # ------------------------------------------------------------------ serving

    def ready(self) -> bool:
        return self.status == "ready" and self._loaded is not None

    def current(self) -> Loaded:
        """The snapshot to answer with: the newest version of the bundle that loads.

        A new version is loaded by the first request that sees it (the others wait for it,
        at most ``reload_wait_s``), so an item added through any worker is found by the next
        query to every worker. A version that failed to load is not tried again by the
        requests: they answer from the snapshot, and one background attempt per backoff
        period retries it.
        """
        loaded = self._loaded
        if loaded is None or self.status != "ready":
            raise ApiError(503, f"not ready: {self.reason}", {"Retry-After": self.retry_after()})
        if not self._linked:
            return loaded
        target = self._target()
        if target is None or target == loaded.version:
            if target is not None and self._failed_target is not None:
                self._forget_failure()  # `current` names the served version again (a rollback)
            return loaded
        if target == self._failed_target:
            self._retry_soon()
            return loaded
        if not self._reload_lock.acquire(timeout=self.settings.reload_wait_s):
            return self._loaded or loaded  # another load is slow: answer from the snapshot
        try:
            loaded = self._loaded or loaded
            target = self._target()
            if target is None or target in (loaded.version, self._failed_target):
                return loaded  # loaded (or failed) by another thread while this one waited
            return self._try_reload(loaded)
        finally:
            self._reload_lock.release()

    def _target(self) -> str | None:
        """The version the bundle's ``current`` link names (one ``readlink``)."""
        try:
            return os.path.basename(os.readlink(self.root / CURRENT))
        except OSError:
            return None

    def _retry_soon(self) -> None:
        """Start one background retry of the failed version when its backoff is over."""
        if self._retrying or not self._reload_backoff.due():
            return
        with self._retry_guard:
            if self._retrying:
                return
            self._retrying = True
        threading.Thread(target=self._retry_reload, name="bundle-reload", daemon=True).start()

    def _retry_reload(self) -> None:
        try:
            with self._reload_lock:
                loaded = self._loaded
                if loaded is not None and not self._closed.is_set():
                    self._try_reload(loaded)
        finally:
            self._retrying = False

    def _try_reload(self, loaded: Loaded) -> Loaded:
        """Load the version ``current`` names and switch to it (``_reload_lock`` held).

        On failure the version is remembered with its error and the snapshot keeps serving.
        """
        for _ in range(_MOVING_TRIES):
            target = self._target()
            if target is None or target == loaded.version:
                return loaded
            try:
                bundle = self.open_bundle(verify=self.settings.verify_on_reload)
                new = self._prepare(bundle, previous=loaded)
                self._warm(new, check=False)
            except Exception as exc:  # noqa: BLE001 - the snapshot serves; retried with backoff
                if self._target() != target:
                    continue  # a writer replaced the version while it was read: load the newer
                self._reload_failed(target, exc, loaded)
                return loaded
            self._switch(new)
            return new
        return loaded

    def _reload_failed(self, target: str, exc: Exception, loaded: Loaded) -> None:
        if target != self._failed_target:
            self._reload_backoff.reset()
        delay = self._reload_backoff.failed()
        self._failed_target = target
        self._reload_cause = f"could not load the new version {target}: {self.public(str(exc))}"
        log.error(
            "could not load the new version %s of %s (%s); still serving %s; retrying in %.1f s",
            target,
            self.root,
            exc,
            loaded.version,
            delay,
        )

    def _forget_failure(self) -> None:
        """Drop the failed version's error: nothing newer than the snapshot is pending."""
        self._failed_target, self._reload_cause = None, None
        self._reload_backoff.reset()

    def _switch(self, new: Loaded) -> None:
        self._loaded = new
        self._failed_target, self._reload_cause = None, None
        self._reload_backoff.reset()
        _settle_heap(collect=False)
        if any(isinstance(r, Deferred) and not r.built for r in new.reconstructors.values()):
            threading.Thread(target=self.build_deferred, args=(new,), daemon=True).start()
        log.info("switched to bundle version %s (%d items)", new.version, new.n_items)

    def encode(self, loaded: Loaded, images: NDArray[np.uint8]) -> NDArray[np.uint8]:
        """Images (n, H, W) uint8 -> packed SDRs (n, ceil(n_columns / 8)): ``Bundle.encode``."""
        lock = self.compute_lock
        if lock is None:
            return loaded.bundle.encode(images)
        with lock:
            return loaded.bundle.encode(images)

    def query(self, loaded: Loaded, packed: NDArray[np.uint8], k: int):
        lock = self.compute_lock
        if lock is None or packed.shape[0] == 1:
            return loaded.bundle.index.query(packed, k)
        with lock:
            return loaded.bundle.index.query(packed, k)

    # ------------------------------------------------------------------ writes

    def add_items(
        self, images: NDArray[np.uint8], labels: NDArray[np.int64] | None
    ) -> tuple[NDArray[np.int64], Loaded]:
        """Append items to the bundle on disk (a new version) and serve that version.

        Nothing is written unless the whole new version is: a save that fails (disk full,
        read-only volume) leaves the previous version live and intact, removes what it
        wrote, and answers 507 (no space) or 503 with the reason; the items were not added.
        """
        if not self._linked:
            raise ApiError(
                409,
                f"{self.name} is a single bundle version, not a bundle directory with a "
                "`current` link: the service cannot add to it",
            )
        from sdrindex.cluster import is_sharded

        if is_sharded(self.root):
            from .sharded import add_items

            return add_items(self, images, labels)
        with self._write_lock, self._updating():
            try:
                bundle = Bundle.load(self.root, verify=True)
            except SDRIndexError as exc:
                raise ApiError(
                    503,
                    f"the items were not added: the current version of {self.name} does not "
                    f"load ({self.public(str(exc))}); the service keeps answering queries from "
                    "the last version that loaded",
                    {"Retry-After": str(max(1, math.ceil(self.settings.retry_backoff_s)))},
                ) from exc
            has_labels = bundle.table.labels is not None
            if has_labels and labels is None:
                raise ApiError(422, "this bundle has labels: give a `label` for every image")
            if not has_labels and labels is not None:
                raise ApiError(422, "this bundle has no labels: add images without `label`")
            ids = bundle.add(images, labels)
            self._save_version(bundle)
            del bundle
        return ids, self.current()

    @contextlib.contextmanager
    def _updating(self) -> Iterator[None]:
        """Hold the bundle's update lock; a lock that cannot be taken answers 507 or 503."""
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(update_lock(self.root))
            except (SDRIndexError, OSError) as exc:
                raise self._write_failure(exc, "take the update lock") from exc
            yield

    def _save_version(self, bundle: Bundle) -> None:
        """``bundle.save`` as a new version; on failure, no version of it is left behind.

        ``Bundle.save`` removes its temporary folder itself; a failure after that folder
        became a version (the swap of ``current``) would leave a complete but never-served
        ``v-*`` folder: removed here (it appeared while this writer held the update lock,
        so it is this save's).
        """
        before = {p.name for p in self.root.glob("v-*")}
        try:
            bundle.save(self.root)
        except (SDRIndexError, OSError) as exc:
            live = self._target()
            for left in self.root.glob("v-*"):
                if left.name not in before and left.name != live:
                    log.warning("removing %s, a version whose save failed", left)
                    shutil.rmtree(left, ignore_errors=True)
            raise self._write_failure(exc, "save the new version") from exc

    def _write_failure(self, exc: BaseException, what: str) -> ApiError:
        """The answer to a failed write: 507 when the disk is full, else 503; logged."""
        log.error("could not %s of %s: %s", what, self.root, exc)
        loaded = self._loaded
        serving = f" ({loaded.version})" if loaded is not None else ""
        kept = f"the items were not added and the previous version{serving} is still served"
        if disk_full(exc):
            return ApiError(
                507,
                f"no space left on the bundle's volume to {what} of {self.name}: {kept}; "
                "free some space (or grow the volume) and send the items again",
            )
        return ApiError(
            503,
            f"could not {what} of {self.name} ({self.public(str(exc))}): {kept}; "
            "check that the bundle's volume is writable and send the items again",
            {"Retry-After": str(max(1, math.ceil(self.settings.retry_backoff_s)))},
        )

    # ------------------------------------------------------------------ samples

    def samples(self) -> tuple[str, NDArray[np.uint8], NDArray[np.int64] | None]:
        """Images for the demo's "random test digit": MNIST's test set, else the bundle."""
        with self._samples_lock:
            if self._samples is None:
                try:
                    from sdrindex.datasets import load_mnist

                    images, labels = load_mnist("test")
                    self._samples = ("mnist-test", images, labels.astype(np.int64))
                except (SDRIndexError, OSError) as exc:
                    log.info("MNIST test set unavailable (%s); samples come from the bundle", exc)
                    self._samples = ("bundle", np.zeros((0, 28, 28), np.uint8), None)
            return self._samples


def predict(loaded: Loaded, packed: NDArray[np.uint8], ids, overlaps) -> NDArray[np.int64] | None:
    """Predicted labels of the queries (None when the bundle has no labels)."""
    lab = loaded.labeler
    if lab is None:
        return None
    if hasattr(lab, "predict_from_neighbours") and ids.shape[1] >= getattr(lab, "k", 1):
        return lab.predict_from_neighbours(ids, overlaps)
    return lab.predict(packed)
