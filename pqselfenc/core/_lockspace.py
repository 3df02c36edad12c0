"""What a store provides so that writers and a gc can share it (``LockSpace``), and the small
values it trades in: lock entries, session records, stamped chunks. ``_locks.py`` builds the
locking protocol on top; each shareable store implements one ``LockSpace``.

Names: a lock object is ``shared-ID`` or ``exclusive-ID`` (ID: 16 lowercase hex digits); a
session record is ``START-ID`` (START: the session's start in whole milliseconds of the store's
clock, rounded down). Both live in the store's ``locks/`` area, records in ``locks/ended/``.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from pqselfenc.core._store import ChunkInfo

__all__ = [
    "LOCK_BODY_LIMIT",
    "EndedSession",
    "LockEntry",
    "LockSpace",
    "StoredChunk",
    "ended_name",
    "parse_ended",
    "parse_lock_name",
]

LOCK_BODY_LIMIT = 4096  # a lock body is ~300 bytes; anything larger is not ours
_LOCK_NAME = re.compile(r"(shared|exclusive)-([0-9a-f]{16})")
_ENDED_NAME = re.compile(r"([0-9]{1,17})-([0-9a-f]{16})")


@dataclass(frozen=True, slots=True)
class LockEntry:
    """A lock object as the store lists it: its name, and its stamp (store clock, seconds:
    when it was created or last refreshed)."""

    name: str
    stamp: float

    @property
    def kind(self) -> str:
        """``shared`` or ``exclusive``."""
        return self.name.partition("-")[0]

    @property
    def lock_id(self) -> str:
        """The 16 hex digits that name the lock."""
        return self.name.partition("-")[2]


@dataclass(frozen=True, slots=True)
class EndedSession:
    """The record a writer's session leaves: its name, start and end (store clock, seconds)."""

    name: str
    start: float
    end: float


@dataclass(frozen=True, slots=True)
class StoredChunk:
    """A chunk as gc sees it: its info, stored size and stamp (store clock, seconds: when it
    was written or last reused by a writer)."""

    info: ChunkInfo
    size: int
    stamp: float


def parse_lock_name(name: str) -> LockEntry | None:
    """Whether ``name`` is a lock object's name (``kind-16hex``); a stampless entry if so."""
    return LockEntry(name, 0.0) if _LOCK_NAME.fullmatch(name) else None


def ended_name(start: float, lock_id: str) -> str:
    """A session record's name: its start in whole milliseconds (rounded down) and the id."""
    return f"{max(0, int(start * 1000)):d}-{lock_id}"


def parse_ended(name: str, end: float) -> EndedSession | None:
    """The session a record named ``name`` with stamp ``end`` describes, if it is one."""
    match = _ENDED_NAME.fullmatch(name)
    return EndedSession(name, int(match.group(1)) / 1000, end) if match else None


class LockSpace(abc.ABC):
    """What a store provides so that writers and a gc can share it, all on the store's own
    clock: lock objects, session records, and chunk stamps. Times are seconds since the epoch
    as the store stamps objects (file mtimes, S3 ``LastModified``): never the local clock, so
    machines with skewed clocks agree. ``clock_slack`` is how far two stamps of one store may
    disagree about order (S3 stamps have whole seconds); ``parallelism`` how many deletes gc
    may run at once. Failures are ``ChunkStoreError``."""

    clock_slack: float = 0.0
    parallelism: int = 1

    @abc.abstractmethod
    def create(self, name: str, body: Callable[[float | None], bytes]) -> float | None:
        """Create lock object ``name`` (it does not exist: ``StoreLockedError`` if it does)
        durably, holding ``body(start)``, ``start`` being the store's clock at its creation;
        return ``start``. A space that cannot read its clock before writing returns None and
        stores ``body(None)``: the caller then takes the new lock's stamp from the listing
        that follows (until its first refresh, a lock's stamp is its creation time), tells it
        through ``started``, and the first refresh writes ``body(start)``."""

    def started(self, name: str, start: float) -> None:  # noqa: B027 (optional hook)
        """The start of lock ``name``, when ``create`` returned None (default: nothing to
        do)."""

    @abc.abstractmethod
    def entries(self) -> list[LockEntry]:
        """Every lock object now in the store (strongly consistent with ``create``)."""

    @abc.abstractmethod
    def read(self, name: str) -> bytes | None:
        """A lock's body (at most ``LOCK_BODY_LIMIT`` bytes), None if it is gone."""

    @abc.abstractmethod
    def refresh(self, name: str) -> bool:
        """Give lock ``name`` a new stamp; False (and no new object) if it is gone."""

    @abc.abstractmethod
    def remove(self, name: str) -> None:
        """Remove lock ``name``; a missing one is not an error."""

    @abc.abstractmethod
    def end(self, name: str, record: str) -> None:
        """Write the session record ``record`` (stamped now), durably, then remove lock
        ``name``. A missing lock still gets its record."""

    @abc.abstractmethod
    def ended(self) -> list[EndedSession]:
        """Every session record."""

    @abc.abstractmethod
    def forget(self, record: str) -> None:
        """Remove a session record."""

    @abc.abstractmethod
    def now(self) -> float:
        """The store's clock now (one round trip at most)."""

    @abc.abstractmethod
    def chunks(self) -> Iterator[StoredChunk]:
        """Every stored chunk with its size and stamp."""

    @abc.abstractmethod
    def delete_if_older(self, info: ChunkInfo, cutoff: float) -> int | None:
        """Delete the chunk if its stamp, read again now, is at or before ``cutoff``: the
        bytes freed, or None when it was kept (newer, or already gone)."""

    def sweep(self, cutoff: float) -> int:
        """Remove leftovers of interrupted writes stamped at or before ``cutoff`` (temp
        files); how many. Default: none to remove."""
        return 0


