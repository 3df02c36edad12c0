"""Append-only, hash-chained audit log (JSON Lines) with ML-DSA-signed checkpoints.

Each line is one event; ``hash = SHA3-256(AUDIT_CHAIN_LABEL || prev || canonical JSON of the
event without prev/hash)``, ``prev`` is the previous line's hash (all zeros for the first).
Every ``checkpoint_every`` events a checkpoint line is appended, signed with the store's ML-DSA
key over (seq, time, prev), and the latest checkpoint is also kept in ``audit.checkpoint`` so a
truncated log is caught. Events carry ids and fingerprints, never key material.

Fail closed: if an event cannot be appended, ``AuditError`` is raised and the operation fails.
A crash in the middle of an append leaves a torn last line; ``verify`` reports it precisely,
and ``recover_torn_tail`` (run by the store when it opens) moves those bytes to
``audit.jsonl.torn`` and records an ``audit-recover`` event. Every file here is read, appended to
or truncated only as a regular file, never through a link (``core/_durable.py``).
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from pqselfenc.core import _durable
from pqselfenc.core import _primitives as P
from pqselfenc.error import AuditError, Error, InvalidDataError
from pqselfenc.keys._audit_format import (
    GENERATION,
    Verifier,
    chain_hash,
    checkpoint_message,
    valid_generation,
)
from pqselfenc.keys._json import canonical, loads
from pqselfenc.keys._metadata import fmt_time
from pqselfenc.keys._verify import AuditReport, verify_log

__all__ = ["AuditLog", "AuditReport"]

_TAIL_READ = 64 * 1024
_MAX_LINE = P.MAX_AUDIT_LINE_SIZE
_MALFORMED_LAST = "the last audit line is malformed; run audit.verify()"


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


class AuditLog:
    """The store's audit log; every append happens under the store's lock (``lock``)."""

    def __init__(
        self,
        directory: Path,
        *,
        clock: Callable[[], datetime],
        signer: Signer,
        verifier: Verifier,
        checkpoint_every: int,
        actor: str,
    ) -> None:
        self.path = Path(directory) / "audit.jsonl"
        self.checkpoint_path = Path(directory) / "audit.checkpoint"
        self._clock, self._signer, self._verifier = clock, signer, verifier
        self._every, self._actor = checkpoint_every, actor

    def __repr__(self) -> str:
        return f"AuditLog({str(self.path)!r})"

    # -- writing ---------------------------------------------------------------------------

    def record(self, action: str, *, outcome: str = "success", **fields: Any) -> int:
        """Append one event (and a checkpoint when one is due); its seq. ``AuditError`` if not."""
        try:
            seq, prev = self._head()
            body = self._body(seq + 1, action, outcome, fields)
            self._append(body, prev)
            if (seq + 1) % self._every == 0:
                self.checkpoint()
        except AuditError:
            raise
        except (Error, OSError, ValueError) as exc:
            raise AuditError(f"cannot write the audit event for {action}: {exc}") from exc
        return seq + 1

    def checkpoint(self) -> int:
        """Append a signed checkpoint over the current head and save it to audit.checkpoint."""
        seq, prev = self._head()
        body = self._body(seq + 1, "checkpoint", "success", {})
        body["signer"] = self._verifier.key_id.hex()
        message = checkpoint_message(body, prev.hex())
        sig = self._signer.sign(message, P.AUDIT_SIGNATURE_CONTEXT)
        body["signature"] = base64.b64encode(sig).decode("ascii")
        line = self._append(body, prev)
        try:
            _durable.replace_file(self.checkpoint_path, line)
        except OSError as exc:
            raise AuditError(f"cannot save the audit checkpoint: {_durable.describe(exc)}") from exc
        return seq + 1

    def checkpoint_if_needed(self) -> int | None:
        """A checkpoint unless the last line already is one (or the log is empty)."""
        last = self._last_event()
        if last is None or last["action"] == "checkpoint":
            return None
        return self.checkpoint()

    def _body(self, seq: int, action: str, outcome: str, fields: dict[str, Any]) -> dict[str, Any]:
        unknown = set(fields) - {
            "name",
            "key_id",
            "version",
            "fingerprint",
            "envelope_id",
            "detail",
            GENERATION,
        }
        if unknown:
            raise ValueError(f"unknown audit fields {sorted(unknown)}")
        body: dict[str, Any] = dict.fromkeys(("name", "key_id", "version", "fingerprint"))
        body |= {"envelope_id": None, "detail": None, **fields}
        body |= {"seq": seq, "time": fmt_time(self._clock()), "actor": self._actor}
        body |= {"action": action, "outcome": outcome}
        return body

    def _append(self, body: dict[str, Any], prev: bytes) -> bytes:
        line = dict(body, prev=prev.hex(), hash=chain_hash(prev, body).hex())
        data = canonical(line) + b"\n"
        try:
            _durable.append_file(self.path, data)
        except OSError as exc:
            raise AuditError(f"cannot append to the audit log: {_durable.describe(exc)}") from exc
        return data

    def _head(self) -> tuple[int, bytes]:
        """(seq, hash) of the last line, or (0, genesis); a broken tail refuses appends."""
        last = self._last_event()
        if last is None:
            return 0, P.AUDIT_GENESIS
        try:
            digest = bytes.fromhex(last["hash"])
        except ValueError as exc:
            raise AuditError(_MALFORMED_LAST) from exc
        if len(digest) != len(P.AUDIT_GENESIS):
            raise AuditError(_MALFORMED_LAST)
        return last["seq"], digest

    def _last_event(self) -> dict[str, Any] | None:
        """The last line parsed, or None for an empty log; ``AuditError`` if it is malformed."""
        last = self._last_line()
        if last is None:
            return None
        obj = parse_line(last, _MALFORMED_LAST)
        if type(obj.get("seq")) is not int or not all(
            isinstance(obj.get(k), str) for k in ("hash", "action")
        ):
            raise AuditError(_MALFORMED_LAST)
        return obj

    def _open(self) -> BinaryIO | None:
        """audit.jsonl for reading, None if absent; only a regular file, never through a link."""
        try:
            return _durable.open_file(self.path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise AuditError(f"cannot read the audit log: {_durable.describe(exc)}") from exc

    def _last_line(self) -> bytes | None:
        fh = self._open()
        if fh is None:
            return None
        with fh:
            end = fh.seek(0, os.SEEK_END)
            if end == 0:
                return None
            start = max(0, end - _TAIL_READ)
            fh.seek(start)
            tail = fh.read()
        if not tail.endswith(b"\n"):
            raise AuditError("the audit log ends in a torn line; reopen the store to recover")
        lines = tail[:-1].rsplit(b"\n", 1)
        if len(lines) == 1 and start > 0:
            raise AuditError("the last audit line is longer than 64 KiB")
        return lines[-1]

    def recover_torn_tail(self) -> int:
        """Move a torn last line (crash mid-append) to audit.jsonl.torn; bytes moved (0 if none).

        Neither file is touched through a link or as anything but a regular file, and a tail
        longer than one audit line is not moved (``AuditError``: look at it yourself).
        """
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

    def last_generation(self) -> int | None:
        """The metadata generation recorded by the last event that carries one (None if none).

        Read backwards from the end, stopping at the first such event: generations only grow
        along the log (every metadata write appends its event under the store lock). A line
        that does not parse, or a ``generation`` that is not an int >= 1, is ``AuditError``.
        """
        fh = self._open()
        if fh is None:
            return None
        with fh:
            for raw in _reversed_lines(fh):
                if GENERATION.encode() not in raw:
                    continue  # cheap: no event of a metadata write
                obj = parse_line(raw, "an audit line does not parse; run audit.verify()")
                if GENERATION not in obj:
                    continue
                value = obj[GENERATION]
                if not valid_generation(value) or obj.get("action") == "checkpoint":
                    raise AuditError("an audit line has an invalid generation; run audit.verify()")
                return int(value)
        return None

    def events(self) -> Iterator[dict[str, Any]]:
        """Every line parsed, oldest first, without verification (``verify`` checks them).

        ``AuditError`` for a line that is not a strict JSON object (or longer than 1 MiB):
        reading stops there, and ``verify`` says exactly what is wrong.
        """
        fh = self._open()
        if fh is None:
            return
        with fh:
            for number, raw in enumerate(iter(lambda: fh.readline(_MAX_LINE + 1), b""), 1):
                if len(raw) > _MAX_LINE:
                    raise AuditError(f"audit line {number} is longer than 1 MiB")
                yield parse_line(raw, f"audit line {number} does not parse")

    def verify(self, trusted_key: Verifier | None = None) -> AuditReport:
        """Check every link, every checkpoint signature, and truncation against the last one."""
        return verify_log(self.path, self.checkpoint_path, trusted_key or self._verifier)


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


def _reversed_lines(fh: BinaryIO) -> Iterator[bytes]:
    """The complete lines of ``fh``, last first (a torn tail without a newline included)."""
    end = fh.seek(0, os.SEEK_END)
    rest = b""
    while end > 0:
        start = max(0, end - _TAIL_READ)
        fh.seek(start)
        block = fh.read(end - start) + rest
        end = start
        lines = block.split(b"\n")
        rest = lines.pop(0) if start > 0 else b""
        if len(rest) > _MAX_LINE:
            raise AuditError("an audit line is longer than 1 MiB")
        yield from (line for line in reversed(lines) if line)
