"""The audit line format, shared by the writer (``audit``) and the verifier (``_verify``).

Which fields an event and a checkpoint carry, the chain hash that links a line to the one
before it, and the message a checkpoint signs. docs/format.md section 4.6 describes the bytes.
"""

from __future__ import annotations

import hashlib
from typing import Any, Protocol

from pqselfenc.core import _primitives as P
from pqselfenc.keys._json import canonical

__all__ = [
    "CHECKPOINT_KEYS",
    "EVENT_KEYS",
    "GENERATION",
    "Verifier",
    "chain_hash",
    "checkpoint_message",
    "valid_generation",
]

_FIELDS = ("actor", "action", "outcome", "name", "key_id", "version", "fingerprint")
EVENT_KEYS = frozenset({"seq", "time", *_FIELDS, "envelope_id", "detail", "prev", "hash"})
CHECKPOINT_KEYS = EVENT_KEYS | {"signer", "signature"}
# Optional in an event (never in a checkpoint): the keystore.json generation an operation that
# writes the metadata is committing. Older logs lack it; they then give no bound at open.
GENERATION = "generation"


class Verifier(Protocol):
    """What checks a checkpoint signature: an ML-DSA verifying key (``kem.VerifyingKey``)."""

    @property
    def key_id(self) -> bytes: ...

    def verify(self, signature: bytes, message: bytes, context: bytes) -> None: ...


def valid_generation(value: object) -> bool:
    """An audit line's ``generation``: an int (not a bool) of at least 1."""
    return type(value) is int and value >= 1


def chain_hash(prev: bytes, body: dict[str, Any]) -> bytes:
    """SHA3-256(AUDIT_CHAIN_LABEL || prev || canonical JSON of the line without prev/hash)."""
    return hashlib.sha3_256(P.AUDIT_CHAIN_LABEL + prev + canonical(body)).digest()


def checkpoint_message(body: dict[str, Any], prev_hex: str) -> bytes:
    """What a checkpoint's ML-DSA signature covers: its seq, its time and the hash before it."""
    return canonical({"seq": body["seq"], "time": body["time"], "prev": prev_hex})
