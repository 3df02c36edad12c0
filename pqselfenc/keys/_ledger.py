"""The ledger of a key store: its lock, its authenticated metadata and its audit log, and the one
order in which a change to them is made.

A change to keystore.json is committed under the store lock in three steps: the next generation
is staged in ``keystore.json.staged`` (MACed), the audit event that records that ``generation``
is appended, then the staged file is renamed over keystore.json. If the event cannot be appended
the staged file is deleted and nothing changed; a crash after the event leaves a staged file
that ``recover`` (run when the store opens) renames into place, so a change is never lost and
never present without its event. ``recover`` also refuses keystore.json older than the last
generation the audit log records (a rollback to an older copy).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from filelock import FileLock

from pqselfenc.error import Error, IntegrityError, InvalidDataError
from pqselfenc.keys import _metadata as M
from pqselfenc.keys._metadata import KeyVersion, Metadata
from pqselfenc.keys.audit import AuditLog

__all__ = ["LOCK_NAME", "METADATA_NAME", "Clock", "Ledger", "store_lock"]

Clock = Callable[[], datetime]  # returns aware UTC datetimes
METADATA_NAME = "keystore.json"
LOCK_NAME = "keystore.lock"


def store_lock(directory: Path) -> FileLock:
    """The file lock every change and every audit append in ``directory`` holds.

    Re-entrant within one instance only: one open store makes one, and its ledger holds it.
    """
    return FileLock(directory / LOCK_NAME)


class Ledger:
    """The store lock, keystore.json (read with its MAC checked, committed in order) and the
    audit log: everything about a store that is not a secret, and the record of what happened.

    ``clock`` is the store's time (audit events, key and recipient times)."""

    def __init__(
        self, directory: Path, *, lock: FileLock, mac_key: bytes, audit: AuditLog, clock: Clock
    ) -> None:
        self.directory, self.lock, self.audit, self.clock = directory, lock, audit, clock
        self._mac_key = mac_key
        self._path = directory / METADATA_NAME
        self._staged = directory / M.STAGED_NAME

    def __repr__(self) -> str:
        return f"Ledger({str(self.directory)!r})"

    # -- reading ---------------------------------------------------------------------------

    def read(self) -> Metadata:
        """The metadata, its MAC checked (``IntegrityError`` if it was changed behind our back)."""
        return M.read_metadata(self._path, self._mac_key)

    def authenticate(self, raw: bytes) -> Metadata:
        """keystore.json's bytes ``raw``, read before the store was unlocked, MAC checked now."""
        return M.from_json(raw, self._mac_key)

    @contextmanager
    def locked(self) -> Iterator[Metadata]:
        """Hold the store lock; yields the metadata read under it (what ``commit`` builds on)."""
        with self.lock:
            yield self.read()

    # -- writing ---------------------------------------------------------------------------

    def commit(
        self,
        meta: Metadata,
        action: str,
        name: str | None,
        version: KeyVersion | None = None,
        **fields: Any,
    ) -> Metadata:
        """Write ``meta`` (read under the lock we hold) as the next generation, with its event.

        Staged first, then the audit event (``record`` with the new ``generation``) is appended
        (``AuditError``: the staged file is dropped, nothing changes), then the staged file
        replaces keystore.json. Returns what was written.
        """
        written = M.write_metadata(self._staged, meta, self._mac_key)
        try:
            self.record(action, name, version, generation=written.generation, **fields)
        except BaseException:
            self._staged.unlink(missing_ok=True)
            raise
        M.commit_staged(self._staged, self._path)
        return written

    def record(
        self, action: str, name: str | None = None, version: KeyVersion | None = None,
        **fields: Any,
    ) -> None:  # fmt: skip
        """Append one audit event under the store lock; ``version`` adds its id, number and
        fingerprint. ``AuditError`` if it cannot be appended (the operation then fails)."""
        if version is not None:
            fields = {"key_id": version.key_id, "version": version.version,
                      "fingerprint": version.fingerprint, **fields}  # fmt: skip
        with self.lock:
            self.audit.record(action, name=name, **fields)

    def record_failure(self, action: str, exc: Error, **fields: Any) -> None:
        """Append the event of a failed ``action`` (its error class as detail) under the lock."""
        with self.lock:
            self.audit.record(action, outcome="failure", detail=type(exc).__name__, **fields)

    def checkpoint(self) -> None:
        """Append a signed audit checkpoint if events were written since the last one."""
        with self.lock:
            self.audit.checkpoint_if_needed()

    # -- opening (the caller holds the lock) -------------------------------------------------

    def create(self, meta: Metadata, **fields: Any) -> Metadata:
        """Write the first keystore.json (generation 1), then record ``store-create`` with it."""
        written = M.write_metadata(self._path, meta, self._mac_key)
        self.audit.recover_torn_tail()
        self.record("store-create", generation=written.generation, **fields)
        return written

    def recover(self, meta: Metadata) -> Metadata:
        """Settle what a crash left, and catch a rollback, before the store is used.

        A torn audit tail is moved aside. A staged next generation whose event landed is
        renamed into place (and returned); any other staged file is deleted. keystore.json
        (``meta``) below the last generation the audit log records is refused with
        ``IntegrityError``, nothing written.
        """
        self.audit.recover_torn_tail()
        recorded = self.audit.last_generation()
        staged = self._read_staged()
        if (
            staged is not None
            and recorded is not None
            and staged.generation == recorded == meta.generation + 1
            and staged.store_id == meta.store_id
        ):
            M.commit_staged(self._staged, self._path)
            return staged
        if recorded is not None and meta.generation < recorded:
            raise IntegrityError(
                f"keystore.json generation {meta.generation} is older than generation {recorded} "
                "recorded in the audit log: rolled back? (restore the newest keystore.json, or "
                "the whole store directory from one backup)"
            )
        self._staged.unlink(missing_ok=True)
        return meta

    def _read_staged(self) -> Metadata | None:
        """The staged file if this store wrote it (MAC checked); None if absent or not ours."""
        if not self._staged.exists():
            return None
        try:
            return M.read_metadata(self._staged, self._mac_key)
        except (IntegrityError, InvalidDataError):
            return None  # not a file this store wrote: never trusted, deleted if safe
