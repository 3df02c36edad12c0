"""Verification of the audit log: fields, sequence, links, hashes, MACs, time and generation
order, checkpoint signatures, truncation, and the binding of keystore.json to the log."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pqselfenc.core import _primitives as P
from pqselfenc.error import IntegrityError, InvalidDataError, SignatureError
from pqselfenc.keys._audit_format import (
    GENERATION,
    MAC,
    META_MAC,
    CommitRecord,
    Verifier,
    body_of,
    chain_hash,
    check_line,
    checkpoint_message,
    mac_matches,
    settle,
)
from pqselfenc.keys._json import loads
from pqselfenc.keys._metadata import parse_time

if TYPE_CHECKING:
    from pqselfenc.keys._metadata import Metadata

__all__ = ["AuditReport", "LogCheck", "Snapshot", "verify_log"]

_STEP_BACK = timedelta(seconds=P.AUDIT_CLOCK_STEP_BACK)


@dataclass(frozen=True)
class AuditReport:
    """What ``verify`` found: ``ok``, or the first problem (``kind``, ``seq``, ``line``)."""

    ok: bool
    events: int
    last_seq: int
    checkpoint_seq: int
    kind: str | None = None
    seq: int | None = None
    line: int | None = None
    detail: str | None = None
    last_hash: str | None = None  # hex hash of line ``last_seq`` (None for no line)

    def __str__(self) -> str:
        if self.ok:
            return f"audit log ok: {self.events} lines, checkpoint at seq {self.checkpoint_seq}"
        return f"audit log broken ({self.kind}) at line {self.line}, seq {self.seq}: {self.detail}"


@dataclass(frozen=True)
class Snapshot:
    """One consistent moment of a store, read under its lock: the log's bytes up to the length
    it had, ``audit.checkpoint`` (None if absent), keystore.json and its staged copy (None when
    not checked), the first seq that must carry a MAC, and why the metadata could not be read."""

    log: bytes
    checkpoint: bytes | None
    committed: tuple[Metadata, Metadata | None] | None
    mac_from: int | None
    problem: str | None = None


class _Broken(Exception):
    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind, self.detail = kind, detail


@dataclass
class _Walk:
    verifier: Verifier
    mac_key: bytes | None
    mac_from: int | None
    prev: bytes = P.AUDIT_GENESIS
    seq: int = 0
    time: datetime | None = None
    commit: CommitRecord | None = None
    wanted: int | None = None  # the saved checkpoint's seq: its line is kept, no other
    kept: bytes | None = None
    last_checkpoint: int = 0

    def line(self, raw: bytes, offset: int) -> dict[str, Any]:
        obj = _parse(raw)
        if obj["seq"] != self.seq + 1:
            raise _Broken("sequence", f"expected seq {self.seq + 1}, found {obj['seq']}")
        if obj["prev"] != self.prev.hex():
            raise _Broken("broken-link", "prev does not match the previous line's hash")
        digest = chain_hash(self.prev, body_of(obj))
        if obj["hash"] != digest.hex():
            raise _Broken("bad-hash", "the line's content does not match its hash")
        self._mac(obj, offset)
        self._order(obj)
        if obj["action"] == "checkpoint":
            check_signature(obj, self.verifier)
            self.last_checkpoint = obj["seq"]
            self.kept = raw if obj["seq"] == self.wanted else self.kept
        self.prev, self.seq = digest, obj["seq"]
        return obj

    @property
    def last_hash(self) -> str | None:
        return self.prev.hex() if self.seq else None

    def _mac(self, obj: dict[str, Any], offset: int) -> None:
        if self.mac_key is None:
            return  # a third party without the store's secret checks links and signatures only
        required = self.mac_from is not None and obj["seq"] >= self.mac_from
        if (MAC in obj or required) and not mac_matches(self.mac_key, obj, offset):
            raise _Broken("bad-mac", "the line's MAC does not verify: not written by this store")
        if required and GENERATION in obj and META_MAC not in obj:
            raise _Broken("malformed", "a commit event without its meta_mac")

    def _order(self, obj: dict[str, Any]) -> None:
        when = parse_time(obj["time"])
        if self.time is not None and when < self.time - _STEP_BACK:
            raise _Broken("time-order", f"time goes back from {self.time:%Y-%m-%dT%H:%M:%S}Z")
        self.time = max(when, self.time or when)
        if GENERATION not in obj:
            return
        if self.commit is not None and obj[GENERATION] != self.commit.generation + 1:
            detail = f"generation {obj[GENERATION]} follows {self.commit.generation}"
            raise _Broken("generation", detail + " (generations grow by one per commit)")
        self.commit = CommitRecord(obj["seq"], obj[GENERATION], obj.get(META_MAC))


def _parse(raw: bytes) -> dict[str, Any]:
    try:
        return check_line(loads(raw, InvalidDataError, "the line"))
    except InvalidDataError as exc:
        raise _Broken("malformed", str(exc)) from exc


def check_signature(obj: dict[str, Any], verifier: Verifier) -> None:
    if obj["signer"] != verifier.key_id.hex():
        raise _Broken("bad-signature", "checkpoint signed by another key than the store's")
    try:
        sig = base64.b64decode(obj["signature"], validate=True)
        message = checkpoint_message(obj, obj["prev"])
        verifier.verify(sig, message, P.AUDIT_SIGNATURE_CONTEXT)
    except (binascii.Error, ValueError, TypeError, SignatureError) as exc:
        raise _Broken("bad-signature", "checkpoint signature does not verify") from exc


def _saved_seq(raw: bytes | None) -> int | None:
    """The seq of the saved checkpoint (None if absent or malformed: checked at the end)."""
    try:
        return None if raw is None else int(_parse(raw.rstrip(b"\n"))["seq"])
    except _Broken:
        return None


def _bad(walk: _Walk, kind: str, seq: int, line: int, detail: str) -> AuditReport:
    return AuditReport(False, walk.seq, walk.seq, walk.last_checkpoint, kind, seq, line, detail,
                       walk.last_hash)  # fmt: skip


class LogCheck:
    """The checks of ``verify_log``, one line at a time in bounded memory (``snapshot.log`` is
    not read: the caller feeds the lines). ``line`` checks the next line and returns it parsed,
    or None once a problem is found (``report`` then holds it; later calls return None);
    ``end`` checks a torn tail, the saved checkpoint and keystore.json, and returns the report.
    """

    def __init__(self, snapshot: Snapshot, verifier: Verifier, mac_key: bytes | None) -> None:
        self._snapshot, self._number = snapshot, 0
        self._walk = _Walk(verifier, mac_key, snapshot.mac_from)
        self._walk.wanted = _saved_seq(snapshot.checkpoint)
        self.report: AuditReport | None = None

    def line(self, raw: bytes, offset: int) -> dict[str, Any] | None:
        """Line ``raw`` (without its newline), starting at byte ``offset``, parsed if good."""
        if self.report is not None:
            return None
        self._number += 1
        try:
            return self._walk.line(raw, offset)
        except _Broken as exc:
            self._number -= 1
            self.fail(exc.kind, exc.detail, next_line=True)
            return None

    def fail(self, kind: str, detail: str, *, next_line: bool = False) -> None:
        """Record a problem the caller found on the line last fed (which verified), or with
        ``next_line`` on the line after it (one that could not be fed)."""
        if self.report is None:
            ahead = 1 if next_line else 0
            seq, line = self._walk.seq + ahead, max(self._number + ahead, 1)
            self.report = _bad(self._walk, kind, seq, line, detail)

    def end(self, torn: bytes, offset: int) -> AuditReport:
        """The report, after the last complete line: ``torn`` bytes follow it at ``offset``."""
        walk = self._walk
        if self.report is None and torn:
            detail = f"{len(torn)} bytes without a newline at offset {offset} (crash mid-append?)"
            self.report = _bad(walk, "torn-tail", walk.seq + 1, self._number + 1, detail)
        ok = AuditReport(True, walk.seq, walk.seq, walk.last_checkpoint, last_hash=walk.last_hash)
        self.report = (
            self.report
            or _check_checkpoint_file(self._snapshot.checkpoint, walk)
            or _check_metadata(self._snapshot, walk)
            or ok
        )
        return self.report


def _check_checkpoint_file(raw: bytes | None, walk: _Walk) -> AuditReport | None:
    if raw is None:
        if walk.last_checkpoint:
            return _bad(walk, "truncated", walk.seq, walk.seq, "audit.checkpoint is missing")
        return None
    line = raw.rstrip(b"\n")
    try:
        obj = _parse(line)
        if obj["action"] != "checkpoint":
            raise _Broken("malformed", "audit.checkpoint does not hold a checkpoint")
        check_signature(obj, walk.verifier)
        if chain_hash(bytes.fromhex(obj["prev"]), body_of(obj)).hex() != obj["hash"]:
            raise _Broken("bad-hash", "audit.checkpoint does not match its hash")
    except _Broken as exc:
        return _bad(walk, exc.kind, walk.seq, walk.seq, f"audit.checkpoint: {exc}")
    if obj["seq"] > walk.seq:
        detail = f"log ends at seq {walk.seq} but the last checkpoint covers seq {obj['seq']}"
        return _bad(walk, "truncated", walk.seq + 1, walk.seq + 1, detail)
    if (walk.kept if obj["seq"] == walk.wanted else None) != line:
        detail = f"the log's line at seq {obj['seq']} is not the saved checkpoint"
        return _bad(walk, "checkpoint-mismatch", obj["seq"], obj["seq"], detail)
    return None


def _check_metadata(snapshot: Snapshot, walk: _Walk) -> AuditReport | None:
    if snapshot.problem is not None:
        return _bad(walk, "metadata-mismatch", walk.seq, walk.seq, snapshot.problem)
    if snapshot.committed is None:
        return None
    meta, staged = snapshot.committed
    try:
        settle(walk.commit, meta, staged)
    except IntegrityError as exc:
        return _bad(walk, "metadata-mismatch", walk.seq, walk.seq, str(exc))
    if meta.audit_mac_from is not None and walk.seq + 1 < meta.audit_mac_from:
        detail = f"keystore.json says MACs start at seq {meta.audit_mac_from}: log truncated"
        return _bad(walk, "truncated", walk.seq + 1, walk.seq + 1, detail)
    return None


def verify_log(snapshot: Snapshot, verifier: Verifier, mac_key: bytes | None) -> AuditReport:
    """The first problem in ``snapshot`` (``AuditReport.ok`` False), or an ok report. Without
    ``mac_key`` (a third party holding only the public audit key) MACs are not checked."""
    check = LogCheck(snapshot, verifier, mac_key)
    lines = snapshot.log.split(b"\n")
    torn = lines.pop()  # b"" when the file ends with a newline
    offset = 0
    for raw in lines:
        if check.line(raw, offset) is None:
            return check.end(b"", offset)
        offset += len(raw) + 1
    return check.end(torn, offset)
