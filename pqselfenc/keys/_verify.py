"""Verification of the audit log: links, hashes, sequence, checkpoint signatures, truncation."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pqselfenc.core import _durable
from pqselfenc.core import _primitives as P
from pqselfenc.error import AuditError, InvalidDataError, SignatureError
from pqselfenc.keys._audit_format import (
    CHECKPOINT_KEYS,
    EVENT_KEYS,
    GENERATION,
    Verifier,
    chain_hash,
    checkpoint_message,
    valid_generation,
)
from pqselfenc.keys._json import loads

__all__ = ["AuditReport", "verify_log"]


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

    def __str__(self) -> str:
        if self.ok:
            return f"audit log ok: {self.events} lines, checkpoint at seq {self.checkpoint_seq}"
        return f"audit log broken ({self.kind}) at line {self.line}, seq {self.seq}: {self.detail}"


class _Broken(Exception):
    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind, self.detail = kind, detail


@dataclass
class _Walk:
    verifier: Verifier
    prev: bytes = P.AUDIT_GENESIS
    seq: int = 0
    checkpoints: dict[int, str] = field(default_factory=dict)

    def line(self, raw: bytes) -> None:
        obj = _parse(raw)
        if obj["seq"] != self.seq + 1:
            raise _Broken("sequence", f"expected seq {self.seq + 1}, found {obj['seq']}")
        if obj["prev"] != self.prev.hex():
            raise _Broken("broken-link", "prev does not match the previous line's hash")
        body = {k: v for k, v in obj.items() if k not in ("prev", "hash")}
        digest = chain_hash(self.prev, body)
        if obj["hash"] != digest.hex():
            raise _Broken("bad-hash", "the line's content does not match its hash")
        if obj["action"] == "checkpoint":
            check_signature(obj, self.verifier)
            self.checkpoints[obj["seq"]] = obj["hash"]
        self.prev, self.seq = digest, obj["seq"]


def _parse(raw: bytes) -> dict[str, Any]:
    try:
        obj = loads(raw, InvalidDataError, "the line")
    except InvalidDataError as exc:
        raise _Broken("malformed", str(exc)) from exc
    if not isinstance(obj, dict):
        raise _Broken("malformed", "the line is not a JSON object")
    keys = CHECKPOINT_KEYS if obj.get("action") == "checkpoint" else EVENT_KEYS
    if GENERATION in obj and keys is EVENT_KEYS:
        if not valid_generation(obj[GENERATION]):
            raise _Broken("malformed", "the line's generation is not an integer of at least 1")
        keys = keys | {GENERATION}
    if set(obj) != keys or type(obj["seq"]) is not int:
        raise _Broken("malformed", "the line's fields are not those of an audit event")
    if not all(isinstance(obj[k], str) for k in ("prev", "hash", "time", "action")):
        raise _Broken("malformed", "the line's fields have the wrong types")
    return obj


def check_signature(obj: dict[str, Any], verifier: Verifier) -> None:
    if obj["signer"] != verifier.key_id.hex():
        raise _Broken("bad-signature", "checkpoint signed by another key than the store's")
    try:
        sig = base64.b64decode(obj["signature"], validate=True)
        message = checkpoint_message(obj, obj["prev"])
        verifier.verify(sig, message, P.AUDIT_SIGNATURE_CONTEXT)
    except (binascii.Error, ValueError, TypeError, SignatureError) as exc:
        raise _Broken("bad-signature", "checkpoint signature does not verify") from exc


def _walk_lines(data: bytes, walk: _Walk) -> AuditReport | None:
    lines = data.split(b"\n")
    torn = lines.pop()  # b"" when the file ends with a newline
    for number, raw in enumerate(lines, 1):
        try:
            walk.line(raw)
        except _Broken as exc:
            return _bad(walk, exc.kind, walk.seq + 1, number, exc.detail)
    if torn:
        offset = len(data) - len(torn)
        detail = f"{len(torn)} bytes without a newline at offset {offset} (crash mid-append?)"
        return _bad(walk, "torn-tail", walk.seq + 1, len(lines) + 1, detail)
    return None


def _bad(walk: _Walk, kind: str, seq: int, line: int, detail: str) -> AuditReport:
    cp = max(walk.checkpoints, default=0)
    return AuditReport(False, walk.seq, walk.seq, cp, kind, seq, line, detail)


def _read(path: Path, limit: int) -> bytes | None:
    """A log file's bytes (None if absent): a regular file, never through a link, bounded."""
    try:
        return _durable.read_file(path, limit=limit)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise AuditError(f"cannot read {_durable.describe(exc)}") from exc


def _check_checkpoint_file(checkpoint_path: Path, walk: _Walk) -> AuditReport | None:
    raw = _read(checkpoint_path, P.MAX_AUDIT_LINE_SIZE + 1)
    if raw is None:
        if walk.checkpoints:
            return _bad(walk, "truncated", walk.seq, walk.seq, "audit.checkpoint is missing")
        return None
    try:
        obj = _parse(raw.rstrip(b"\n"))
        if obj["action"] != "checkpoint":
            raise _Broken("malformed", "audit.checkpoint does not hold a checkpoint")
        check_signature(obj, walk.verifier)
        body = {k: v for k, v in obj.items() if k not in ("prev", "hash")}
        if chain_hash(bytes.fromhex(obj["prev"]), body).hex() != obj["hash"]:
            raise _Broken("bad-hash", "audit.checkpoint does not match its hash")
    except (_Broken, ValueError) as exc:
        kind = exc.kind if isinstance(exc, _Broken) else "malformed"
        return _bad(walk, kind, walk.seq, walk.seq, f"audit.checkpoint: {exc}")
    if obj["seq"] > walk.seq:
        detail = f"log ends at seq {walk.seq} but the last checkpoint covers seq {obj['seq']}"
        return _bad(walk, "truncated", walk.seq + 1, walk.seq + 1, detail)
    if walk.checkpoints.get(obj["seq"]) != obj["hash"]:
        detail = f"the log's line at seq {obj['seq']} is not the saved checkpoint"
        return _bad(walk, "checkpoint-mismatch", obj["seq"], obj["seq"], detail)
    return None


def verify_log(path: Path, checkpoint_path: Path, verifier: Verifier) -> AuditReport:
    """The first problem in the log at ``path`` (``AuditReport.ok`` False), or an ok report;
    ``checkpoint_path`` holds its last signed checkpoint."""
    data = _read(path, P.MAX_AUDIT_LOG_SIZE) or b""
    walk = _Walk(verifier)
    problem = _walk_lines(data, walk) or _check_checkpoint_file(checkpoint_path, walk)
    if problem is not None:
        return problem
    return AuditReport(True, walk.seq, walk.seq, max(walk.checkpoints, default=0))
