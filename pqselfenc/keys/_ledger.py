"""The ledger of a key store: its lock, its authenticated metadata and its audit log, and the one
order in which a change to them is made.

A change to keystore.json is committed under the store lock in three steps: the next generation
is staged in ``keystore.json.staged`` (MACed), the audit event that records that ``generation``
and the staged file's own MAC (``meta_mac``) is appended (itself MACed), then the staged file is
renamed over keystore.json. If the event cannot be appended the staged file is deleted and
nothing changed; a crash after the event leaves a staged file that ``recover`` (run when the
store opens) renames into place, so a change is never lost and never present without its event.
``recover`` binds keystore.json to the last commit event (same generation, same MAC): a
rolled-back keystore.json, a forged event and a log cut below the last commit are refused.

Rollback anchor (``_anchor.py``: {generation, audit seq, audit hash} in a token data object or
an OS keyring entry, for the pkcs11 and keyring backends): ``_settled`` writes it after every
commit and every checkpoint (``head()`` is the new audit head). A write the holder cannot take
(token away, keyring locked) leaves the commit standing: it is logged and kept in
``anchor_problem``, and the next commit, checkpoint or open catches up. A write that would move
the anchor back, or whose log lacks the anchored line (two copies of the folder in use at once),
is a rollback or a fork of the folder while it was open: ``IntegrityError``, raised.
``recover`` checks the folder against it at open (``RollbackError``, nothing written: the
generation before anything else, then the audit head and the hash at the anchored seq of the log
read as if its torn tail were moved aside, before that tail is moved), refuses an anchored
store whose anchor is gone, anchors a keyring store of the release before (``anchor-start``),
resets the anchor when asked (``anchor-reset``, audited), and catches up an anchor left behind
(which also covers a checkpoint the torn-tail ``audit-recover`` event triggered). With the file
backend there is no anchor: a log line says so at creation.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from filelock import FileLock

from pqselfenc.error import AuditError, Error, IntegrityError, InvalidDataError, RollbackError
from pqselfenc.keys import _anchor
from pqselfenc.keys import _metadata as M
from pqselfenc.keys._anchor import GENESIS, Anchor, AnchorHolder
from pqselfenc.keys._audit_format import settle
from pqselfenc.keys._metadata import KeyVersion, Metadata
from pqselfenc.keys.audit import AuditLog

__all__ = ["LOCK_NAME", "METADATA_NAME", "Clock", "Ledger", "store_lock"]

Clock = Callable[[], datetime]  # returns aware UTC datetimes
METADATA_NAME = "keystore.json"
LOCK_NAME = "keystore.lock"
_LOG = logging.getLogger("pqselfenc")
NO_ANCHOR = ("nothing outside the key store folder records its latest state (file backend): a "
             "rollback of the whole folder is not detected")  # fmt: skip


def store_lock(directory: Path) -> FileLock:
    """The file lock every change and every audit append in ``directory`` holds.

    Re-entrant within one instance only: one open store makes one, and its ledger holds it.
    """
    return FileLock(directory / LOCK_NAME)


class Ledger:
    """The store lock, keystore.json (read with its MAC checked, committed in order) and the
    audit log: everything about a store that is not a secret, and the record of what happened.

    ``clock`` is the store's time (audit events, key and recipient times); ``anchor`` holds the
    rollback anchor (None: the file backend, no anchor)."""

    def __init__(
        self, directory: Path, *, lock: FileLock, mac_key: bytes, audit: AuditLog, clock: Clock,
        anchor: AnchorHolder | None = None,
    ) -> None:  # fmt: skip
        self.directory, self.lock, self.audit, self.clock = directory, lock, audit, clock
        self._mac_key = mac_key
        self._path = directory / METADATA_NAME
        self._staged = directory / M.STAGED_NAME
        self._anchor = anchor
        self.anchor_problem: str | None = None  # why the last anchor write failed, if it did
        self._seen = 0  # the highest keystore.json generation read or written by this ledger

    def __repr__(self) -> str:
        return f"Ledger({str(self.directory)!r})"

    # -- reading ---------------------------------------------------------------------------

    def read(self) -> Metadata:
        """The metadata, its MAC checked (``IntegrityError`` if it was changed behind our back);
        ``RollbackError`` if its generation is below one this ledger has seen (the folder was
        put back while the store was open: caught at the next read, with any backend)."""
        meta = M.read_metadata(self._path, self._mac_key)
        if meta.generation < self._seen:
            raise RollbackError(
                f"keystore.json went back from generation {self._seen} to {meta.generation} "
                f"while the store was open: the folder was rolled back. To recover: "
                f"{_anchor.RESET_HINT}"
            )
        self._seen = meta.generation
        return meta

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
            self._log(action, name, version, generation=written.generation,
                      meta_mac=written.mac, **fields)  # fmt: skip
        except BaseException:
            self._staged.unlink(missing_ok=True)
            raise
        M.commit_staged(self._staged, self._path)
        self._seen = max(self._seen, written.generation)
        self._settled(written)
        return written

    def record(
        self, action: str, name: str | None = None, version: KeyVersion | None = None,
        **fields: Any,
    ) -> None:  # fmt: skip
        """Append one audit event under the store lock; ``version`` adds its id, number and
        fingerprint. ``AuditError`` if it cannot be appended (the operation then fails)."""
        with self.lock:
            if self._log(action, name, version, **fields):
                self._settled(None)

    def record_failure(self, action: str, exc: Error, name: str | None = None,
                       version: KeyVersion | None = None, **fields: Any) -> None:  # fmt: skip
        """Append the event of a failed ``action`` (its error class as detail) under the lock."""
        with self.lock:
            if self._log(action, name, version, outcome="failure", detail=type(exc).__name__,
                         **fields):  # fmt: skip
                self._settled(None)

    def checkpoint(self) -> None:
        """Append a signed audit checkpoint if events were written since the last one."""
        with self.lock:
            if self.audit.checkpoint_if_needed() is not None:
                self._settled(None)

    def _log(self, action: str, name: str | None, version: KeyVersion | None,
             outcome: str = "success", **fields: Any) -> bool:  # fmt: skip
        """Every append goes through here (under the lock): one event, and the checkpoint the
        log appends after it when one is due; True if a checkpoint followed."""
        if version is not None:
            fields = {"key_id": version.key_id, "version": version.version,
                      "fingerprint": version.fingerprint, **fields}  # fmt: skip
        seq = self.audit.record(action, outcome=outcome, name=name, **fields)
        return self.audit.head()[0] > seq

    def _settled(self, written: Metadata | None) -> None:
        """The store reached a state worth anchoring: a metadata commit (``written``, renamed
        into place; a checkpoint its event triggered is included) or a checkpoint after an event
        or on close. The anchor records ``written.generation`` (or the current one) and
        ``self.audit.head()``. Nothing to do without an anchored backend."""
        if self._anchor is None:
            return
        generation = (written or self.read()).generation
        self._put_anchor(Anchor(generation, *self.audit.head()))

    def _put_anchor(self, anchor: Anchor) -> None:
        """Write ``anchor`` after checking that this log still holds the anchored line (two
        copies of one folder in use at once fork the log: the second is refused here, with
        ``RollbackError``, as a move back is by the holder). A holder that cannot be read or
        written is reported, never fatal: the commit stands and the next one catches up."""
        assert self._anchor is not None
        try:
            current = self._anchor.read_anchor()
            if current is not None:
                _anchor.check(current, anchor.generation, anchor.audit_seq, self.audit.hash_at,
                              self._anchor.anchor_location)  # fmt: skip
            self._anchor.write_anchor(anchor)
        except IntegrityError:
            raise
        except Error as exc:
            self.anchor_problem = (f"the rollback anchor in {self._anchor.anchor_location} could "
                                   f"not be updated ({type(exc).__name__}: {exc}); it is behind "
                                   "this folder until the next change or open")  # fmt: skip
            _LOG.warning("%s", self.anchor_problem)
            return
        self.anchor_problem = None

    def anchor_location(self) -> str | None:
        """Where this store's rollback anchor is kept (None: nowhere, the file backend)."""
        return None if self._anchor is None else self._anchor.anchor_location

    def read_anchor(self) -> Anchor | None:
        """The rollback anchor as its holder has it now (None without one)."""
        return None if self._anchor is None else self._anchor.read_anchor()

    # -- opening (the caller holds the lock) -------------------------------------------------

    def create(self, meta: Metadata, **fields: Any) -> Metadata:
        """Write the first keystore.json (generation 1, audit MACs from seq 1), then record
        ``store-create`` with it (the caller made sure no audit log is there). An anchored store
        writes the ``GENESIS`` anchor first (a holder that cannot take it stops the creation
        before anything is in the folder); the file backend logs that it has none."""
        if self._anchor is None:
            _LOG.warning("new key store %s: %s", self.directory, NO_ANCHOR)
        else:
            self._anchor.write_anchor(GENESIS)
        self.audit.require_macs_from(1)
        written = M.write_metadata(self._path, replace(meta, audit_mac_from=1), self._mac_key)
        self._log("store-create", None, None, generation=written.generation,
                  meta_mac=written.mac, **fields)  # fmt: skip
        self._settled(written)
        return written

    def recover(self, meta: Metadata, *, reset_anchor: bool = False, **create: Any) -> Metadata:
        """Settle what a crash left, catch a rollback, upgrade a store of the release before.

        ``meta`` is keystore.json, MAC-checked. In order, reading only: MACs are required from
        the seq the metadata names; the rollback anchor is read and a generation below it
        refused; the log is read as if its torn tail were moved aside (``without_torn_tail``):
        its head line must be authentic, and its last commit event must have committed exactly
        keystore.json (or the staged file): else ``IntegrityError``; then that settled folder is
        checked against the anchor (``RollbackError``), unless ``reset_anchor``. Nothing is
        written before these checks pass (docs/format.md 4.8). Then: the torn tail is moved
        aside (an ``audit-recover`` event), the staged file renamed into place (any other staged
        file is deleted). A store whose creation stopped before its first event gets it
        (``create`` holds its fields). A format 1 store is upgraded (``audit-upgrade``). Then
        the anchor is started, reset or caught up (``_anchored``).
        """
        self.audit.require_macs_from(meta.audit_mac_from)
        anchor = self._anchor_at_open(meta, reset_anchor)
        try:
            settled = self.audit.without_torn_tail()
            settled.head()  # AuditError unless the last whole line is authentic
            record = settled.last_commit()
            staged = self._read_staged()
            current = settle(record, meta, staged)
        except IntegrityError as exc:  # AuditError too: say where the log first goes wrong
            raise self._diagnosed(exc) from exc
        target = meta if current else staged
        assert target is not None
        if not reset_anchor:
            settled.require_macs_from(target.audit_mac_from)
            self._check_anchor(anchor, target, settled)  # RollbackError: nothing written
        self.audit.recover_torn_tail()  # the first write
        if not current:
            assert staged is not None
            M.commit_staged(self._staged, self._path)
            meta = staged
            self.audit.require_macs_from(meta.audit_mac_from)
        self._staged.unlink(missing_ok=True)
        if record is None and meta.audit_mac_from is not None:  # creation stopped before it
            self._log("store-create", None, None, generation=meta.generation,
                      meta_mac=meta.mac, **create)  # fmt: skip
            self._settled(meta)
        meta = meta if meta.audit_mac_from is not None else self._upgrade(meta)
        return self._anchored(meta, anchor, reset_anchor)

    # -- the rollback anchor at open ---------------------------------------------------------

    def _anchor_at_open(self, meta: Metadata, reset: bool) -> Anchor | None:
        """The anchor, read before anything is written; ``RollbackError`` at once for a
        keystore.json below its generation. With ``reset`` an unreadable anchor is ignored."""
        if self._anchor is None:
            return None
        try:
            anchor = self._anchor.read_anchor()
        except InvalidDataError:
            if reset:
                return None
            raise
        if anchor is not None and not reset and meta.generation < anchor.generation:
            _anchor.check(anchor, meta.generation, anchor.audit_seq, self.audit.hash_at,
                          self._anchor.anchor_location)  # fmt: skip
        return anchor

    def check_anchor(self) -> None:
        """``RollbackError`` unless the folder as it is now (keystore.json, and the audit log
        without a torn tail) is at or after the anchor its holder has now: all three read
        together under the store lock, nothing written (``audit verify`` and ``audit export``
        ask this). ``AuditError`` if the log cannot be compared (an unauthentic line)."""
        if self._anchor is None:
            return
        with self.lock:
            self._check_anchor(self.read_anchor(), self.read(), self.audit.without_torn_tail())

    def _check_anchor(self, anchor: Anchor | None, meta: Metadata, log: AuditLog) -> None:
        """``RollbackError`` unless the folder at ``meta`` with audit ``log`` is at or after
        ``anchor``, or the anchor of an anchored store is gone."""
        if self._anchor is None:
            return
        where = self._anchor.anchor_location
        if anchor is None:
            if meta.anchor is not None:
                raise _anchor.missing(where)
            return
        _anchor.check(anchor, meta.generation, log.head()[0], log.hash_at, where)

    def _anchored(self, meta: Metadata, anchor: Anchor | None, reset: bool) -> Metadata:
        """After the check: reset the anchor (asked), start one (a store of the release
        before), or catch it up to the folder."""
        if self._anchor is None:
            return meta
        if reset:
            return self._reset_anchor(meta, anchor)
        if meta.anchor is None:
            return self._start_anchor(meta)
        if anchor is None or anchor.position < (meta.generation, self.audit.head()[0]):
            _LOG.info("catching up the rollback anchor of %s (was %s)", self.directory, anchor)
            self._settled(meta)
        return meta

    def _start_anchor(self, meta: Metadata) -> Metadata:
        """A keyring store of the release before: anchor its state now, then commit that it is
        anchored (``anchor-start``). A holder that cannot take it leaves it unanchored for now."""
        assert self._anchor is not None
        kind = M.ANCHORS[meta.backend][0]
        self._put_anchor(Anchor(meta.generation, *self.audit.head()))
        if self.anchor_problem is not None:
            return meta
        return self.commit(replace(meta, anchor=kind), "anchor-start", None,
                           detail=f"rollback anchor in {self._anchor.anchor_location}")  # fmt: skip

    def _reset_anchor(self, meta: Metadata, old: Anchor | None) -> Metadata:
        """Accept this folder as it is (``keys anchor --reset``): the old anchor is deleted,
        then ``anchor-reset`` commits, recording the old anchor's values, and anchors anew."""
        assert self._anchor is not None
        self._anchor.delete_anchor()
        kind = M.ANCHORS[meta.backend][0]
        detail = f"anchor was {old}" if old is not None else "anchor was missing or unreadable"
        return self.commit(replace(meta, anchor=kind), "anchor-reset", None, detail=detail)

    def _diagnosed(self, exc: IntegrityError) -> IntegrityError:
        """``exc`` (same class) with the first problem ``verify`` finds, which may be far
        before where the check at open stopped (an edit early in the log moves every later
        line, so their MACs fail too)."""
        try:
            report = self.audit.verify()
        except Error:
            return exc
        return exc if report.ok else type(exc)(f"{exc}; audit verify: {report}")

    def _upgrade(self, meta: Metadata) -> Metadata:
        """Bring a format 1 store (no audit MACs) to format 2: the ``audit-upgrade`` event is
        the first line with a MAC, and keystore.json names its seq as ``audit_mac_from``, so
        every later line must carry one and the unkeyed prefix can no longer be extended. The
        prefix is verified first (links, hashes, signatures, generations, metadata binding):
        ``AuditError`` rather than seal a log that was tampered with."""
        report = self.audit.verify()
        if not report.ok and report.kind != "time-order":  # a clock step is not a forgery
            raise AuditError(
                f"this store's audit log, written before audit lines carried MACs, does not "
                f"verify, so it is not sealed by an upgrade: {report}"
            )
        first = self.audit.head()[0] + 1
        upgraded = self.commit(replace(meta, audit_mac_from=first), "audit-upgrade", None,
                               detail=f"audit lines carry a MAC from seq {first}")  # fmt: skip
        self.audit.require_macs_from(first)
        return upgraded

    def _read_staged(self) -> Metadata | None:
        """The staged file if this store wrote it (MAC checked); None if absent or not ours."""
        try:
            return M.read_metadata(self._staged, self._mac_key)
        except FileNotFoundError:
            return None
        except (IntegrityError, InvalidDataError):
            return None  # not a file this store wrote: never trusted, deleted
