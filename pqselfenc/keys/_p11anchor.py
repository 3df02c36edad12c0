"""The rollback anchor in the token: a private ``CKO_DATA`` object per store holding the newest
(generation, audit seq, audit hash) the store reached, so a copy of an older directory cannot
rewind it. Layout and reasoning: docs/pkcs11.md.

Replace = create the new object, then destroy the older ones listed before: a crash in between
leaves two, and ``read`` takes the higher. Only private objects count (creating one needs the
PIN); public ones under the same label, which anyone may create, are ignored.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pqselfenc.core import _primitives as P
from pqselfenc.error import IntegrityError, InvalidDataError
from pqselfenc.keys._pkcs11 import (
    destroy_object,
    find_objects,
)

if TYPE_CHECKING:
    import pkcs11

__all__ = ["Anchor", "delete_anchors", "read_anchor", "write_anchor"]

_ANCHOR = struct.Struct(f">8sBQQ{P.P11_ANCHOR_HASH_SIZE}sB")


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
        if not isinstance(self.audit_hash, bytes) or len(self.audit_hash) != P.P11_ANCHOR_HASH_SIZE:
            raise ValueError(f"audit_hash must be {P.P11_ANCHOR_HASH_SIZE} bytes")

    @property
    def position(self) -> tuple[int, int]:
        """Order of anchors: by generation, then by audit sequence number."""
        return (self.generation, self.audit_seq)

    def encode(self, store_id: str) -> bytes:
        """The canonical record stored in the token (docs/pkcs11.md)."""
        sid = store_id.encode("ascii")
        return _ANCHOR.pack(P.P11_ANCHOR_MAGIC, P.P11_ANCHOR_VERSION, self.generation,
                            self.audit_seq, self.audit_hash, len(sid)) + sid  # fmt: skip

    @classmethod
    def decode(cls, record: bytes, store_id: str) -> Anchor:
        """Strict parse: exact length, magic, version and this store's id; else InvalidDataError."""
        sid = store_id.encode("ascii")
        if len(record) != _ANCHOR.size + len(sid) or record[_ANCHOR.size :] != sid:
            raise InvalidDataError("the token's anchor record is malformed or of another store")
        magic, version, generation, seq, digest, size = _ANCHOR.unpack_from(record)
        if magic != P.P11_ANCHOR_MAGIC or version != P.P11_ANCHOR_VERSION or size != len(sid):
            raise InvalidDataError("the token's anchor record is malformed")
        return cls(generation, seq, digest)


def _anchor_objects(session: pkcs11.Session, label: str) -> list[Any]:
    """Private data objects under ``label``: public ones anyone may create without the PIN."""
    from pkcs11 import Attribute as A
    from pkcs11 import ObjectClass

    query = {A.CLASS: ObjectClass.DATA, A.LABEL: label, A.PRIVATE: True, A.TOKEN: True}
    return find_objects(session, query)


def _parsed(objects: list[Any], store_id: str) -> list[tuple[Anchor, Any]]:
    """Each object's anchor; one another process destroyed since it was listed is skipped."""
    from pkcs11 import Attribute as A
    from pkcs11 import ObjectHandleInvalid

    out = []
    for obj in objects:
        try:
            value = bytes(obj[A.VALUE])
        except ObjectHandleInvalid:
            continue
        out.append((Anchor.decode(value, store_id), obj))
    return out


def _is_noop(current: Anchor, new: Anchor) -> bool:
    """True if ``new`` is ``current`` again; raise if either counter would go backwards (both
    only grow in a healthy store) or one position would record two audit hashes."""
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
        return True
    return False


def _create_anchor(session: pkcs11.Session, label: str, record: bytes) -> None:
    from pkcs11 import Attribute as A
    from pkcs11 import ObjectClass

    session.create_object({A.CLASS: ObjectClass.DATA, A.TOKEN: True, A.PRIVATE: True,
                           A.MODIFIABLE: False, A.LABEL: label, A.APPLICATION: P.P11_APPLICATION,
                           A.VALUE: record})  # fmt: skip


def _destroy_older(found: list[tuple[Anchor, Any]], new: Anchor) -> None:
    """Second step of a replace: a crash before it leaves two objects, and ``read`` takes the
    higher; objects another process wrote meanwhile (they were not listed) are left alone."""
    for anchor, obj in found:
        if anchor.position < new.position:
            destroy_object(obj)


def read_anchor(session: pkcs11.Session, label: str, store_id: str) -> Anchor | None:
    """The highest anchor under ``label``; None if there is none; ``InvalidDataError`` if a
    private object under the label does not parse."""
    found = _parsed(_anchor_objects(session, label), store_id)
    return max((a for a, _ in found), key=lambda a: a.position, default=None)


def write_anchor(session: pkcs11.Session, label: str, store_id: str, anchor: Anchor) -> None:
    """Replace the anchor under ``label`` by ``anchor`` (see the module docstring)."""
    found = _parsed(_anchor_objects(session, label), store_id)
    current = max((a for a, _ in found), key=lambda a: a.position, default=None)
    if current is not None and _is_noop(current, anchor):
        _destroy_older(found, anchor)  # what a crashed replace left behind
        return
    _create_anchor(session, label, anchor.encode(store_id))
    _destroy_older(found, anchor)


def delete_anchors(session: pkcs11.Session, label: str) -> int:
    """Destroy every private object under ``label``; how many there were."""
    objects = _anchor_objects(session, label)
    for obj in objects:
        destroy_object(obj)
    return len(objects)
