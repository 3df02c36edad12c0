"""Audit export for a SIEM (docs/format.md 4.9): the log's lines, each verified before it is
handed out, in a record naming the store and the line's place in the chain.

The log is read as a stream, one line at a time (bounded memory whatever its size), and checked
from its first line exactly as ``AuditLog.verify`` checks it (``LogCheck``): a line is handed out
only after it and every line before it verified, so an export stops at the first bad line and
nothing after it is exported; ``AuditError`` then says what is wrong. The checks that need the
whole log (a torn tail, the saved checkpoint, keystore.json against the last commit) come after
the last line: they can fail an export whose lines were all good, never let a bad line out.

Continuity between exports: an ``ExportState`` (the store, and the seq and hash of the last line
exported) given as ``since`` starts the next export after that line, and refuses (``continuity``)
when the log's line at that seq no longer has that hash, or (``truncated``) when the log ends
before it: the log was rewritten, replaced or rolled back since the last export.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, BinaryIO

from pqselfenc.core import _primitives as P
from pqselfenc.error import AuditError, InvalidDataError
from pqselfenc.keys._json import Fields, canonical, loads
from pqselfenc.keys._metadata import parse_time
from pqselfenc.keys._verify import AuditReport, LogCheck, Snapshot

__all__ = ["EXPORT_FORMAT", "STATE_FORMAT", "AuditExport", "ExportRecord", "ExportState"]

EXPORT_FORMAT = "pqselfenc-audit-export"  # the "format" of every exported record
STATE_FORMAT = "pqselfenc-audit-export-state"  # the "format" of a saved ExportState
_VERSION = 1
_HEX64 = re.compile(r"[0-9a-f]{64}")
_STORE_ID = re.compile(r"[0-9a-f]{32}")
_MAX_STATE = 4096
Opener = Callable[[], "BinaryIO | None"]


@dataclass(frozen=True)
class ExportState:
    """Where an export ended: the store, and the seq and chain hash (hex) of the last line it
    exported. Saved between runs (``to_json``/``parse``) and given back as ``since``."""

    store_id: str
    seq: int
    hash: str

    def __post_init__(self) -> None:
        if not _STORE_ID.fullmatch(str(self.store_id)) or not _HEX64.fullmatch(str(self.hash)):
            raise ValueError("an export state needs a 32-hex store id and a 64-hex hash")
        if type(self.seq) is not int or not 1 <= self.seq <= P.MAX_COUNTER:
            raise ValueError("an export state's seq is a positive integer")

    def to_json(self) -> bytes:
        """The saved form: one canonical JSON object and a newline."""
        doc = {"format": STATE_FORMAT, "version": _VERSION, "store_id": self.store_id,
               "seq": self.seq, "hash": self.hash}  # fmt: skip
        return canonical(doc) + b"\n"

    @classmethod
    def parse(cls, raw: bytes) -> ExportState:
        """A saved state, read strictly; ``InvalidDataError`` for anything else."""
        if len(raw) > _MAX_STATE:
            raise InvalidDataError("an export state file is a few hundred bytes: this is not one")
        r = Fields(loads(raw, InvalidDataError, "export state"), InvalidDataError, "export state")
        if set(r.obj) != {"format", "version", "store_id", "seq", "hash"}:
            raise InvalidDataError("export state: not the fields of an export state")
        if r.get("format", str) != STATE_FORMAT or r.integer("version", 1, 1) != _VERSION:
            raise InvalidDataError("export state: not a pqselfenc audit export state")
        try:
            return cls(r.get("store_id", str), r.integer("seq", 1, P.MAX_COUNTER),
                       r.get("hash", str))  # fmt: skip
        except ValueError as exc:
            raise InvalidDataError(f"export state: {exc}") from exc


@dataclass(frozen=True)
class ExportRecord:
    """One exported line: ``event`` is the audit line exactly as the log holds it (every field,
    ``prev``, ``hash`` and ``mac`` included); ``seq``, ``prev`` and ``hash`` repeat its chain
    position; ``store_id`` names the store (None when the log was opened without its metadata)."""

    store_id: str | None
    event: dict[str, Any] = field(repr=False)

    @property
    def seq(self) -> int:
        """The line's seq."""
        return int(self.event["seq"])

    @property
    def prev(self) -> str:
        """The hash (hex) of the line before it (64 zeros for seq 1)."""
        return str(self.event["prev"])

    @property
    def hash(self) -> str:
        """The line's chain hash (hex)."""
        return str(self.event["hash"])

    def to_json(self) -> bytes:
        """The exported line (docs/format.md 4.9): canonical JSON, without a newline."""
        return canonical({"format": EXPORT_FORMAT, "version": _VERSION,
                          "store_id": self.store_id, "seq": self.seq, "prev": self.prev,
                          "hash": self.hash, "event": self.event})  # fmt: skip


def _check_since(since: object, store_id: str | None) -> None:
    if isinstance(since, ExportState):
        if store_id is not None and since.store_id != store_id:
            raise ValueError("this export state belongs to another key store")
    elif isinstance(since, datetime):
        if since.utcoffset() is None:
            raise ValueError("since must be a timezone-aware datetime")
    elif since is not None and (type(since) is not int or not 0 <= since <= P.MAX_COUNTER):
        raise TypeError("since must be a seq (int >= 0), a datetime, an ExportState or None")


class AuditExport:
    """The verified lines of one snapshot of the log, as ``ExportRecord``s (iterate once).

    ``since``: None (every line), a seq (the lines after it), an aware ``datetime`` (from the
    first line at or after it, every line: a contiguous range), or an ``ExportState`` (the
    lines after it, once its line is found unchanged). Iteration raises ``AuditError`` at the
    first problem, after yielding every good line before it that the export covers; ``report``
    (an ``AuditReport``) then holds the problem, or the ok report once iteration ends without
    one. ``state`` is where the export ended: the last record yielded, else the
    ``ExportState`` it started after, else None.
    """

    report: AuditReport | None
    state: ExportState | None

    def __init__(
        self,
        snapshot: Snapshot,
        length: int,
        opener: Opener,
        check: Callable[[Snapshot], LogCheck],
        since: int | datetime | ExportState | None,
    ) -> None:
        store_id = snapshot.committed[0].store_id if snapshot.committed is not None else None
        _check_since(since, store_id)
        self.store_id, self.report = store_id, None
        self._snapshot, self._length, self._opener, self._check = snapshot, length, opener, check
        self._since, self._started, self._reached = since, False, since is None
        self._torn: tuple[bytes, int] = (b"", 0)
        self.state = since if isinstance(since, ExportState) else None

    def __repr__(self) -> str:
        return f"AuditExport(store_id={self.store_id!r}, since={self._since!r})"

    def __iter__(self) -> Iterator[ExportRecord]:
        if self._started:
            raise RuntimeError("an AuditExport is iterated once; call export() again")
        self._started = True
        check = self._check(self._snapshot)
        for offset, raw in self._lines(check):
            line = check.line(raw, offset)
            if line is None or not self._continuous(check, line):
                break
            if self._wanted(line):
                record = ExportRecord(self.store_id, line)
                if self.store_id is not None:
                    self.state = ExportState(self.store_id, record.seq, record.hash)
                yield record
        self.report = self._beyond(check.end(*self._torn))
        if not self.report.ok:
            raise AuditError(str(self.report))

    def _lines(self, check: LogCheck) -> Iterator[tuple[int, bytes]]:
        """(offset, line without its newline) up to the snapshot's length. A line longer than
        the bound is reported (``malformed``) and ends the reading; a last line without a
        newline is kept in ``_torn`` for ``LogCheck.end``."""
        fh = self._opener()
        if fh is None:
            return
        with fh:
            offset = 0
            while offset < self._length:
                raw = fh.readline(min(P.MAX_AUDIT_LINE_SIZE + 1, self._length - offset))
                if not raw.endswith(b"\n"):
                    if raw and offset + len(raw) < self._length:
                        check.fail("malformed", "a line longer than 1 MiB", next_line=True)
                    self._torn = (raw, offset)
                    return
                yield offset, raw[:-1]
                offset += len(raw)
            self._torn = (b"", offset)

    def _wanted(self, line: dict[str, Any]) -> bool:
        """Whether the export covers ``line`` (every line before it verified)."""
        since = self._since
        if not self._reached:
            if isinstance(since, ExportState):
                self._reached = line["seq"] > since.seq
            elif isinstance(since, datetime):
                self._reached = parse_time(line["time"]) >= since
            else:
                self._reached = line["seq"] > int(since or 0)
        return self._reached

    def _continuous(self, check: LogCheck, line: dict[str, Any]) -> bool:
        """False (a ``continuity`` problem) when ``since`` is a state whose line has changed."""
        state = self._since
        if not isinstance(state, ExportState) or line["seq"] != state.seq:
            return True
        if line["hash"] == state.hash:
            return True
        check.fail("continuity", "the log's line at this seq is not the one the last export "
                   "ended with: the log was rewritten or replaced since")  # fmt: skip
        return False

    def _beyond(self, report: AuditReport) -> AuditReport:
        """``report``, or a ``truncated`` one when the export starts after a seq beyond the log's
        end: the log is shorter than it was when that seq was exported."""
        since = self._since.seq if isinstance(self._since, ExportState) else self._since
        if not report.ok or type(since) is not int or since <= report.last_seq:
            return report
        detail = (f"the log ends at seq {report.last_seq}, before seq {since} the export starts "
                  "after: it was cut or rolled back since")  # fmt: skip
        return replace(report, ok=False, kind="truncated", seq=report.last_seq + 1,
                       line=report.events + 1, detail=detail)  # fmt: skip
