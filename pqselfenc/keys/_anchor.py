"""The rollback anchor: the newest state a key store reached, kept where someone who can write
the store's folder cannot rewind it.

The record is {generation of keystore.json, seq of the audit head, hash of that audit line}
(``Anchor``). Two places hold one, both behind the ``AnchorHolder`` protocol so the ledger does
not know which: a private data object in the PKCS#11 token (``Pkcs11Backend``) and an entry in
the OS keyring (``KeyringBackend``, service ``P.ANCHOR_KEYRING_SERVICE``, user = the store id).
Both obey one rule (``advances``): an anchor never moves back, in either counter, and one
position never records two audit hashes. ``check`` is what ``open`` applies: a folder whose
metadata generation or audit head is below the anchor, or whose log has another line at the
anchored seq, is refused with ``RollbackError`` naming the anchor's values. docs/format.md 4.8.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pqselfenc.core import _primitives as P
from pqselfenc.error import IntegrityError, InvalidDataError, RollbackError

__all__ = ["GENESIS", "RESET_HINT", "Anchor", "AnchorHolder", "advances", "check", "missing"]

_RECORD = struct.Struct(f">8sBQQ{P.ANCHOR_HASH_SIZE}sB")
RESET_HINT = ("restore the latest copy of the folder; once you know why it is older, "
              "'pqselfenc keys anchor --reset --yes' accepts it as it is (audited)")  # fmt: skip


@dataclass(frozen=True)
class Anchor:
    """The newest state a store reached: its metadata generation and its audit head."""

    generation: int
    audit_seq: int
    audit_hash: bytes

    def __post_init__(self) -> None:
        for value in (self.generation, self.audit_seq):
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 1 << 64:
                raise ValueError("generation and audit_seq must be ints in 0..2^64-1")
        if not isinstance(self.audit_hash, bytes) or len(self.audit_hash) != P.ANCHOR_HASH_SIZE:
            raise ValueError(f"audit_hash must be {P.ANCHOR_HASH_SIZE} bytes")

    @property
    def position(self) -> tuple[int, int]:
        """Order of anchors: by generation, then by audit sequence number."""
        return (self.generation, self.audit_seq)

    def __str__(self) -> str:
        return (f"generation {self.generation}, audit seq {self.audit_seq} "
                f"(hash {self.audit_hash.hex()[:16]}...)")  # fmt: skip

    def encode(self, store_id: str) -> bytes:
        """The canonical record (docs/format.md 4.8)."""
        sid = store_id.encode("ascii")
        return _RECORD.pack(P.ANCHOR_MAGIC, P.ANCHOR_VERSION, self.generation,
                            self.audit_seq, self.audit_hash, len(sid)) + sid  # fmt: skip

    @classmethod
    def decode(cls, record: bytes, store_id: str) -> Anchor:
        """Strict parse: exact length, magic, version and this store's id; else InvalidDataError."""
        sid = store_id.encode("ascii")
        if len(record) != _RECORD.size + len(sid) or record[_RECORD.size :] != sid:
            raise InvalidDataError("the anchor record is malformed or of another store")
        magic, version, generation, seq, digest, size = _RECORD.unpack_from(record)
        if magic != P.ANCHOR_MAGIC or version != P.ANCHOR_VERSION or size != len(sid):
            raise InvalidDataError("the anchor record is malformed")
        return cls(generation, seq, digest)


# Written when a store is created, before its keystore.json: the anchor exists from then on, so
# an anchored store without one was tampered with, never merely new.
GENESIS = Anchor(0, 0, P.AUDIT_GENESIS)


class AnchorHolder(Protocol):
    """Where a store's anchor lives (a token, the OS keyring); writes obey ``advances``."""

    @property
    def anchor_location(self) -> str:
        """Where the anchor is, for messages (no secret)."""
        ...

    def read_anchor(self) -> Anchor | None:
        """The anchor, or None if there is none (``InvalidDataError`` if it does not parse)."""
        ...

    def write_anchor(self, anchor: Anchor) -> None:
        """Replace the anchor by ``anchor``: ``IntegrityError`` if it would move back."""
        ...

    def delete_anchor(self) -> int:
        """Remove the anchor (an audited reset); how many records were removed."""
        ...


def advances(current: Anchor | None, new: Anchor) -> bool:
    """Whether writing ``new`` over ``current`` changes anything (False: the same again).
    ``IntegrityError`` if either counter would go back (both only grow in a healthy store) or
    one position would record two audit hashes (a forked log)."""
    if current is None:
        return True
    if new.generation < current.generation or new.audit_seq < current.audit_seq:
        raise IntegrityError(
            f"anchor would move back from generation {current.generation} / audit seq "
            f"{current.audit_seq} to {new.generation} / {new.audit_seq}: directory rolled back?"
        )
    if new.position == current.position:
        if new.audit_hash != current.audit_hash:
            raise IntegrityError(
                f"anchor at generation {new.generation} / audit seq {new.audit_seq} records "
                "another audit hash: the audit log forked"
            )
        return False
    return True


def check(anchor: Anchor, generation: int, head: int, hash_at: Callable[[int], bytes],
          where: str) -> None:  # fmt: skip
    """``RollbackError`` unless a folder at metadata ``generation`` whose audit head is at seq
    ``head`` (``hash_at(seq)``: its log's authenticated hash there) is at or after ``anchor``."""
    older = [f"keystore.json generation {generation}"] if generation < anchor.generation else []
    if head < anchor.audit_seq:
        older.append(f"an audit log that ends at seq {head}")
    if older:
        raise RollbackError(
            f"the key store folder is older than its rollback anchor: the anchor records "
            f"{anchor}, the folder has {' and '.join(older)}; it was rolled back or restored "
            f"from an older copy (anchor in {where}). To recover: {RESET_HINT}"
        )
    if anchor.audit_seq > 0 and hash_at(anchor.audit_seq) != anchor.audit_hash:
        found = hash_at(anchor.audit_seq).hex()[:16]
        raise RollbackError(
            f"the audit log is not the one anchored: the anchor records {anchor}, the log's "
            f"line {anchor.audit_seq} has hash {found}...; it was replaced by another copy of "
            f"this store's log (anchor in {where}). To recover: {RESET_HINT}"
        )


def missing(where: str) -> RollbackError:
    """The error for an anchored store whose anchor is gone."""
    return RollbackError(
        f"this key store keeps a rollback anchor in {where}, but there is none: it was "
        f"deleted (the token or keyring entry was reset) or this is another token or keyring. "
        f"Point the store at its token/keyring; if the anchor is really lost, {RESET_HINT}"
    )
