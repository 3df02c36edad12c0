"""The audit line format, shared by the writer (``audit``) and the verifier (``_verify``).

Which fields an event and a checkpoint carry (with their types and ranges), the chain hash that
links a line to the one before it, the MAC that keys it, the message a checkpoint signs, and the
rule that binds keystore.json to the last event that committed it (``settle``).
docs/format.md section 4.6 describes the bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from pqselfenc.core import _primitives as P
from pqselfenc.error import IntegrityError, InvalidDataError
from pqselfenc.keys._json import Fields, canonical
from pqselfenc.keys._metadata import parse_time

if TYPE_CHECKING:
    from pqselfenc.keys._metadata import Metadata

__all__ = [
    "CHECKPOINT_KEYS",
    "ESCROW",
    "EVENT_KEYS",
    "GENERATION",
    "MAC",
    "META_MAC",
    "OUTCOMES",
    "CommitRecord",
    "Verifier",
    "body_of",
    "chain_hash",
    "check_line",
    "checkpoint_message",
    "line_mac",
    "mac_matches",
    "settle",
]

_FIELDS = ("actor", "action", "outcome", "name", "key_id", "version", "fingerprint")
EVENT_KEYS = frozenset({"seq", "time", *_FIELDS, "envelope_id", "detail", "prev", "hash"})
CHECKPOINT_KEYS = EVENT_KEYS | {"signer", "signature"}
# Optional in an event (never in a checkpoint): the keystore.json generation an operation that
# writes the metadata commits, and that file's own MAC (``meta_mac``, only with a generation).
GENERATION = "generation"
META_MAC = "meta_mac"
# Optional in a successful seal event (never in a checkpoint): the key ids (hex, comma-separated)
# of the escrow recipients the map was also sealed to.
ESCROW = "escrow"
_ESCROW_IDS = re.compile(r"(?:[0-9a-f]{2}){1,64}(?:,(?:[0-9a-f]{2}){1,64})*")
# On every line from the metadata's ``audit_mac_from`` on: HMAC over the line's chain hash and
# the byte offset where the line starts in audit.jsonl. Not covered by the hash (it is computed
# from it), like ``prev`` and ``hash`` themselves.
MAC = "mac"
_UNHASHED = ("prev", "hash", MAC)
OUTCOMES = frozenset({"success", "failure", "intent"})
_ACTION = re.compile(r"[a-z][a-z0-9-]{0,31}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_KEY_ID = re.compile(r"(?:[0-9a-f]{2}){1,64}")  # a checkpoint's signer: the audit key's id
_TEXT_FIELDS = ("name", "key_id", "fingerprint", "envelope_id", "detail")


class Verifier(Protocol):
    """What checks a checkpoint signature: an ML-DSA verifying key (``kem.VerifyingKey``)."""

    @property
    def key_id(self) -> bytes: ...

    def verify(self, signature: bytes, message: bytes, context: bytes) -> None: ...


def body_of(line: dict[str, Any]) -> dict[str, Any]:
    """What a line's hash covers: every field except ``prev``, ``hash`` and ``mac``."""
    return {k: v for k, v in line.items() if k not in _UNHASHED}


def chain_hash(prev: bytes, body: dict[str, Any]) -> bytes:
    """SHA3-256(AUDIT_CHAIN_LABEL || prev || canonical JSON of the line without prev/hash/mac)."""
    return hashlib.sha3_256(P.AUDIT_CHAIN_LABEL + prev + canonical(body)).digest()


def line_mac(key: bytes, line_hash: bytes, offset: int) -> str:
    """The ``mac`` (hex) of a line whose chain hash is ``line_hash``, starting at byte
    ``offset`` of audit.jsonl."""
    return P.audit_mac(key, line_hash, offset).hex()


def mac_matches(key: bytes, line: dict[str, Any], offset: int) -> bool:
    """True if ``line`` (already checked by ``check_line``), found at byte ``offset`` of the
    log, hashes to its ``hash`` and carries the right ``mac`` for it and for that offset;
    compared in constant time."""
    digest = chain_hash(bytes.fromhex(line["prev"]), body_of(line))
    if digest.hex() != line["hash"] or not isinstance(line.get(MAC), str):
        return False
    expected = line_mac(key, digest, offset).encode("ascii")
    return hmac.compare_digest(line[MAC].encode("ascii"), expected)


def checkpoint_message(body: dict[str, Any], prev_hex: str) -> bytes:
    """What a checkpoint's ML-DSA signature covers: its seq, its time and the hash before it."""
    return canonical({"seq": body["seq"], "time": body["time"], "prev": prev_hex})


def _hex64(r: Fields, key: str) -> None:
    if not _HEX64.fullmatch(r.get(key, str)):
        raise InvalidDataError(f"{r.where}.{key} is not 64 lowercase hex digits")


def check_line(obj: object) -> dict[str, Any]:
    """``obj`` if it has exactly the fields of an audit event or checkpoint, each of its type and
    in its range (times parse, counters within ``P.MAX_COUNTER``); else ``InvalidDataError``."""
    r = Fields(obj, InvalidDataError, "the audit line")
    line = r.obj
    keys = CHECKPOINT_KEYS if line.get("action") == "checkpoint" else EVENT_KEYS
    keys |= {k for k in (MAC, GENERATION, META_MAC, ESCROW) if k in line}
    if set(line) != keys or (keys & {GENERATION, META_MAC, ESCROW} and "signer" in keys):
        raise InvalidDataError("the audit line's fields are not those of an audit event")
    if META_MAC in line and GENERATION not in line:
        raise InvalidDataError("the audit line has a meta_mac without a generation")
    r.integer("seq", 1, P.MAX_COUNTER)
    parse_time(r.get("time", str))
    r.text("actor", max_length=1024)
    if not _ACTION.fullmatch(r.get("action", str)) or r.get("outcome", str) not in OUTCOMES:
        raise InvalidDataError("the audit line's action or outcome is not one of ours")
    for key in _TEXT_FIELDS:  # a seal to 1024 recipients names them all: bounded by the line
        r.text(key, optional=True, max_length=P.MAX_AUDIT_LINE_SIZE)
    r.integer("version", 1, P.MAX_KEY_VERSION, optional=True)
    if GENERATION in line:
        r.integer(GENERATION, 1, P.MAX_COUNTER)
    for key in ("prev", "hash", *(k for k in (MAC, META_MAC) if k in line)):
        _hex64(r, key)
    escrow = r.text(ESCROW, max_length=P.MAX_AUDIT_LINE_SIZE) if ESCROW in line else ""
    if ESCROW in line and not _ESCROW_IDS.fullmatch(escrow):
        raise InvalidDataError("the audit line's escrow is not a list of key ids")
    if "signer" in line and not _KEY_ID.fullmatch(r.get("signer", str)):
        raise InvalidDataError("the audit line's signer is not a key id")
    if "signature" in line:
        r.text("signature", max_length=8192)
    return line


@dataclass(frozen=True)
class CommitRecord:
    """The last audit event that committed a keystore.json generation: its seq, the generation
    and the committed file's MAC (None in events written before ``meta_mac`` existed)."""

    seq: int
    generation: int
    meta_mac: str | None


def _strict(record: CommitRecord, meta: Metadata, staged: Metadata | None) -> bool:
    if (meta.generation, meta.mac) == (record.generation, record.meta_mac):
        return True
    if (
        staged is not None
        and (staged.generation, staged.mac) == (record.generation, record.meta_mac)
        and meta.generation == record.generation - 1
        and staged.store_id == meta.store_id
    ):
        return False
    if meta.generation < record.generation:
        raise IntegrityError(
            f"keystore.json generation {meta.generation} is older than generation "
            f"{record.generation} recorded in the audit log: rolled back? (restore the newest "
            "keystore.json, or the whole store directory from one backup)"
        )
    if meta.generation > record.generation:
        raise IntegrityError(
            f"keystore.json generation {meta.generation} is newer than generation "
            f"{record.generation}, the last one the audit log records: the log was truncated "
            "or replaced (events are missing)"
        )
    raise IntegrityError(
        f"keystore.json generation {meta.generation} is not the file the audit log recorded "
        "(its MAC differs): it was replaced by another copy"
    )


def _legacy(record: CommitRecord, meta: Metadata, staged: Metadata | None) -> bool:
    """The rule for a format 1 store and a log written before ``meta_mac`` (the release before
    audit MACs): keystore.json may not be older than the last recorded generation."""
    if (
        staged is not None
        and staged.generation == record.generation == meta.generation + 1
        and staged.store_id == meta.store_id
    ):
        return False
    if meta.generation < record.generation:
        return _strict(record, meta, None)  # raises the "older" IntegrityError
    return True


def settle(record: CommitRecord | None, meta: Metadata, staged: Metadata | None) -> bool:
    """Whether keystore.json (``meta``) is what the audit log's last commit ``record`` committed
    (True), or the staged file is and must be renamed into place (False); ``IntegrityError``
    for anything else: a rolled-back keystore.json, a truncated log, a forged or stale file.

    From ``meta.audit_mac_from`` on, every commit event carries ``meta_mac``: generation *and*
    MAC must match exactly. A format 2 store with no commit event at all is only one whose
    creation stopped before its first event (generation 1: it holds nothing yet).
    """
    if record is None or (meta.audit_mac_from is not None and record.seq < meta.audit_mac_from):
        if meta.audit_mac_from is None or (record is None and meta.generation == 1):
            return True
        raise IntegrityError(
            f"the audit log lacks the event that committed keystore.json generation "
            f"{meta.generation}: the log was truncated or replaced"
        )
    if record.meta_mac is not None:
        return _strict(record, meta, staged)
    if meta.audit_mac_from is not None:
        raise IntegrityError("an audit event commits a generation without its meta_mac")
    return _legacy(record, meta, staged)
