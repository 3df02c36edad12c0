"""``pqselfenc recipients escrow add|remove|list``: the key store's escrow policy, and the check
every sealing command runs before any work (``check_seal``).

The policy lives in the key store (keystore.json, MACed; ``KeyStore.escrow``), so every command
that seals applies it without a flag: ``encrypt --to`` (here or on a Dask cluster) and
``rewrap``, which re-seals a map to its recipients and to the escrow recipients in force.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from pqselfenc.cli._keyring import key_store, name_arg
from pqselfenc.cli._session import Session

if TYPE_CHECKING:
    from pqselfenc.keys import KeyStore

__all__ = ["add_parsers", "check_seal", "escrow_note"]


def add_parsers(actions: Any, common: argparse.ArgumentParser) -> None:
    """``escrow add|remove|list`` under ``recipients``."""
    escrow = actions.add_parser(
        "escrow", help="recipients every sealed map also goes to (break-glass keys)",
        description="Escrow recipients (an organisation's break-glass keys): every map this key "
        "store seals is also sealed to each of them, and a seal is refused when one is missing. "
        "Changes are audited; maps sealed earlier get escrow with 'pqselfenc rewrap'.",
    )  # fmt: skip
    escrow_actions = escrow.add_subparsers(dest="escrow_action", metavar="ACTION", required=True)
    add = escrow_actions.add_parser("add", parents=[common], help="add a recipient to escrow")
    add.add_argument("name", metavar="NAME", type=name_arg, help="a recipient (recipients add)")
    add.set_defaults(func=add_escrow)
    remove = escrow_actions.add_parser("remove", parents=[common], help="take one off escrow")
    remove.add_argument("name", metavar="NAME", type=name_arg)
    remove.set_defaults(func=remove_escrow)
    listing = escrow_actions.add_parser("list", parents=[common], help="the escrow recipients")
    listing.set_defaults(func=list_escrow)


def _doc(store: KeyStore, name: str) -> dict[str, Any]:
    if name not in store.recipients:
        return {"name": name, "missing": True}
    r = store.recipients.get(name)
    return {"name": name, "suite": r.suite, "key_id": r.key_id, "fingerprint": r.fingerprint,
            "missing": False}  # fmt: skip


def _line(doc: dict[str, Any]) -> str:
    if doc["missing"]:
        return f"{doc['name']}: MISSING from the recipients: every seal is refused until it is back"
    return f"{doc['name']}: {doc['suite']}, fingerprint {doc['fingerprint']}"


def add_escrow(session: Session) -> int:
    store = key_store(session)
    entry = store.escrow.add(session.args.name)
    doc = _doc(store, entry.name)
    session.console.result(doc, [f"escrow: {_line(doc)}",
                                 "maps sealed before keep their recipients: 'pqselfenc rewrap "
                                 "MAP...' seals them to the escrow recipients too"])  # fmt: skip
    return 0


def remove_escrow(session: Session) -> int:
    key_store(session).escrow.remove(session.args.name)
    session.console.result({"removed": session.args.name},
                           [f"removed {session.args.name} from escrow"])  # fmt: skip
    return 0


def list_escrow(session: Session) -> int:
    store = key_store(session)
    docs = [_doc(store, name) for name in store.escrow]
    session.console.result({"escrow": docs}, [_line(d) for d in docs] or ["no escrow recipients"])
    return 0


def check_seal(session: Session, names: list[str]) -> tuple[str, ...]:
    """The escrow recipients a seal to ``names`` adds, checked before any work: ``EscrowError``
    (audited) when one is missing or unusable, as the seal itself would be refused."""
    return key_store(session).escrow.check(names).escrow


def escrow_note(session: Session, escrow: tuple[str, ...], private_dedup: bool) -> None:
    """Say that escrow recipients cannot decrypt content keyed by this store's secret."""
    if escrow and private_dedup:
        session.console.warn(
            f"escrow recipients ({', '.join(escrow)}) can open the sealed maps but not decrypt "
            "this content: --private-dedup keys it with this key store's convergence secret, "
            "which they do not have (docs/guide.md, escrow and recovery)"
        )
