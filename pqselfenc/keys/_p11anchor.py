"""The rollback anchor in the token: a private ``CKO_DATA`` object per store holding the newest
(generation, audit seq, audit hash) the store reached, so a copy of an older directory cannot
rewind it. Record: keys/_anchor.py; layout and reasoning: docs/format.md 4.7-4.8.

Replace = create the new object, then destroy the older ones listed before: a crash in between
leaves two, and ``read`` takes the higher. Only private objects count (creating one needs the
PIN); public ones under the same label, which anyone may create, are ignored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pqselfenc.core import _primitives as P
from pqselfenc.keys._anchor import Anchor, advances
from pqselfenc.keys._pkcs11 import destroy_object, private_objects

if TYPE_CHECKING:
    import pkcs11

__all__ = ["Anchor", "delete_anchors", "read_anchor", "write_anchor"]


def _anchor_objects(session: pkcs11.Session, label: str) -> list[Any]:
    """Private data objects under ``label``: public ones anyone may create without the PIN."""
    from pkcs11 import ObjectClass

    return private_objects(session, ObjectClass.DATA, label)


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
    if not advances(current, anchor):
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
