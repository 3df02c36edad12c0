"""Garbage collection of a shared chunk store: plan, then delete, safely beside writers.

``collect_garbage(store, maps)`` takes the store's exclusive lock, lists every chunk with its
stamp, walks every level of every map, computes what no map references and is old enough, and
(with ``delete=True``) deletes it, re-reading each chunk's stamp just before its delete. It
returns a ``GcPlan``: what it found and what it would delete or deleted.

**The invariant.** gc run *g* takes its lock at store time *L* and keeps it, with no live
writer, until it is done (``pqselfenc.core._locks``). It deletes chunk *C* only if no map it
was given references *C* and, read again right before the delete, ``stamp(C) <= cutoff`` with

    cutoff = min(L - grace, start(s) - slack for every writer session s that ended after L - grace)

A writer session (a shared lock, ``ChunkStore.writing``) stamps every chunk it writes or reuses
at or after its own start, and leaves a record of its start and end. So a chunk of a map that
gc was not given, written by a session that ended within the grace period, is never deleted,
however long that session ran; a map of a session that ended earlier must be among the maps.

**What the operator must do**, therefore: give gc every live map written more than ``grace``
ago (every map, in practice; the grace period covers maps still on their way to the folder gc
reads, and the time between a library ``batch()`` and the writing of its map). Write maps
inside ``writing()`` or within the grace period after it.

Crash safety: nothing is deleted before the plan is complete; each delete is one atomic
operation on one unreferenced chunk; a killed gc leaves its lock behind, which the next run
reports as stale (``remove_stale_locks`` removes it) and then completes the work.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pqselfenc.core._locks import ExclusiveLock, LockInfo, StoreLocks
from pqselfenc.core._lockspace import EndedSession, LockSpace, StoredChunk
from pqselfenc.core._store import ChunkStore
from pqselfenc.core.config import EncryptionConfig
from pqselfenc.core.datamap import DataMap
from pqselfenc.core.encryptor import SelfEncryptor
from pqselfenc.error import ChunkNotFound, ChunkStoreError, IntegrityError, StoreLockedError

__all__ = [
    "DEFAULT_GRACE",
    "SESSION_RETENTION",
    "GcMap",
    "GcPlan",
    "StoreReport",
    "collect_garbage",
    "store_report",
]

DEFAULT_GRACE = 24 * 3600.0
SESSION_RETENTION = 7 * 24 * 3600.0
_CONFIRM_EVERY = 1024  # deletes between two checks that our lock object is still there

Step = Callable[[str, int, int], None]


@dataclass(frozen=True)
class GcMap:
    """A DataMap given to gc: ``name`` says which in messages (e.g. its file); ``config``
    carries what walking it needs (the convergence secret of a ``--private-dedup`` map)."""

    data_map: DataMap
    name: str = "map"
    config: EncryptionConfig | None = None


MapInput = GcMap | DataMap


@dataclass
class GcPlan:
    """What one gc run found and did. Times are store-clock seconds since the epoch."""

    store: str
    maps: int
    grace: float
    started: float
    cutoff: float
    sessions: int
    chunks: int
    stored_bytes: int
    referenced: int
    unreferenced: int
    unreferenced_bytes: int
    candidates: list[StoredChunk] = field(repr=False)
    removed_locks: list[LockInfo] = field(default_factory=list)
    delete: bool = False
    deleted: int = 0
    freed_bytes: int = 0
    kept: int = 0
    swept: int = 0
    pruned: int = 0

    @property
    def candidate_bytes(self) -> int:
        """Bytes of the chunks old enough to delete."""
        return sum(c.size for c in self.candidates)

    @property
    def young(self) -> int:
        """Unreferenced chunks kept because they are within the grace period or were
        stamped by a writer session that ended within it."""
        return self.unreferenced - len(self.candidates)

    def as_dict(self) -> dict[str, Any]:
        """Every field, for ``--json``."""
        return {
            "store": self.store, "maps": self.maps, "grace": self.grace,
            "chunks": self.chunks, "bytes": self.stored_bytes, "referenced": self.referenced,
            "unreferenced": self.unreferenced, "unreferenced_bytes": self.unreferenced_bytes,
            "young": self.young, "sessions": self.sessions, "candidates": len(self.candidates),
            "candidate_bytes": self.candidate_bytes, "delete": self.delete,
            "deleted": self.deleted, "freed_bytes": self.freed_bytes, "kept": self.kept,
            "swept": self.swept, "pruned_sessions": self.pruned,
            "removed_locks": [i.as_dict() for i in self.removed_locks],
        }  # fmt: skip

    def lines(self) -> list[str]:
        """What a person reads: what was given, what would go (or went), what stays."""
        out = [f"removed {i.describe()}" for i in self.removed_locks]
        out.append(
            f"{self.maps} maps given: they reference {self.referenced} of {self.chunks} "
            f"chunks; {self.unreferenced} unreferenced ({self.unreferenced_bytes} bytes)"
        )
        if self.young:
            out.append(f"{self.young} unreferenced chunks are kept: younger than the grace "
                       f"period ({_span(self.grace)}) or reused by a recent writer")  # fmt: skip
        if self.delete:
            out.append(f"deleted {self.deleted} of {self.chunks} chunks ({self.freed_bytes} bytes)")
            if self.kept:
                out.append(f"{self.kept} chunks were reused or removed meanwhile: kept")
        else:
            out.append(f"would delete {len(self.candidates)} of {self.chunks} chunks "
                       f"({self.candidate_bytes} bytes)")  # fmt: skip
        return out


@dataclass
class StoreReport:
    """``store_report``'s answer: chunks and bytes; with maps, what they reference, what is
    missing, and which maps cannot be followed; the locks now held and recent sessions."""

    store: str
    chunks: int
    stored_bytes: int | None
    maps: int = 0
    referenced: int = 0
    missing: int = 0
    unreferenced: int = 0
    incomplete: list[str] = field(default_factory=list)
    locks: list[LockInfo] = field(default_factory=list)
    sessions: int = 0


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:g} s"


def _as_map(item: MapInput, index: int) -> GcMap:
    if isinstance(item, GcMap):
        return item
    if isinstance(item, DataMap):
        return GcMap(item, f"map {index + 1}")
    raise TypeError("maps must be GcMap or DataMap values")


def _locks_of(store: ChunkStore) -> StoreLocks:
    if not isinstance(store, ChunkStore):
        raise TypeError("store must be a ChunkStore")
    locks = store.locks()
    if locks is None:
        raise ChunkStoreError(
            f"{type(store).__name__} has no store locks: gc cannot run beside its writers"
        )
    return locks


# -- walking maps -------------------------------------------------------------------------------


@dataclass
class _Refs:
    names: set[bytes] = field(default_factory=set)
    incomplete: list[str] = field(default_factory=list)


def _levels(store: ChunkStore, m: GcMap) -> Iterator[set[bytes]]:
    for level in SelfEncryptor.from_data_map(m.data_map, store, m.config).levels():
        yield {c.name for c in level.chunks}


def _walk(store: ChunkStore, maps: Sequence[GcMap]) -> _Refs:
    """Every chunk of every level of every map. A level that cannot be read (a parent chunk
    missing or damaged) makes its map incomplete: its children are unknown, never guessed."""
    refs = _Refs()
    for m in maps:
        try:
            for names in _levels(store, m):
                refs.names |= names
        except (ChunkNotFound, IntegrityError):
            refs.incomplete.append(m.name)
    return refs


def _naming(store: ChunkStore, maps: Sequence[GcMap], absent: set[bytes]) -> list[str]:
    """The maps that name a chunk of ``absent`` (walked again: only when gc stops)."""
    return [m.name for m in maps if any(names & absent for names in _levels(store, m))]


def _stop(incomplete: list[str], short: list[str], given: int) -> ChunkStoreError:
    def shown(names: list[str]) -> str:
        more = f" and {len(names) - 3} more" if len(names) > 3 else ""
        return ", ".join(sorted(names)[:3]) + more

    short = [n for n in short if n not in incomplete]
    what = [f"cannot follow every level of {shown(incomplete)}: chunks are missing"]
    what = what if incomplete else []
    what += [f"{shown(short)} name chunks the store does not have"] if short else []
    return ChunkStoreError(
        f"{'; '.join(what)} ({len(incomplete) + len(short)} of the {given} maps given); "
        "gc stopped and deleted nothing: a map whose chunks cannot all be found protects "
        "nothing (are these maps of this store?)"
    )


# -- planning -----------------------------------------------------------------------------------


def _cutoff(started: float, grace: float, sessions: list[EndedSession], slack: float) -> tuple[
    float, int
]:  # fmt: skip
    """The newest stamp gc may delete, and how many recent sessions pulled it back."""
    horizon = started - grace
    recent = [s for s in sessions if s.end > horizon]
    # a chunk stamped at or after (start - slack) of a recent session is protected: strictly
    bounds = [math.nextafter(s.start - slack, -math.inf) for s in recent]
    return min([horizon, *bounds]), len(recent)


@dataclass
class _Tally:
    """One pass over the listing: counts, and only the chunks gc may delete are kept (memory
    grows with the referenced set and the candidates, not with the store)."""

    chunks: int = 0
    stored_bytes: int = 0
    unreferenced: int = 0
    unreferenced_bytes: int = 0
    candidates: list[StoredChunk] = field(default_factory=list)

    def count(
        self, chunk: StoredChunk, refs: set[bytes], unseen: set[bytes], cutoff: float
    ) -> None:
        self.chunks += 1
        self.stored_bytes += chunk.size
        if chunk.info.name in refs:
            unseen.discard(chunk.info.name)
            return
        self.unreferenced += 1
        self.unreferenced_bytes += chunk.size
        if chunk.stamp <= cutoff:
            self.candidates.append(chunk)


def _plan(
    store: ChunkStore, space: LockSpace, lock: ExclusiveLock, maps: Sequence[GcMap],
    grace: float, step: Step,
) -> GcPlan:  # fmt: skip
    refs = _walk(store, maps)
    step("walked", len(maps), len(maps))
    if refs.incomplete:
        raise _stop(refs.incomplete, [], len(maps))
    cutoff, recent = _cutoff(lock.start, grace, space.ended(), space.clock_slack)
    tally, unseen = _Tally(), set(refs.names)
    for chunk in space.chunks():
        tally.count(chunk, refs.names, unseen, cutoff)
    step("listed", tally.chunks, tally.chunks)
    if unseen:
        raise _stop([], _naming(store, maps, unseen), len(maps))
    tally.candidates.sort(key=lambda c: c.info.name)
    return GcPlan(
        store=repr(store), maps=len(maps), grace=grace, started=lock.start, cutoff=cutoff,
        sessions=recent, chunks=tally.chunks, stored_bytes=tally.stored_bytes,
        referenced=len(refs.names), unreferenced=tally.unreferenced,
        unreferenced_bytes=tally.unreferenced_bytes, candidates=tally.candidates,
    )  # fmt: skip


# -- deleting -----------------------------------------------------------------------------------


def _confirm(space: LockSpace, lock: ExclusiveLock) -> None:
    """Our lock must still be fresh and still in the store before more is deleted."""
    lock.check()
    if not any(e.lock_id == lock.lock_id for e in space.entries()):
        raise StoreLockedError(f"gc's lock {lock.lock_id} was removed: nothing more is deleted")


def _freed(space: LockSpace, lock: ExclusiveLock, plan: GcPlan) -> Iterator[int | None]:
    """Delete the candidates (``space.parallelism`` at a time), checking the lock between
    groups; what each delete freed, in order."""
    width, todo = max(1, space.parallelism), plan.candidates

    def delete(chunk: StoredChunk) -> int | None:
        return space.delete_if_older(chunk.info, plan.cutoff)

    with ThreadPoolExecutor(width, thread_name_prefix="pqselfenc-gc") as pool:
        run = pool.map if width > 1 else map  # one at a time: no thread hop per chunk
        for first in range(0, len(todo), width):
            if first % _CONFIRM_EVERY < width:
                _confirm(space, lock)
            else:
                lock.check()
            yield from run(delete, todo[first : first + width])


def _delete(space: LockSpace, lock: ExclusiveLock, plan: GcPlan, step: Step) -> None:
    plan.delete = True
    total = len(plan.candidates)
    for done, freed in enumerate(_freed(space, lock, plan), 1):
        if freed is None:
            plan.kept += 1
        else:
            plan.deleted += 1
            plan.freed_bytes += freed
        step("delete", done, total)
    plan.swept = space.sweep(plan.cutoff)
    step("swept", plan.swept, plan.swept)
    horizon = plan.started - max(plan.grace, SESSION_RETENTION)
    old = [s for s in space.ended() if s.end <= horizon]
    for s in old:
        space.forget(s.name)
    plan.pruned = len(old)
    step("pruned", plan.pruned, plan.pruned)


# -- the entry points ---------------------------------------------------------------------------


def _check_grace(grace: float) -> float:
    if isinstance(grace, bool) or not isinstance(grace, int | float) or not grace >= 0:
        raise ValueError("grace must be a number of seconds >= 0")
    return float(grace)


def _no_step(name: str, done: int, total: int) -> None:
    pass


def collect_garbage(
    store: ChunkStore,
    maps: Iterable[MapInput] | Callable[[], Iterable[MapInput]],
    *,
    delete: bool = False,
    grace: float = DEFAULT_GRACE,
    wait: float = 0.0,
    remove_stale_locks: Collection[str] = (),
    on_step: Step | None = None,
) -> GcPlan:
    """Plan (and with ``delete``, carry out) a gc of ``store`` keeping what ``maps``
    reference (module docstring: the invariant, and what the caller must give).

    ``maps`` is an iterable of ``GcMap`` (or bare ``DataMap``), or a callable returning one,
    called once the store is locked: e.g. one that reads a folder of map files then, so that
    every map finished before the lock is seen. At least one map is required (``ValueError``).
    Memory grows with what the maps reference and with the chunks to delete (about 150 and
    300 bytes each), not with the size of the store.
    ``grace`` (seconds, default 24 h) protects what was written or reused recently; ``wait``
    is how long to wait for writers to finish (our lock keeps new ones out meanwhile);
    ``remove_stale_locks`` names stale locks to remove first (an operator's decision: their
    processes must be gone). ``on_step(name, done, total)`` reports progress: ``locked``,
    ``walked``, ``listed``, ``planned``, ``delete`` (once per chunk), ``swept``, ``pruned``.

    Raises ``StoreLockedError`` when writers, another gc or a stale lock hold the store, and
    ``ChunkStoreError`` (nothing deleted) when a map names chunks the store does not have.
    """
    grace, step = _check_grace(grace), on_step or _no_step
    if callable(maps):
        load = maps
    else:
        given = _maps_given(maps)  # refuse no maps before touching the store
        load = lambda: given  # noqa: E731
    locks = _locks_of(store)
    removed = locks.remove_stale(remove_stale_locks) if remove_stale_locks else []
    with locks.exclusive(wait=wait) as lock:
        step("locked", 0, 0)
        plan = _plan(store, locks.space, lock, _maps_given(load()), grace, step)
        plan.removed_locks = removed
        step("planned", len(plan.candidates), plan.unreferenced)
        if delete:
            _delete(locks.space, lock, plan, step)
    return plan


def _maps_given(maps: Iterable[MapInput]) -> list[GcMap]:
    chosen = [_as_map(m, i) for i, m in enumerate(maps)]
    if not chosen:
        raise ValueError("gc needs at least one map: with none, every chunk looks unreferenced")
    return chosen


def store_report(store: ChunkStore, maps: Iterable[MapInput] = ()) -> StoreReport:
    """Chunks and bytes in ``store``; with ``maps``, what they reference and what is missing
    (nothing is locked or deleted: a snapshot that writers may change meanwhile); the locks
    held now and the writer sessions recorded (when the store has locks)."""
    given = [_as_map(m, i) for i, m in enumerate(maps)]
    locks = store.locks()
    refs = _walk(store, given)
    tally, unseen = _Tally(), set(refs.names)
    for chunk in _listing(store, locks):
        tally.count(chunk, refs.names, unseen, -math.inf)
    report = StoreReport(repr(store), tally.chunks, None if locks is None else tally.stored_bytes)
    if given:
        report.maps, report.referenced, report.missing = len(given), len(refs.names), len(unseen)
        report.unreferenced, report.incomplete = tally.unreferenced, refs.incomplete
    if locks is not None:
        report.locks = locks.inspect()
        report.sessions = len(locks.space.ended())
    return report


def _listing(store: ChunkStore, locks: StoreLocks | None) -> Iterator[StoredChunk]:
    """Every chunk with size and stamp (0 for both where the store keeps no stamps)."""
    if locks is not None:
        return locks.space.chunks()
    return (StoredChunk(info, 0, 0.0) for info in store)
