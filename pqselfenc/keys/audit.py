"""Append-only, hash-chained, keyed audit log (JSON Lines) with ML-DSA-signed checkpoints.

Each line is one event; ``hash = SHA3-256(AUDIT_CHAIN_LABEL || prev || canonical JSON of the
event without prev/hash/mac)``, ``prev`` is the previous line's hash (all zeros for the first),
and ``mac = HMAC-SHA3-256(audit MAC key, hash || u64 offset of the line)`` with a key derived
from the store's root secret, so only the store can extend the chain, and a genuine line copied
to another place (a replay) is caught. Every ``checkpoint_every`` events a checkpoint line is
appended, signed with the store's ML-DSA key over (seq, time, prev), and the latest checkpoint is
also kept in ``audit.checkpoint``. Events carry ids and fingerprints, never key material.

Fail closed: nothing is appended after a last line whose MAC does not verify (a forged or edited
line is never extended, nor signed by the next checkpoint), and if an event cannot be appended,
``AuditError`` is raised and the operation fails. A crash in the middle of an append leaves a
torn last line; ``verify`` reports it precisely, and ``recover_torn_tail`` (run by the store when
it opens) moves those bytes to ``audit.jsonl.torn`` and records an ``audit-recover`` event. Every
file here is read, appended to or truncated only as a regular file, never through a link
(``core/_durable.py``).
"""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from pqselfenc.core import _durable
from pqselfenc.core import _primitives as P
from pqselfenc.error import AuditError, Error, InvalidDataError
from pqselfenc.keys._audit_format import (
    ESCROW,
    GENERATION,
    MAC,
    META_MAC,
    CommitRecord,
    Verifier,
    chain_hash,
    check_line,
    checkpoint_message,
    line_mac,
    mac_matches,
)
from pqselfenc.keys._export import AuditExport, ExportRecord, ExportState
from pqselfenc.keys._json import canonical, loads
from pqselfenc.keys._metadata import fmt_time
from pqselfenc.keys._verify import AuditReport, LogCheck, Snapshot, verify_log

if TYPE_CHECKING:
    from pqselfenc.keys._metadata import Metadata

__all__ = ["AuditExport", "AuditLog", "AuditReport", "ExportRecord", "ExportState", "read_events"]

_TAIL_READ = 64 * 1024  # block size when reading backwards
_MAX_LINE = P.MAX_AUDIT_LINE_SIZE
_MALFORMED_LAST = "the last audit line is malformed; run audit.verify()"
_EVENT_FIELDS = frozenset(
    {"name", "key_id", "version", "fingerprint", "envelope_id", "detail", GENERATION, META_MAC,
     ESCROW}
)
Committed = Callable[[], "tuple[Metadata, Metadata | None]"]


class Signer(Protocol):
    """What signs a checkpoint: an ML-DSA signing key (``kem.SigningKey``)."""

    def sign(self, message: bytes, context: bytes) -> bytes: ...


def parse_line(raw: bytes, message: str) -> dict[str, Any]:
    """One audit line as a JSON object (strict JSON); ``AuditError(message)`` if it is not."""
    try:
        obj = loads(raw, InvalidDataError, "the audit line")
    except InvalidDataError as exc:
        raise AuditError(message) from exc
    if not isinstance(obj, dict):
        raise AuditError(message)
    return obj


def _checked(raw: bytes, message: str) -> dict[str, Any]:
    """``parse_line`` plus every field's type and range (``check_line``)."""
    try:
        return check_line(parse_line(raw, message))
    except InvalidDataError as exc:
        raise AuditError(message) from exc


class AuditLog:
    """The store's audit log; every append happens under the store's lock (``lock``).

    ``mac_key``: the key of the line MACs (``P.audit_mac_key`` of the store's root secret).
    ``mac_from``: the first seq whose line must carry a valid MAC (1 for a store created by
    this release; None for a store of the release before, until it is upgraded at open).
    ``lock`` and ``committed`` (keystore.json and its staged copy, MAC-checked) let ``verify``
    read a consistent snapshot and check the metadata against the log; the store passes both.
    """

    def __init__(
        self,
        directory: Path,
        *,
        clock: Callable[[], datetime],
        signer: Signer,
        verifier: Verifier,
        checkpoint_every: int,
        actor: str,
        mac_key: bytes,
        mac_from: int | None = 1,
        lock: AbstractContextManager[Any] | None = None,
        committed: Committed | None = None,
    ) -> None:
        self.path = Path(directory) / "audit.jsonl"
        self.checkpoint_path = Path(directory) / "audit.checkpoint"
        self._clock, self._signer, self._verifier = clock, signer, verifier
        self._every, self._actor = checkpoint_every, actor
        if not isinstance(mac_key, bytes) or len(mac_key) != P.AUDIT_MAC_SIZE:
            raise ValueError(f"mac_key must be {P.AUDIT_MAC_SIZE} bytes")
        self._mac_key, self._mac_from = mac_key, mac_from
        self._lock, self._committed = lock, committed
        self._end: int | None = None  # a read-only view ends here (``without_torn_tail``)

    def __repr__(self) -> str:
        return f"AuditLog({str(self.path)!r})"

    @property
    def mac_from(self) -> int | None:
        """The first seq whose line must carry a valid MAC (None: a store not yet upgraded)."""
        return self._mac_from

    def require_macs_from(self, seq: int | None) -> None:
        """Set ``mac_from`` (what the authenticated metadata says; the ledger calls this)."""
        self._mac_from = seq

    # -- writing ---------------------------------------------------------------------------

    def record(self, action: str, *, outcome: str = "success", **fields: Any) -> int:
        """Append one event (and a checkpoint when one is due); its seq. ``AuditError`` if not,
        including when the last line's MAC does not verify (nothing is chained onto it)."""
        try:
            seq, prev, end = self._tail()
            body = self._body(seq + 1, action, outcome, fields)
            self._append(body, prev, end)
            if (seq + 1) % self._every == 0:
                self.checkpoint()
        except AuditError:
            raise
        except (Error, OSError, ValueError) as exc:
            raise AuditError(f"cannot write the audit event for {action}: {exc}") from exc
        return seq + 1

    def checkpoint(self) -> int:
        """Append a signed checkpoint over the current head and save it to audit.checkpoint."""
        seq, prev, end = self._tail()
        body = self._body(seq + 1, "checkpoint", "success", {})
        body["signer"] = self._verifier.key_id.hex()
        message = checkpoint_message(body, prev.hex())
        sig = self._signer.sign(message, P.AUDIT_SIGNATURE_CONTEXT)
        body["signature"] = base64.b64encode(sig).decode("ascii")
        line = self._append(body, prev, end)
        try:
            _durable.replace_file(self.checkpoint_path, line)
        except OSError as exc:
            raise AuditError(f"cannot save the audit checkpoint: {_durable.describe(exc)}") from exc
        return seq + 1

    def checkpoint_if_needed(self) -> int | None:
        """A checkpoint unless the last line already is one (or the log is empty)."""
        last = self._last_event()
        if last is None or last[0]["action"] == "checkpoint":
            return None
        return self.checkpoint()

    def _body(self, seq: int, action: str, outcome: str, fields: dict[str, Any]) -> dict[str, Any]:
        unknown = set(fields) - _EVENT_FIELDS
        if unknown:
            raise ValueError(f"unknown audit fields {sorted(unknown)}")
        body: dict[str, Any] = dict.fromkeys(("name", "key_id", "version", "fingerprint"))
        body |= {"envelope_id": None, "detail": None, **fields}
        body |= {"seq": seq, "time": fmt_time(self._clock()), "actor": self._actor}
        body |= {"action": action, "outcome": outcome}
        return body

    def _append(self, body: dict[str, Any], prev: bytes, offset: int) -> bytes:
        """Append the line of ``body`` at byte ``offset`` (the log's end, read under the lock)."""
        if self._end is not None:
            raise AuditError("a read-only view of the audit log cannot be appended to")
        digest = chain_hash(prev, body)
        mac = line_mac(self._mac_key, digest, offset)
        line = dict(body, prev=prev.hex(), hash=digest.hex(), mac=mac)
        data = canonical(line) + b"\n"
        try:
            _durable.append_file(self.path, data)
        except OSError as exc:
            raise AuditError(f"cannot append to the audit log: {_durable.describe(exc)}") from exc
        return data

    # -- the head: what the next line chains onto (and what a rollback anchor records) --------

    def head(self) -> tuple[int, bytes]:
        """(seq, hash) of the last line, authenticated, or (0, genesis) for an empty log.

        ``AuditError`` if the last line is malformed, torn, or does not carry a valid MAC for
        its place in the log (once ``mac_from`` is set), or if the log ends before ``mac_from``
        (cut below the upgrade).
        """
        seq, digest, _ = self._tail()
        return seq, digest

    def _tail(self) -> tuple[int, bytes, int]:
        """``head()`` and the log's length in bytes (where the next line will start)."""
        last = self._last_event()
        if last is None:
            if self._mac_from is not None and self._mac_from > 1:
                raise AuditError("the audit log is empty, but keystore.json says it was not")
            return 0, P.AUDIT_GENESIS, 0
        line, offset, end = last
        self._authenticate(line, offset)
        if self._mac_from is not None and line["seq"] < self._mac_from:
            raise AuditError(f"the audit log ends at seq {line['seq']}, before its first MAC")
        return line["seq"], bytes.fromhex(line["hash"]), end

    def hash_at(self, seq: int) -> bytes:
        """The authenticated hash of line ``seq`` (``AuditError`` if the log has no such line,
        or it is malformed or unauthentic): what a rollback anchor compares with."""
        for offset, line in self._lines_backwards():
            if line["seq"] == seq:
                self._authenticate(line, offset)
                return bytes.fromhex(line["hash"])
            if line["seq"] < seq:
                break
        raise AuditError(f"the audit log has no line {seq}")

    def last_commit(self) -> CommitRecord | None:
        """The last event that committed a keystore.json generation (authenticated), or None.

        Read backwards from the end: generations only grow along the log (every metadata write
        appends its event under the store lock). A malformed line, or an unauthentic one, is
        ``AuditError``.
        """
        for offset, line in self._lines_backwards(needle=GENERATION.encode()):
            if GENERATION in line:
                self._authenticate(line, offset)
                return CommitRecord(line["seq"], line[GENERATION], line.get(META_MAC))
        return None

    def _authenticate(self, line: dict[str, Any], offset: int) -> None:
        """A line with a ``mac`` must hash to its ``hash`` and carry the MAC of that hash at
        ``offset``, where it was found; from ``mac_from`` on, every line must. ``AuditError``
        otherwise: nothing is built on it."""
        required = self._mac_from is not None and line["seq"] >= self._mac_from
        if (MAC in line or required) and not mac_matches(self._mac_key, line, offset):
            raise AuditError(
                f"audit line {line['seq']} has no valid MAC: it was not written by this store "
                "(forged or altered); run audit.verify()"
            )

    def _last_event(self) -> tuple[dict[str, Any], int, int] | None:
        """(the last line parsed and checked, its offset, the log's length), or None for an
        empty log; ``AuditError`` if it is malformed."""
        last = self._last_line()
        if last is None:
            return None
        raw, offset, end = last
        return _checked(raw, _MALFORMED_LAST), offset, end

    def _lines_backwards(self, needle: bytes = b"") -> Iterator[tuple[int, dict[str, Any]]]:
        fh = self._open()
        if fh is None:
            return
        with fh:
            for offset, raw in _reversed_lines(fh, self._size(fh)):
                if needle in raw:  # cheap: skip lines that cannot be what we look for
                    yield offset, _checked(raw, "an audit line is malformed; run audit.verify()")

    def _size(self, fh: BinaryIO) -> int:
        """The length of the log read through ``fh`` (a view stops at its end)."""
        end = fh.seek(0, os.SEEK_END)
        return end if self._end is None else min(end, self._end)

    def _open(self) -> BinaryIO | None:
        """audit.jsonl for reading, None if absent; only a regular file, never through a link."""
        try:
            return _durable.open_file(self.path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise AuditError(f"cannot read the audit log: {_durable.describe(exc)}") from exc

    def _last_line(self) -> tuple[bytes, int, int] | None:
        """(the last line, the offset it starts at, the log's length), None if empty. Read
        backwards in blocks, up to one line's bound (a seal to many recipients is long)."""
        fh = self._open()
        if fh is None:
            return None
        with fh:
            end = self._size(fh)
            if end == 0:
                return None
            fh.seek(end - 1)
            if fh.read(1) != b"\n":
                raise AuditError("the audit log ends in a torn line; reopen the store to recover")
            offset, line = next(_reversed_lines(fh, end), (0, b""))
        if offset + len(line) + 1 != end:  # an empty last line
            raise AuditError(_MALFORMED_LAST)
        return line, offset, end

    # -- torn tail -------------------------------------------------------------------------

    def without_torn_tail(self) -> AuditLog:
        """This log as ``recover_torn_tail`` would leave it, read-only: a torn last line is left
        out, nothing is moved or written (``head``, ``hash_at``, ``last_commit`` read it; an
        append is ``AuditError``). What the store checks against its rollback anchor before it
        writes anything at open. ``AuditError`` for a torn tail longer than one line."""
        keep = 0
        fh = self._open()
        if fh is not None:
            with fh:
                keep = _torn_start(fh)[0]
        view = copy.copy(self)
        view._end = keep if self._end is None else min(keep, self._end)
        return view

    def recover_torn_tail(self) -> int:
        """Move a torn last line (crash mid-append) to audit.jsonl.torn; bytes moved (0 if none).

        Neither file is touched through a link or as anything but a regular file, and a tail
        longer than one audit line is not moved (``AuditError``: look at it yourself).
        """
        if self._end is not None:
            raise AuditError("a read-only view of the audit log cannot be recovered")
        try:
            cut = self._cut_torn_tail()
        except OSError as exc:
            raise AuditError(f"cannot move the torn audit tail: {_durable.describe(exc)}") from exc
        if cut is None:
            return 0
        keep, torn = cut
        digest = hashlib.sha3_256(torn).hexdigest()[:16]
        self.record(
            "audit-recover", detail=f"{len(torn)} torn bytes at offset {keep}, sha3 {digest}"
        )
        return len(torn)

    def _cut_torn_tail(self) -> tuple[int, bytes] | None:
        """Append a torn tail to audit.jsonl.torn, then truncate it off: (offset, bytes)."""
        try:
            fh = _durable.open_file(self.path, writable=True)
        except FileNotFoundError:
            return None
        with fh:
            keep, end = _torn_start(fh)
            if keep == end:
                return None
            fh.seek(keep)
            torn = fh.read(end - keep)
            _durable.append_file(self.path.with_name("audit.jsonl.torn"), torn + b"\n")
            fh.truncate(keep)
            os.fsync(fh.fileno())
        return keep, torn

    # -- reading ---------------------------------------------------------------------------

    def events(self) -> Iterator[dict[str, Any]]:
        """Every line parsed, oldest first, without verification (``verify`` checks them).

        ``AuditError`` for a line that is not a strict JSON object (or longer than 1 MiB):
        reading stops there, and ``verify`` says exactly what is wrong.
        """
        return read_events(self.path.parent)

    def verify(self, trusted_key: Verifier | None = None) -> AuditReport:
        """Check every line (fields, sequence, link, hash, MAC, time and generation order), every
        checkpoint signature, truncation against the saved checkpoint, and keystore.json against
        the last event that committed it.

        Reads a consistent snapshot: the store lock is held only to read audit.checkpoint,
        keystore.json and the log's length; the log is append-only, so the prefix up to that
        length is then verified without the lock while other processes keep appending.
        """
        snapshot, length = self._moment()
        snapshot = replace(snapshot, log=self._read_prefix(length))
        return verify_log(snapshot, trusted_key or self._verifier, self._mac_key)

    def export(self, since: int | datetime | ExportState | None = None) -> AuditExport:
        """The log's lines as ``ExportRecord``s for a SIEM, each verified (as ``verify`` does)
        before it is yielded: ``since`` None (all), a seq (the lines after it), an aware
        datetime (from the first line at or after it), or the ``ExportState`` a previous export
        ended at (``AuditExport.state``; its line must be unchanged). Iterating raises
        ``AuditError`` at the first problem, after the good lines before it (docs/format.md 4.9).

        The snapshot is taken now, as ``verify`` takes it; the log is then read as a stream, in
        bounded memory, without the lock.
        """
        snapshot, length = self._moment()
        mac_key, verifier = self._mac_key, self._verifier

        def check(snap: Snapshot) -> LogCheck:
            return LogCheck(snap, verifier, mac_key)

        return AuditExport(snapshot, length, self._open, check, since)

    def _moment(self) -> tuple[Snapshot, int]:
        """Under the lock: audit.checkpoint, keystore.json (checked) and the log's length; the
        log's bytes are not read (``Snapshot.log`` is empty)."""
        with self._lock if self._lock is not None else contextlib.nullcontext():
            checkpoint = _read_optional(self.checkpoint_path, P.MAX_AUDIT_LINE_SIZE + 1)
            committed: tuple[Metadata, Metadata | None] | None = None
            problem = None
            if self._committed is not None:
                try:
                    committed = self._committed()
                except (Error, OSError) as exc:
                    problem = f"keystore.json cannot be checked: {exc}"
            length = self._length()
        mac_from = self._mac_from if committed is None else committed[0].audit_mac_from
        return Snapshot(b"", checkpoint, committed, mac_from, problem), length

    def _length(self) -> int:
        fh = self._open()
        if fh is None:
            return 0
        with fh:
            return self._size(fh)

    def _read_prefix(self, length: int) -> bytes:
        if length > P.MAX_AUDIT_LOG_SIZE:
            raise AuditError("the audit log is larger than 1 GiB")
        fh = self._open()
        if fh is None:
            return b""
        with fh:
            return fh.read(length)


def read_events(directory: Path) -> Iterator[dict[str, Any]]:
    """The lines of ``directory``'s audit.jsonl parsed, oldest first, unverified and without any
    key (the log is not secret): ``AuditLog.events`` of a store that need not be opened."""
    try:
        fh = _durable.open_file(Path(directory) / "audit.jsonl")
    except FileNotFoundError:
        return
    except OSError as exc:
        raise AuditError(f"cannot read the audit log: {_durable.describe(exc)}") from exc
    with fh:
        for number, raw in enumerate(iter(lambda: fh.readline(_MAX_LINE + 1), b""), 1):
            if len(raw) > _MAX_LINE:
                raise AuditError(f"audit line {number} is longer than 1 MiB")
            yield parse_line(raw, f"audit line {number} does not parse")


def _read_optional(path: Path, limit: int) -> bytes | None:
    """A small file's bytes (None if absent): a regular file, never through a link, bounded."""
    try:
        return _durable.read_file(path, limit=limit)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AuditError(f"cannot read {_durable.describe(exc)}") from exc


def _torn_start(fh: BinaryIO) -> tuple[int, int]:
    """(offset just after the last newline, end of file): equal when nothing is torn."""
    end = pos = fh.seek(0, os.SEEK_END)
    while pos > 0 and end - pos <= _MAX_LINE:
        start = max(0, pos - _TAIL_READ)
        fh.seek(start)
        cut = fh.read(pos - start).rfind(b"\n")
        if cut >= 0:
            return start + cut + 1, end
        pos = start
    if pos > 0:
        raise AuditError("the torn end of audit.jsonl is longer than one line: inspect it")
    return 0, end


def _reversed_lines(fh: BinaryIO, end: int) -> Iterator[tuple[int, bytes]]:
    """(offset, line) for the lines of ``fh`` before byte ``end``, last first (a torn tail
    without a newline included)."""
    rest = b""
    while end > 0:
        start = max(0, end - _TAIL_READ)
        fh.seek(start)
        block = fh.read(end - start) + rest
        end = start
        lines = block.split(b"\n")
        first = start
        if start > 0:
            rest = lines.pop(0)
            first += len(rest) + 1
        offsets, pos = [], first
        for line in lines:
            offsets.append(pos)
            pos += len(line) + 1
        if len(rest) > _MAX_LINE:
            raise AuditError("an audit line is longer than 1 MiB")
        yield from ((o, line) for o, line in zip(reversed(offsets), reversed(lines), strict=True)
                    if line)  # fmt: skip
