"""Search on a Ray cluster: one actor per shard (optionally replicated), scatter-gather.

:class:`ShardActor` holds one :class:`~sdrindex.cluster.shard.Shard` (its bundle
memory-mapped) and answers its queries, rows and adds. It opens the shard from disk in
``__init__``, so when Ray restarts an actor whose process died (``max_restarts``) it comes
back with the shard's newest saved version by itself, and the calls that were in flight
are sent again (``max_task_retries``).

:class:`RayShardSet` is the :class:`~sdrindex.cluster.shardset.ShardSet` over those
actors: a query goes to every shard (one live replica each), the per-shard top-k are
merged with the single index's ordering (overlap descending, then id ascending) by
:func:`~sdrindex.cluster.merge.merge_topk`, so the answer equals one exact index's over all
items. Every wait is bounded: a shard none of whose replicas answers within
``timeout_s`` (its node is gone and the actor cannot be placed elsewhere, or it keeps
crashing) raises :class:`~sdrindex.errors.ShardUnavailableError` naming it; a partial
top-k is never returned.

Actors ask for ``resources`` (for example ``{"sdrindex_shard_slot": 1}``, offered by
each node with ``ray start --resources``) and are spread across the nodes in turn (a soft
node affinity, :func:`_placement`); with ``replicas`` > 1 each shard has that many actors,
on different nodes, and a query goes to the next live one.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from sdrindex.bundle import check_labels_arg, update_lock
from sdrindex.cluster.layout import ShardedLayout, pin_live_shards
from sdrindex.cluster.ray_connect import connect, import_ray
from sdrindex.errors import ParameterError, ShardUnavailableError

log = logging.getLogger("sdrindex.cluster")

#: Seconds a query waits for a shard before it is reported unavailable. A restarted actor
#: answers about 1 s after its process died (notes/ray.md); reloading a large shard takes
#: longer, so this leaves room for several.
QUERY_TIMEOUT_S = 10.0

#: Seconds an add waits for the owning shard's durable save.
ADD_TIMEOUT_S = 120.0

#: Arrays above this many bytes go to the object store once and every shard reads them
#: from there (below it Ray inlines them into each call anyway).
_PUT_BYTES = 64 * 1024


class ShardActor:
    """One shard, served by a Ray actor (see the module docstring).

    Parameters
    ----------
    path : str
        The sharded bundle's directory (on a filesystem every node sees).
    shard, n_shards : int
        Which shard, of how many.
    verify : bool
        Verify the shard's checksums when it is opened (also on every restart).
    """

    def __init__(self, path: str, shard: int, n_shards: int, verify: bool = True) -> None:
        self._args = (path, shard, n_shards, verify)
        self._shard = self._open()
        self._warm()

    def _open(self) -> Any:
        from sdrindex.cluster.shard import Shard

        path, shard, n_shards, verify = self._args
        return Shard.open(path, shard, n_shards, verify=verify)

    def _warm(self) -> None:
        """One single and one batch query: numba's kernels are loaded (or compiled) before
        the actor counts as started, not inside the first query's time limit."""
        shard = self._shard
        if shard.n_items == 0:
            return
        _, _, sdrs = shard.rows(np.array([shard.shard], dtype=np.int64))  # its first item
        shard.query(sdrs, 10, {})
        shard.query(np.repeat(sdrs, 2, axis=0), 10, {})

    def query(
        self, packed: NDArray[np.uint8], k: int, params: dict[str, Any]
    ) -> tuple[NDArray[np.int64], NDArray[np.int32]]:
        """The shard's top-``k`` (global ids, overlaps) of each query, (nq, k) each."""
        return self._shard.query(packed, k, params)

    def rows(self, ids: NDArray[np.int64]) -> tuple[Any, Any, Any]:
        """(images, labels or None, packed SDRs) of global ``ids`` this shard owns."""
        return self._shard.rows(ids)

    def add(
        self, images: NDArray[np.uint8], labels: NDArray[np.int64] | None, first_id: int
    ) -> NDArray[np.int64]:
        """Append items (saved durably before this returns); their global ids."""
        return self._shard.add(images, labels, first_id)

    def reload(self) -> int:
        """Open the shard's newest saved version (a replica, after another one added)."""
        self._shard = self._open()
        return int(self._shard.n_items)

    def status(self) -> dict[str, Any]:
        """The shard's status, with the node and process answering."""
        import ray

        out = dict(self._shard.status())
        out["node_id"] = ray.get_runtime_context().get_node_id()
        out["pid"] = os.getpid()
        out["rss_mb"] = _rss_mb()
        return out

    def column(self, which: int) -> NDArray | None:
        """Column ``which`` (0 images, 1 labels, 2 packed sdrs) of the shard, local order."""
        t = self._shard.bundle.table
        col = (t.images, t.labels, t.sdrs)[which]
        return None if col is None else np.asarray(col)

    def ping(self) -> int:
        """The shard's number: a call that does no work (the round trip's cost)."""
        return self._shard.shard


@dataclass
class _Shard:
    """The actors of one shard and which one a query goes to next."""

    index: int
    actors: list[Any]
    n_items: int
    turn: itertools.count = field(default_factory=itertools.count)

    def order(self) -> list[Any]:
        """The replicas, starting at the next one in turn (spreads queries over them)."""
        start = next(self.turn) % len(self.actors)
        return self.actors[start:] + self.actors[:start]


class RayShardSet:
    """A :class:`~sdrindex.cluster.shardset.ShardSet` whose shards are Ray actors.

    Make one with :meth:`connect`. Safe to use from several threads (the service's
    request threads): queries run concurrently, adds one at a time.
    """

    def __init__(
        self,
        root: str | Path,
        shards: list[_Shard],
        *,
        timeout_s: float = QUERY_TIMEOUT_S,
        add_timeout_s: float = ADD_TIMEOUT_S,
    ) -> None:
        self._ray = import_ray()
        self.root = Path(root)
        self._shards = shards
        self.timeout_s = float(timeout_s)
        self.add_timeout_s = float(add_timeout_s)
        self._add_lock = threading.Lock()

    # ------------------------------------------------------------------ making one

    @classmethod
    def connect(
        cls,
        address: str | None,
        path: str | Path,
        replicas: int = 1,
        *,
        verify: bool = True,
        resources: dict[str, float] | None = None,
        num_cpus: float = 0.0,
        max_restarts: int = -1,
        max_task_retries: int = 3,
        timeout_s: float = QUERY_TIMEOUT_S,
        start_timeout_s: float = 300.0,
    ) -> RayShardSet:
        """Join the cluster at ``address`` and start ``replicas`` actors per shard of ``path``.

        Parameters
        ----------
        address : str or None
            The cluster's head ``HOST:PORT`` (None: a Ray started in this process).
        path : str or Path
            A sharded bundle (see :mod:`sdrindex.cluster.layout`) on a filesystem that
            every node sees at the same path.
        replicas : int
            Actors per shard (>= 1); a query goes to one live replica of each shard.
        verify : bool
            Actors verify their shard's checksums when they open it.
        resources : dict, optional
            Custom Ray resources each actor holds (e.g. ``{"sdrindex_shard_slot": 1}``).
        num_cpus : float
            CPUs each actor holds for scheduling (0: the shards share the node's cores).
        max_restarts, max_task_retries : int
            Ray's restarts of a dead actor (-1: always) and re-sends of its in-flight calls.
        timeout_s : float
            How long a query waits for a shard before :class:`ShardUnavailableError`.
        start_timeout_s : float
            How long to wait for every actor to have opened its shard.

        Returns
        -------
        RayShardSet
        """
        if replicas < 1:
            raise ParameterError(f"--replicas must be >= 1, got {replicas}")
        layout = ShardedLayout.load(path, verify=False)  # the actors verify their own files
        ray = connect(address)
        opts: dict[str, Any] = dict(
            max_restarts=max_restarts, max_task_retries=max_task_retries, num_cpus=num_cpus
        )
        if resources:
            opts["resources"] = dict(resources)
        remote = ray.remote(ShardActor)
        n = int(layout.n_shards)
        root = str(Path(layout.root).resolve())
        place = _placement(ray, resources or {})
        actors = [
            [
                remote.options(**opts, scheduling_strategy=place(s + r)).remote(root, s, n, verify)
                for r in range(replicas)
            ]
            for s in range(n)
        ]
        shards = [_Shard(s, actors[s], 0) for s in range(n)]
        out = cls(root, shards, timeout_s=timeout_s)
        out._wait_started(start_timeout_s)
        return out

    def _wait_started(self, timeout_s: float) -> None:
        """Wait until every actor opened its shard; record the shards' item counts."""
        ray = self._ray
        refs = {a.status.remote(): (sh, a) for sh in self._shards for a in sh.actors}
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=timeout_s)
        missing = sorted({refs[r][0].index for r in refs if r not in ready})
        for ref in ready:
            sh, _ = refs[ref]
            try:
                sh.n_items = int(ray.get(ref)["n_items"])
            except Exception as exc:  # noqa: BLE001 - an actor that cannot open its shard
                self.close()
                raise ShardUnavailableError(
                    [sh.index], f"its actor could not open it: {_cause(exc)}"
                ) from exc
        if missing:
            self.close()
            raise ShardUnavailableError(
                missing,
                f"its actor did not start within {timeout_s:.0f} s: does the cluster have "
                "room for it (the CPUs and resources each shard actor asks for)?",
            )

    # ------------------------------------------------------------------ the protocol

    @property
    def n_shards(self) -> int:
        return len(self._shards)

    @property
    def n_items(self) -> int:
        return sum(sh.n_items for sh in self._shards)

    def query(
        self, packed: NDArray[np.uint8], k: int, params: dict[str, Any] | None = None
    ) -> tuple[NDArray[np.int64], NDArray[np.int32]]:
        """The top-``k`` over all shards, merged: what one index over every item returns.

        Parameters
        ----------
        packed : ndarray of uint8, shape (n_queries, n_bytes)
            Packed query SDRs.
        k : int
            Results per query.
        params : dict, optional
            Search parameters for every shard's index (``ef``, ...).

        Returns
        -------
        ids : ndarray of int64, shape (n_queries, k)
            Global ids, -1 past the last item.
        overlaps : ndarray of int32, shape (n_queries, k)
            Their overlaps with the query, -1 past the last item.

        Raises
        ------
        ShardUnavailableError
            A shard had no replica answering within ``timeout_s``.
        """
        from sdrindex.cluster.merge import merge_topk

        packed = np.ascontiguousarray(packed, dtype=np.uint8)
        arg = self._ray.put(packed) if packed.nbytes > _PUT_BYTES else packed
        parts = self._scatter("query", (arg, int(k), dict(params or {})), self.timeout_s)
        return merge_topk([p[0] for p in parts], [p[1] for p in parts], int(k))

    def rows(
        self, ids: NDArray[np.int64]
    ) -> tuple[NDArray[np.uint8], NDArray[np.int64] | None, NDArray[np.uint8]]:
        """(images, labels or None, packed SDRs) of global ``ids``, in the order given.

        Each id's row comes from the shard that owns it (``id % n_shards``).
        """
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        n = self.n_shards
        if ids.size and (ids.min() < 0 or ids.max() >= self.n_items):
            bad = ids[(ids < 0) | (ids >= self.n_items)][:5].tolist()
            raise ParameterError(f"no item with id(s) {bad} (ids are 0..{self.n_items - 1})")
        owners = ids % n
        wanted = [s for s in range(n) if np.any(owners == s)] or [0]  # none: shapes from 0
        calls = {s: (ids[owners == s],) for s in wanted}
        parts = self._scatter("rows", calls, self.timeout_s, only=wanted)
        return _reassemble(ids, owners, dict(zip(wanted, parts, strict=True)))

    def add(self, images: NDArray[np.uint8], labels: NDArray[np.int64] | None) -> NDArray[np.int64]:
        """Append items: item ``j`` gets id ``n_items + j`` and goes to shard ``id % n``.

        Each owning shard's actor encodes its items and saves its new version durably
        before this returns; then the top level pins the shards' new versions. Adds are
        serialised (here and, through the bundle's update lock, with other writers). Every
        owning shard is asked first, so an add is refused whole, nothing written, when one
        is missing.

        Parameters
        ----------
        images : ndarray of uint8, shape (n, H, W)
        labels : ndarray of int64, shape (n,), or None

        Returns
        -------
        ndarray of int64, shape (n,)
            The new items' global ids.
        """
        images = np.asarray(images)
        if images.ndim != 3 or images.shape[0] == 0:
            raise ParameterError(f"images must have shape (n, height, width), got {images.shape}")
        m = int(images.shape[0])
        labels = check_labels_arg(labels, m)
        with self._add_lock, update_lock(self.root):
            self._refresh_counts()  # another writer may have added since
            first = self.n_items
            ids = first + np.arange(m, dtype=np.int64)
            owners = ids % self.n_shards
            # in the order of each shard's first new id: a failure leaves the lowest ids saved
            wanted = sorted({int(s) for s in owners}, key=lambda s: (s - first) % self.n_shards)
            for s in wanted:
                sel = np.flatnonzero(owners == s)
                lab = None if labels is None else labels[sel]
                self._add_to(self._shards[s], images[sel], lab, int(ids[sel[0]]))
            pin_live_shards(self.root)
        return ids

    def _refresh_counts(self) -> None:
        """Every shard's item count, from its actor (all must answer: ids depend on them)."""
        answers = self._scatter("status", (), self.timeout_s)
        for sh, st in zip(self._shards, answers, strict=True):
            sh.n_items = int(st["n_items"])

    def _add_to(
        self, sh: _Shard, images: NDArray[np.uint8], labels: NDArray[np.int64] | None, first: int
    ) -> None:
        """One shard's part of an add, written by one replica at a time.

        Two replicas writing the same ids at once would race for the shard's next version,
        so the next replica is asked only once the shard's saved count (read from disk by
        a live replica) shows that the previous one saved nothing: it died first. A call
        whose answer was lost after the save (the actor died; Ray re-sends the call and the
        restarted actor refuses ids the shard holds) is settled by that count too.
        """
        ray = self._ray
        before, m = sh.n_items, int(images.shape[0])
        cause = "no replica"
        for actor in sh.order():
            try:
                ray.get(actor.add.remote(images, labels, first), timeout=self.add_timeout_s)
                break
            except ray.exceptions.GetTimeoutError as exc:
                raise ShardUnavailableError(
                    [sh.index], f"its save did not finish within {self.add_timeout_s:g} s"
                ) from exc
            except ray.exceptions.RayTaskError as exc:
                if self._saved_count(sh) == before + m:
                    break
                raise _task_error(exc) from None  # the shard refused the items
            except ray.exceptions.RayError as exc:  # the actor died
                cause = _cause(exc)
                if self._saved_count(sh) == before + m:
                    break
        else:
            raise ShardUnavailableError([sh.index], f"no replica could save the items ({cause})")
        sh.n_items = before + m
        self._reload_replicas(sh)

    def _saved_count(self, sh: _Shard) -> int:
        """The shard's item count on disk (a live replica re-opens its newest version)."""
        return int(self._scatter("reload", (), self.timeout_s, only=[sh.index])[0])

    def _reload_replicas(self, sh: _Shard) -> None:
        """The other replicas of a shard that just saved a version open that version."""
        if len(sh.actors) < 2:
            return
        ray = self._ray
        refs = [a.reload.remote() for a in sh.actors]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=self.add_timeout_s)
        for ref in ready:
            try:
                ray.get(ref)
            except Exception as exc:  # noqa: BLE001 - that replica restarts and reloads anyway
                log.warning("a replica of shard %d did not reload: %s", sh.index, _cause(exc))

    def status(self) -> list[dict[str, Any]]:
        """Each shard: ``{"shard", "up", "replicas_up", "replicas", "n_items", ...}``.

        A replica is up when it answers within a few seconds (``timeout_s``, at most 5).
        """
        ray = self._ray
        wait = min(self.timeout_s, 5.0)
        refs = {
            a.status.remote(): (sh.index, r) for sh in self._shards for r, a in enumerate(sh.actors)
        }
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=wait)
        got: dict[tuple[int, int], dict[str, Any]] = {}
        for ref in ready:
            try:
                got[refs[ref]] = ray.get(ref)
            except Exception:  # noqa: BLE001 - a dead replica is reported as down
                pass
        out = []
        for sh in self._shards:
            live = [got[(sh.index, r)] for r in range(len(sh.actors)) if (sh.index, r) in got]
            entry: dict[str, Any] = {
                "shard": sh.index,
                "up": bool(live),
                "replicas": len(sh.actors),
                "replicas_up": len(live),
                "n_items": sh.n_items,
            }
            if live:
                entry.update({k: v for k, v in live[0].items() if k not in entry})
            out.append(entry)
        return out

    def close(self) -> None:
        """End the actors this set started."""
        for sh in self._shards:
            for a in sh.actors:
                try:
                    self._ray.kill(a, no_restart=True)
                except Exception:  # noqa: BLE001 - already gone
                    pass

    def column(self, which: int) -> NDArray | None:
        """Column ``which`` (0 images, 1 labels, 2 packed sdrs) of every item, in id order.

        Each shard sends its own column (labels: 8 bytes an item) and they are dealt back
        round-robin, so gathering the labels does not move the images.
        """
        parts = self._scatter("column", (int(which),), max(self.timeout_s, 60.0))
        if parts[0] is None:
            return None
        out = np.empty((self.n_items, *parts[0].shape[1:]), dtype=parts[0].dtype)
        for s, part in enumerate(parts):
            out[s :: self.n_shards] = part
        return out

    def ping(self) -> float:
        """Seconds of one scatter-gather of no-op calls to every shard: Ray's own cost.

        Raises
        ------
        ShardUnavailableError
            A shard had no replica answering within ``timeout_s``.
        """
        t = time.perf_counter()
        self._scatter("ping", (), self.timeout_s)
        return time.perf_counter() - t

    def actor_pids(self) -> list[list[int]]:
        """Process id of every replica of every shard (for tests and operators)."""
        ray = self._ray
        return [
            [int(ray.get(a.status.remote(), timeout=self.timeout_s)["pid"]) for a in sh.actors]
            for sh in self._shards
        ]

    # ------------------------------------------------------------------ scatter-gather

    def _scatter(
        self,
        method: str,
        args: tuple[Any, ...] | dict[int, tuple[Any, ...]],
        timeout_s: float,
        only: Sequence[int] | None = None,
    ) -> list[Any]:
        """Call ``method`` on one live replica of every shard (or of ``only``); the answers.

        ``args`` is the same for every shard, or a dict shard -> args. A replica that does
        not answer in time or died is replaced by the next one while time remains; a shard
        with none left raises :class:`ShardUnavailableError` naming every such shard.
        """
        ray = self._ray
        targets = list(range(self.n_shards)) if only is None else list(only)
        deadline = time.monotonic() + timeout_s
        queues = {s: self._shards[s].order() for s in targets}
        argof = (lambda s: args[s]) if isinstance(args, dict) else (lambda s: args)
        inflight = {getattr(queues[s].pop(0), method).remote(*argof(s)): s for s in targets}
        answers: dict[int, Any] = {}
        causes: dict[int, str] = {}
        while inflight:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            # a replica's slice of the wait: the rest of the time goes to the next replica
            slice_s = left if not any(queues[s] for s in inflight.values()) else left / 2
            ready, _ = ray.wait(list(inflight), num_returns=len(inflight), timeout=slice_s)
            for ref in ready:
                s = inflight.pop(ref)
                if s in answers:
                    continue
                try:
                    answers[s] = ray.get(ref)
                except ray.exceptions.RayTaskError as exc:
                    raise _task_error(exc) from None  # the shard refused the call: no retry
                except ray.exceptions.RayError as exc:
                    causes[s] = _cause(exc)
                    self._next(queues, s, method, argof(s), inflight)
            for ref, s in list(inflight.items()):
                if s in answers:  # another replica of that shard answered first
                    del inflight[ref]
            if not ready:  # slow replicas: ask the next replica of those shards too
                for s in set(inflight.values()):
                    if queues[s]:
                        self._next(queues, s, method, argof(s), inflight)
        # Calls nobody waits for are left to finish, not cancelled: a cancelled call queued
        # at an actor that was restarting left the actor waiting for it, and every later
        # call to that actor timed out (seen in the node-loss test, Ray 2.60).
        missing = [s for s in targets if s not in answers]
        if missing:
            why = "; ".join(f"shard {s}: {causes[s]}" for s in missing if s in causes)
            raise ShardUnavailableError(
                missing,
                f"no actor of it answered within {timeout_s:g} s{'; ' + why if why else ''}: "
                "restarting, or its node is gone; /readyz lists the shards that are up",
            )
        return [answers[s] for s in targets]

    def _next(
        self,
        queues: dict[int, list[Any]],
        s: int,
        method: str,
        args: tuple[Any, ...],
        inflight: dict[Any, int],
    ) -> None:
        if queues[s]:
            inflight[getattr(queues[s].pop(0), method).remote(*args)] = s


def _placement(ray: Any, resources: dict[str, float]) -> Any:
    """``place(i)``: the scheduling strategy of the i-th actor, nodes taken in turn.

    Ray's ``SPREAD`` is a preference: here it put both shards of a two-node test on one node
    now and then. So actor ``shard + replica`` asks for node ``(shard + replica) % n_nodes``
    (of the live nodes offering ``resources``), so that shards spread and a shard's replicas
    land on different nodes. The affinity is soft, and so still a preference (a node Ray
    finds busy is passed over; an actor whose node is gone restarts wherever it fits):
    resources that each node offers a fixed number of (shard slots) are what bound the
    shards a node holds.
    """
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = sorted(
        x["NodeID"]
        for x in ray.nodes()
        if x["Alive"] and all(x["Resources"].get(k, 0) >= v for k, v in resources.items())
    )
    if not nodes:
        return lambda i: "SPREAD"
    return lambda i: NodeAffinitySchedulingStrategy(nodes[i % len(nodes)], soft=True)


def _rss_mb() -> float | None:
    """This process's resident memory (MB), from /proc (None elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


def _task_error(exc: Any) -> BaseException:
    """The exception a shard's own code raised (a ParameterError...), as it was raised."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


def _cause(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def _reassemble(
    ids: NDArray[np.int64], owners: NDArray[np.int64], parts: dict[int, tuple[Any, Any, Any]]
) -> tuple[NDArray[np.uint8], NDArray[np.int64] | None, NDArray[np.uint8]]:
    """Per-shard (images, labels, sdrs) back into the order of ``ids``."""
    first = next(iter(parts.values()))
    images = np.empty((ids.size, *np.asarray(first[0]).shape[1:]), dtype=np.uint8)
    sdrs = np.empty((ids.size, np.asarray(first[2]).shape[1]), dtype=np.uint8)
    labels = None if first[1] is None else np.empty(ids.size, dtype=np.int64)
    for s, (im, lab, sd) in parts.items():
        sel = owners == s
        images[sel] = im
        sdrs[sel] = sd
        if labels is not None:
            labels[sel] = lab
    return images, labels, sdrs
