"""The escrow policy: recipients (an organisation's break-glass keys) that every map a store seals
is also sealed to.

Two sources, one policy. The store's own list lives in keystore.json, under its MAC, and changes
only by an audited commit (``escrow-add``, ``escrow-remove``): every process that opens the store
applies it, the ``pqselfenc`` command included, without a flag, and it travels with the store's
backups. ``KeyConfig.escrow`` adds a program's own names for as long as it holds the store open.
The policy in force is the union: a program can add escrow recipients, never take the store's
away. Sealing applies it in one place (``_envelopes.plan_seal``).

Changing the policy changes no map already sealed: ``rewrap`` re-seals a map to its recipients
and to the escrow recipients in force, which is how escrow is added to older maps.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace

from pqselfenc.error import KeyNotFound, KeyStoreError
from pqselfenc.kem import PublicKey
from pqselfenc.keys._envelopes import SealPlan, escrow_names, plan_seal
from pqselfenc.keys._ledger import Ledger
from pqselfenc.keys._metadata import Metadata, RecipientEntry
from pqselfenc.keys.config import KeyConfig, check_name

__all__ = ["EscrowPolicy"]


class EscrowPolicy:
    """``store.escrow``: the escrow recipients in force (iterate, ``in``, ``len``), the store's
    own list (``stored``), audited changes to it (``add``, ``remove``), and ``check``.

    Made by ``KeyStore`` on its ledger (the metadata and audit log) and its policy (``config``).
    """

    def __init__(self, ledger: Ledger, config: KeyConfig) -> None:
        self._ledger, self._config = ledger, config

    def __repr__(self) -> str:
        return f"EscrowPolicy({list(self.names)})"

    @property
    def names(self) -> tuple[str, ...]:
        """The escrow recipients in force: the store's list and ``KeyConfig.escrow``, sorted."""
        return escrow_names(self._ledger.read(), self._config)

    @property
    def stored(self) -> tuple[str, ...]:
        """The store's own escrow recipients (keystore.json), sorted."""
        return self._ledger.read().escrow

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def add(self, name: str) -> RecipientEntry:
        """Add recipient ``name`` to the store's escrow policy (audited ``escrow-add`` with its
        key id and fingerprint); every later seal also goes to it.

        ``KeyNotFound`` if ``name`` is not a recipient, ``KeyStoreError`` if it is a local
        identity or already listed, ``ValueError`` for a suite this store's policy refuses.
        """
        check_name(name, "recipient name")
        with self._ledger.locked() as meta:
            entry = _recipient(meta, name)
            self._config.check_suite(PublicKey.parse(entry.public_key).suite)
            if name in meta.escrow:
                raise KeyStoreError(f"{name!r} is already an escrow recipient")
            escrow = tuple(sorted((*meta.escrow, name)))
            self._ledger.commit(replace(meta, escrow=escrow), "escrow-add", name,
                                key_id=entry.key_id, fingerprint=entry.fingerprint)  # fmt: skip
        return entry

    def remove(self, name: str) -> None:
        """Take ``name`` off the store's escrow policy (audited ``escrow-remove``). Maps already
        sealed to it stay so (``rewrap`` never drops a recipient). ``KeyNotFound`` if the store
        does not list it (a name only in ``KeyConfig.escrow`` is that program's to drop)."""
        with self._ledger.locked() as meta:
            if name not in meta.escrow:
                where = " (it is in KeyConfig.escrow)" if name in self._config.escrow else ""
                raise KeyNotFound(f"{name!r} is not in this store's escrow policy{where}")
            entry = meta.recipients.get(name)  # present: recipients.remove refuses escrow
            escrow = tuple(n for n in meta.escrow if n != name)
            self._ledger.commit(replace(meta, escrow=escrow), "escrow-remove", name, None,
                                key_id=entry and entry.key_id,
                                fingerprint=entry and entry.fingerprint)  # fmt: skip

    def check(self, to: Sequence[str]) -> SealPlan:
        """Who a seal to ``to`` would go to, checked as ``KeyStore.seal`` checks it (before any
        work is done): ``EscrowError`` when an escrow recipient is missing or unusable,
        ``KeyNotFound`` for an unknown name (both audited as a refused seal), ``ValueError``
        for misuse."""
        meta = self._ledger.read()  # a failed MAC check writes nothing
        try:
            return plan_seal(meta, self._config, to)
        except KeyStoreError as exc:
            self._ledger.record_failure("seal", exc, ",".join(to))
            raise


def _recipient(meta: Metadata, name: str) -> RecipientEntry:
    if name in meta.identities:
        raise KeyStoreError(f"{name!r} is a local identity: an escrow key is held by someone "
                            "else; add its public key as a recipient")  # fmt: skip
    try:
        return meta.recipients[name]
    except KeyError:
        raise KeyNotFound(f"no recipient named {name!r}: add its public key first") from None
