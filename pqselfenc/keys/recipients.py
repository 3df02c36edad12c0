"""The directory of named recipients: other people's public keys, with key ids and fingerprints."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

from pqselfenc.error import KeyNotFound, KeyStoreError
from pqselfenc.kem import PublicKey, VerifyingKey
from pqselfenc.keys._ledger import Ledger
from pqselfenc.keys._metadata import RecipientEntry
from pqselfenc.keys.config import KeyConfig, check_name

__all__ = ["RecipientDirectory"]


class RecipientDirectory:
    """``store.recipients``: add, replace, remove and look up named recipients (audited).

    Made by ``KeyStore`` on its ledger (the metadata and audit log) and its policy (``config``).
    """

    def __init__(self, ledger: Ledger, config: KeyConfig) -> None:
        self._ledger, self._config = ledger, config

    def __repr__(self) -> str:
        return f"RecipientDirectory({sorted(self._entries())})"

    def _entries(self) -> dict[str, RecipientEntry]:
        return dict(self._ledger.read().recipients)

    def __iter__(self) -> Iterator[RecipientEntry]:
        return iter(sorted(self._entries().values(), key=lambda r: r.name))

    def __len__(self) -> int:
        return len(self._entries())

    def __contains__(self, name: object) -> bool:
        return name in self._entries()

    def get(self, name: str) -> RecipientEntry:
        """The recipient ``name`` (fresh from the metadata); ``KeyNotFound`` if there is none."""
        try:
            return self._entries()[name]
        except KeyError:
            raise KeyNotFound(f"no recipient named {name!r}") from None

    def add(self, name: str, public_key: str | PublicKey, *, verifying_key: str | None = None,
            replace_existing: bool = False) -> RecipientEntry:  # fmt: skip
        """Add ``name`` with its public key text (and optionally its ML-DSA verifying key).

        ``InvalidDataError`` for key text that does not parse, ``ValueError`` for a suite the
        policy refuses (``quantum_safe``). A name that exists is refused unless
        ``replace_existing``; the old key id is then kept so ``rewrap`` still recognises it.
        """
        check_name(name, "recipient name")
        key = public_key if isinstance(public_key, PublicKey) else PublicKey.parse(public_key)
        self._config.check_suite(key.suite)
        vk = None if verifying_key is None else str(VerifyingKey.parse(verifying_key))
        with self._ledger.locked() as meta:
            if name in meta.identities:
                raise KeyStoreError(f"{name!r} is a local identity, not a recipient")
            entry = RecipientEntry(name, key.suite, str(key), key.key_id.hex(),
                                   key.fingerprint, self._ledger.clock(), vk)  # fmt: skip
            old = meta.recipients.get(name)
            if old is not None and not replace_existing:
                raise KeyStoreError(
                    f"recipient {name!r} already exists; replace it explicitly to change its key"
                )
            if old is not None and old.key_id != entry.key_id:
                entry = replace(entry, previous_key_ids=(*old.previous_key_ids, old.key_id))
            self._ledger.commit(meta.with_recipients({**meta.recipients, name: entry}),
                                "recipient-add", name, key_id=entry.key_id,
                                fingerprint=entry.fingerprint)  # fmt: skip
        return entry

    def remove(self, name: str) -> None:
        """Forget ``name`` (envelopes already sealed to it are unaffected). An escrow recipient
        in force is refused (``KeyStoreError``): take it out of the escrow policy first."""
        with self._ledger.locked() as meta:
            entry = meta.recipients.get(name)
            if entry is None:
                raise KeyNotFound(f"no recipient named {name!r}")
            if name in meta.escrow or name in self._config.escrow:
                raise KeyStoreError(f"{name!r} is an escrow recipient: every seal needs it; "
                                    "remove it from the escrow policy first")  # fmt: skip
            rest = {n: r for n, r in meta.recipients.items() if n != name}
            self._ledger.commit(meta.with_recipients(rest), "recipient-remove", name,
                                key_id=entry.key_id, fingerprint=entry.fingerprint)  # fmt: skip
