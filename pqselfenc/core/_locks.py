"""Store locks: how writers and a garbage collector share one chunk store (docs/stores.md,
"Sharing a store and garbage collection").

Writers hold a *shared* lock while they put chunks (``ChunkStore.batch`` takes it, joined
re-entrantly per store object; ``ChunkStore.writing`` extends it over several files and their
maps); gc holds an *exclusive* one. A lock is an object in the store (``locks/shared-ID``,
``locks/exclusive-ID``), JSON naming its holder and the store-clock time it was created, kept
fresh by a refresher thread. Taking one is create-then-list: both sides write before they
read, so of a writer and a gc that start together at least one sees the other and backs off.

- A writer backs off from any exclusive lock (waiting up to ``LockPolicy.wait``), except one
  whose process is provably dead (same host, boot and pid namespace, process gone).
- gc keeps its lock while live writers drain (so a busy store cannot starve it; new writers
  wait for it), backs off from another gc, and refuses to run past a stale lock: one not
  refreshed for ``LockPolicy.stale``, or a dead process's. Stale locks are reported, never
  broken silently; ``remove_stale`` removes named ones on an operator's word.
- A writer's lock, when it ends, leaves a *session record* ``locks/ended/START-ID`` (START in
  milliseconds of the store's clock; the record's own timestamp is the end). gc never deletes
  a chunk touched after the start of a session that ended within its grace period
  (``pqselfenc.core.gc`` states the invariant), so a long session is protected as a whole.
- A holder whose lock was not refreshed in time (``LockPolicy.trusted``) or was removed treats
  it as lost: ``check`` raises, so no map is written over chunks a gc may have collected.

The store-side operations are a ``LockSpace`` (``_lockspace.py``; directory, S3 and memory
stores each have one); ``StoreLocks`` is the coordinator a store object owns and returns from
``ChunkStore.locks``.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
import random
import secrets
import threading
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Any

from pqselfenc.core._lockspace import LockEntry, LockSpace, ended_name
from pqselfenc.core._owner import identity, is_dead
from pqselfenc.error import ChunkStoreError, StoreLockedError

__all__ = ["EXCLUSIVE", "LOCK_FORMAT", "SHARED", "UNKNOWN_START", "ExclusiveLock", "LockInfo",
           "LockPolicy", "StoreLocks"]  # fmt: skip

LOCK_FORMAT = "pqselfenc-lock/1"
UNKNOWN_START = 0.0  # the start of a session whose lock body was lost: before every chunk
SHARED, EXCLUSIVE = "shared", "exclusive"
_MAX_PAUSE = 2.0  # seconds between two tries of a waiting writer or gc, at most
_INTERRUPT_CLEANUP = 0.5  # seconds an interrupted process spends removing its lock, at most


def _boottime() -> float:
    """Seconds on a clock that keeps counting through suspend (a timer that stops during
    standby would trust a lock the rest of the world already sees as stale)."""
    clock = getattr(time, "CLOCK_BOOTTIME", None)
    return time.clock_gettime(clock) if clock is not None else time.monotonic()


@dataclass(frozen=True)
class LockPolicy:
    """Timing of store locks, in seconds: a held lock is refreshed every ``refresh``; one not
    refreshed for ``stale`` is stale; a writer waits up to ``wait`` for a gc to finish. A
    holder stops trusting its own lock ``1.5 * refresh`` before others could see it stale.
    Every process sharing a store must use the same ``stale`` (and a ``refresh`` well below)."""

    refresh: float = 300.0
    stale: float = 1800.0
    wait: float = 300.0

    def __post_init__(self) -> None:
        if not (self.refresh > 0 and self.stale >= 3 * self.refresh):
            raise ValueError("lock timing needs refresh > 0 and stale >= 3 * refresh")
        if not self.wait >= 0:
            raise ValueError("wait must be >= 0")

    @property
    def trusted(self) -> float:
        """How long after its last successful refresh a holder still trusts its lock."""
        return self.stale - 1.5 * self.refresh


@dataclass(frozen=True)
class LockInfo:
    """A lock, described for people and for decisions: its kind, id, age (seconds since its
    stamp), the holder its body names (None where it does not parse), whether it is ``stale``
    (too old, or ``dead``: its process is provably gone) and the session ``start`` it records."""

    kind: str
    lock_id: str
    age: float
    stale: bool
    dead: bool
    start: float
    holder: dict[str, Any] | None

    def describe(self) -> str:
        """One line: ``exclusive lock 0123456789abcdef (pid 7 on host h, refreshed 3 s ago)``."""
        who = "holder unknown: the lock does not parse"
        if self.holder is not None:
            who = f"pid {self.holder.get('pid')} on host {self.holder.get('host')}"
        state = "process gone" if self.dead else f"refreshed {_ago(self.age)} ago"
        label = "stale " if self.stale else ""
        return f"{label}{self.kind} lock {self.lock_id} ({who}, {state})"

    def as_dict(self) -> dict[str, Any]:
        """The fields, for ``--json``."""
        holder = self.holder or {}
        keep = ("host", "pid", "user", "created")
        return {"kind": self.kind, "id": self.lock_id, "age": round(self.age, 1),
                "stale": self.stale, "dead": self.dead,
                **{k: holder.get(k) for k in keep}}  # fmt: skip


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds >= 2 * size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


def _body(kind: str, ident: dict[str, Any], start: float | None) -> bytes:
    doc = {"format": LOCK_FORMAT, "kind": kind, **ident, "start": start}
    return json.dumps(doc, sort_keys=True).encode()


def _parse(raw: bytes | None) -> dict[str, Any] | None:
    if not raw:
        return None
    try:  # UTF-8, strictly: json.loads(bytes) would guess UTF-16/32 and skip a byte-order mark
        doc = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError):  # not UTF-8, not JSON; "[[[[..." under the body limit
        return None
    return doc if isinstance(doc, dict) and doc.get("format") == LOCK_FORMAT else None


class _Held:
    """One lock this process holds, and the thread that refreshes it."""

    def __init__(
        self, space: LockSpace, policy: LockPolicy, name: str, start: float, sent: float
    ) -> None:
        self.space, self.policy, self.name, self.start = space, policy, name, start
        self.last_ok = sent  # taken before the lock was created: trust is never overstated
        self.pid = os.getpid()  # a forked child does not hold its parent's lock
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pqselfenc-lock", daemon=True)
        self._thread.start()

    @property
    def lock_id(self) -> str:
        return self.name.partition("-")[2]

    def _run(self) -> None:
        while not self._stop.wait(self.policy.refresh):
            sent = _boottime()
            try:
                alive = self.space.refresh(self.name)
            except ChunkStoreError:
                continue  # try again next period; trust decays meanwhile
            if not alive:
                self.lost = True
                return
            self.last_ok = sent

    def healthy(self) -> bool:
        return not self.lost and _boottime() - self.last_ok < self.policy.trusted

    def check(self, doing: str) -> None:
        if not self.healthy():
            why = "was removed" if self.lost else "could not be refreshed in time"
            raise StoreLockedError(
                f"our store lock {self.lock_id} {why}: a gc may have run, so {doing}"
            )

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()


class ExclusiveLock:
    """gc's hold on a store: ``start`` (store clock) is when it was taken; ``check`` raises
    ``StoreLockedError`` if it was lost (not refreshed in time, or removed)."""

    def __init__(self, held: _Held) -> None:
        self._held = held

    @property
    def start(self) -> float:
        """When the lock was taken, on the store's clock."""
        return self._held.start

    @property
    def lock_id(self) -> str:
        """The lock's id."""
        return self._held.lock_id

    def check(self) -> None:
        """Raise unless the lock is still ours: refreshed in time, never removed."""
        self._held.check("nothing more is deleted")


class StoreLocks:
    """A store object's locks: writers' ``shared`` (re-entrant: every batch and ``writing``
    block of one store object shares one lock object) and gc's ``exclusive``, over a
    ``LockSpace``. ``sleep`` and ``rng`` (waiting with jitter) are injectable."""

    def __init__(
        self,
        space: LockSpace,
        policy: LockPolicy | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self.space = space
        self.policy = policy if policy is not None else LockPolicy()
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()
        self._mutex = threading.Lock()  # guards _shared and _count
        self._gate = threading.Lock()  # one acquisition at a time
        self._shared: _Held | None = None
        self._count = 0

    def __repr__(self) -> str:
        return f"StoreLocks({self.space!r})"

    # -- writers -------------------------------------------------------------------------------

    @property
    def session_start(self) -> float | None:
        """The store-clock start of the shared lock held now, None if none is: a chunk
        stamped before it must be refreshed when a writer reuses it."""
        held = self._shared
        return held.start if held is not None and held.pid == os.getpid() else None

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        """Hold (or join) this store object's shared lock for the block. On a clean exit the
        lock must still be ours (``StoreLockedError`` otherwise): only then may a map naming
        what was written in the block be written."""
        held = self._join()
        try:
            yield
            held.check("no map may name the chunks written under it")
        except BaseException as exc:
            self._leave(interrupted=_interrupt(exc))
            raise
        self._leave()

    def check(self) -> None:
        """Raise ``StoreLockedError`` if the shared lock held now was lost."""
        held = self._shared
        if held is not None:
            held.check("no map may name the chunks written under it")

    def _join(self) -> _Held:
        with self._gate:
            with self._mutex:
                if self._shared is not None and self._shared.pid != os.getpid():
                    self._shared, self._count = None, 0  # forked: that lock is the parent's
                if self._shared is not None:
                    self._shared.check("no new writing may start under it")
                    self._count += 1
                    return self._shared
            held = self._take_shared()
            try:
                with self._mutex:
                    self._shared, self._count = held, 1
            except BaseException as exc:  # interrupted before anyone could write under it
                self._release(held, interrupted=_interrupt(exc))
                raise
            return held

    def _leave(self, *, interrupted: bool = False) -> None:
        with self._mutex:
            self._count -= 1
            if self._count:
                return
            held, self._shared = self._shared, None
        assert held is not None
        held.stop()
        # Record the session, then drop the lock. If that fails (or an interrupted process
        # gives up on a stalled store) the lock stays and goes stale: gc then refuses and
        # reports it, which is safe.
        _quietly(functools.partial(self.space.end, held.name,
                                   ended_name(held.start, held.lock_id)), interrupted)  # fmt: skip

    def _take_shared(self) -> _Held:
        deadline = _boottime() + self.policy.wait
        for attempt in itertools.count():
            name, start, sent, others = self._create(SHARED)
            with self._discarded_on_error(name):
                infos = self._infos([e for e in others if e.kind != SHARED], start)
                blocking = [i for i in infos if not i.dead]
                if not blocking:
                    return _Held(self.space, self.policy, name, start, sent)
            self._remove(name)  # nothing written under it: no session to record
            if any(i.stale for i in blocking) or _boottime() >= deadline:
                raise StoreLockedError(_blocked("writing", blocking))
            self._pause(attempt, deadline)
        raise AssertionError("unreachable")

    # -- gc ------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def exclusive(self, *, wait: float = 0.0) -> Iterator[ExclusiveLock]:
        """Hold the store alone for the block (gc). Live writers are waited for, up to
        ``wait`` seconds, while our lock keeps new ones out; another gc or a stale lock is
        ``StoreLockedError`` (a stale one at once: waiting cannot end it)."""
        if self.session_start is not None:
            raise StoreLockedError("this store object holds a writer's lock: gc cannot run")
        held = self._take_exclusive(wait)
        try:
            yield ExclusiveLock(held)
        except BaseException as exc:
            self._release(held, interrupted=_interrupt(exc))
            raise
        self._release(held)

    def _take_exclusive(self, wait: float) -> _Held:
        deadline = _boottime() + wait
        for attempt in itertools.count():
            name, start, sent, others = self._create(EXCLUSIVE)
            with self._discarded_on_error(name):
                held = _Held(self.space, self.policy, name, start, sent)
            try:
                if self._drained(held, others, deadline):
                    return held
            except BaseException as exc:
                self._release(held, interrupted=_interrupt(exc))
                raise
            self._release(held)  # another gc: both back off, with jitter
            if _boottime() >= deadline:
                raise StoreLockedError(_blocked("gc", self._infos(others, start)))
            self._pause(attempt, deadline)
        raise AssertionError("unreachable")

    def _drained(self, held: _Held, others: list[LockEntry], deadline: float) -> bool:
        """Wait, holding ``held``, until no other lock is left (True), or until another gc's
        lock shows we should back off (False). Stale locks and timeouts raise."""
        for attempt in itertools.count():
            infos = self._infos(others, held.start)
            stale = [i for i in infos if i.stale]
            if stale:
                raise StoreLockedError(_stale(stale))
            if not infos:
                return True
            if any(i.kind != SHARED for i in infos):
                return False
            if _boottime() >= deadline:
                raise StoreLockedError(_blocked("gc", infos))
            self._pause(attempt, deadline)
            held.check("gc stops waiting")
            others = [e for e in self.space.entries() if e.name != held.name]
        raise AssertionError("unreachable")

    def _release(self, held: _Held, *, interrupted: bool = False) -> None:
        held.stop()
        self._remove(held.name, interrupted=interrupted)

    # -- reporting and operator actions --------------------------------------------------------

    def inspect(self) -> list[LockInfo]:
        """Every lock in the store now, described (stale ones flagged)."""
        return self._infos(self.space.entries(), self.space.now())

    def remove_stale(self, lock_ids: Collection[str]) -> list[LockInfo]:
        """Remove the named locks, each of which must be stale now (``StoreLockedError``
        otherwise, and nothing is removed). A writer's lock leaves a session record ending
        now, so whatever its process wrote stays protected for gc's grace period."""
        wanted = set(lock_ids)
        infos = [i for i in self.inspect() if i.lock_id in wanted]
        unknown = wanted - {i.lock_id for i in infos}
        if unknown:
            raise StoreLockedError(f"no lock {sorted(unknown)[0]} in the store")
        live = [i for i in infos if not i.stale]
        if live:
            raise StoreLockedError(f"{live[0].describe()} is not stale: it was not removed")
        for info in infos:
            name = f"{info.kind}-{info.lock_id}"
            if info.kind == SHARED:
                self.space.end(name, ended_name(info.start, info.lock_id))
            else:
                self.space.remove(name)
        return infos

    # -- helpers -------------------------------------------------------------------------------

    def _create(self, kind: str) -> tuple[str, float, float, list[LockEntry]]:
        """Create our lock, then list: its name, its start (store clock), when we sent it
        (``_boottime``), and every other lock."""
        name = f"{kind}-{secrets.token_hex(8)}"
        ident = identity()
        sent = _boottime()
        with self._discarded_on_error(name):  # an interrupt mid-way leaves no lock behind
            start = self.space.create(name, lambda at: _body(kind, ident, at))
            listed = self.space.entries()
            if start is None:
                mine = [e.stamp for e in listed if e.name == name]
                if not mine:
                    raise StoreLockedError(
                        f"lock {name} is not listed right after its "
                        "creation: the listing is not consistent"
                    )
                start = mine[0]
                self.space.started(name, start)
        return name, start, sent, [e for e in listed if e.name != name]

    @contextlib.contextmanager
    def _discarded_on_error(self, name: str) -> Iterator[None]:
        """Remove our lock ``name`` if the block fails or is interrupted (Ctrl-C, SIGTERM):
        a lock taken for nothing would otherwise go stale and stop gc until ``store unlock``."""
        try:
            yield
        except BaseException as exc:
            self._remove(name, interrupted=_interrupt(exc))
            raise

    def _infos(self, entries: list[LockEntry], now: float) -> list[LockInfo]:
        found = (self._info(e, now) for e in entries)
        return [i for i in found if i is not None]

    def _info(self, entry: LockEntry, now: float) -> LockInfo | None:
        raw = self.space.read(entry.name)
        if raw is None:
            return None  # released since the listing
        body = _parse(raw)
        dead = body is not None and is_dead(body)
        age = now - entry.stamp
        return LockInfo(entry.kind, entry.lock_id, age, dead or age > self.policy.stale, dead,
                        _start_of(body, entry.stamp), body)  # fmt: skip

    def _remove(self, name: str, *, interrupted: bool = False) -> None:
        """Remove our lock ``name`` (a failure leaves it to go stale, which is safe). On an
        interrupt the user is not kept waiting on a stalled store: the removal gets
        ``_INTERRUPT_CLEANUP`` seconds on a daemon thread, then the lock is left to go stale."""
        _quietly(functools.partial(self.space.remove, name), interrupted)

    def _pause(self, attempt: int, deadline: float) -> None:
        cap = min(_MAX_PAUSE, 0.1 * 2.0**attempt)
        left = max(0.0, deadline - _boottime())
        self._sleep(min(left, cap / 2 + self._rng.uniform(0, cap / 2)))


def _quietly(call: Callable[[], object], interrupted: bool) -> None:
    """``call()``, a store request whose failure is safe (``ChunkStoreError`` ignored). After an
    interrupt it gets ``_INTERRUPT_CLEANUP`` seconds on a daemon thread, no more: a user who
    pressed Ctrl-C is not kept waiting on a stalled store."""

    def run() -> None:
        with contextlib.suppress(ChunkStoreError):
            call()

    if not interrupted:
        run()
        return
    worker = threading.Thread(target=run, daemon=True, name="pqselfenc-lock-cleanup")
    worker.start()
    worker.join(_INTERRUPT_CLEANUP)


def _interrupt(exc: BaseException) -> bool:
    """Whether ``exc`` ends the process rather than reports a failure (Ctrl-C, SIGTERM)."""
    return not isinstance(exc, Exception)


def _start_of(body: dict[str, Any] | None, stamp: float) -> float:
    """When a lock's session started, from its body. A body that parses without a start was
    written before the store stamped it (S3) by a writer that died before writing the start
    in, so before any refresh: the stamp is its creation time. A body that does not parse
    (lost in a crash, or altered) leaves the start unknown, while a refresh moves the stamp:
    ``UNKNOWN_START`` then, so the session record it leaves protects every chunk for the grace
    period after its removal."""
    if body is None:
        return UNKNOWN_START
    start = body.get("start")
    if not isinstance(start, int | float) or isinstance(start, bool):
        return stamp
    return float(start)


def _blocked(who: str, infos: list[LockInfo]) -> str:
    if not infos:
        return f"the store stayed locked ({who} gave up)"
    first = infos[0]
    more = f" and {len(infos) - 1} more" if len(infos) > 1 else ""
    if any(i.stale for i in infos):
        return _stale([i for i in infos if i.stale])
    return f"{who} cannot start: the store is held by {first.describe()}{more}"


def _stale(infos: list[LockInfo]) -> str:
    ids = ", ".join(i.lock_id for i in infos)
    return (
        f"{infos[0].describe()} blocks the store{' (and more)' if len(infos) > 1 else ''}: "
        f"if no process uses it any more, remove it (pqselfenc store unlock {ids})"
    )
