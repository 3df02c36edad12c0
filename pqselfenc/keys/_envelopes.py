"""Sealing, opening and rewrapping envelopes with a store's identities and recipients.

Every seal, open and rewrap is audited; a failed open or rewrap is recorded, then re-raised.
A failed MAC check of the metadata writes nothing, not even an audit event.
"""

from __future__ import annotations

from collections.abc import Sequence

from pqselfenc.core.datamap import DataMap
from pqselfenc.error import DecryptionError, Error, InvalidDataError, KeyDestroyedError, KeyNotFound
from pqselfenc.kem import PublicKey, SigningKey, VerifyingKey, inspect, open_sealed, seal
from pqselfenc.keys._ledger import Ledger
from pqselfenc.keys._metadata import Identity, KeyVersion, Metadata
from pqselfenc.keys._secrets import Secrets
from pqselfenc.keys.config import KeyConfig

__all__ = ["Envelopes", "active_version"]


def active_version(meta: Metadata, name: str) -> tuple[Identity, KeyVersion]:
    """The identity ``name`` and its active version; ``KeyNotFound`` if it has none."""
    ident = meta.identity(name)
    if ident.active is None:
        raise KeyNotFound(f"identity {name!r} has no active version (rotate it)")
    return ident, ident.active


def _public_key(meta: Metadata, name: str) -> PublicKey:
    if name in meta.recipients:
        return PublicKey.parse(meta.recipients[name].public_key)
    return PublicKey.parse(active_version(meta, name)[1].public_key)


def _addressed(meta: Metadata, key_ids: Sequence[bytes]) -> list[tuple[Identity, KeyVersion]]:
    """Local versions an envelope is addressed to, usable first; raise if none is usable."""
    wanted = {k.hex() for k in key_ids}
    found = [(i, v) for i in meta.identities.values() for v in i.versions if v.key_id in wanted]
    usable = [(i, v) for i, v in found if v.usable]
    if found and not usable:
        raise KeyDestroyedError("the envelope is addressed only to destroyed key versions")
    if not usable:
        raise DecryptionError("the envelope did not open with any local identity")
    return sorted(usable, key=lambda iv: -iv[1].version)


def _names_for(meta: Metadata, key_ids: tuple[bytes, ...]) -> list[str]:
    owners: dict[str, str] = {}
    for ident in meta.identities.values():
        owners.update({v.key_id: ident.name for v in ident.versions})
    for r in meta.recipients.values():
        owners.update({k: r.name for k in (r.key_id, *r.previous_key_ids)})
    unknown = [k.hex()[:16] for k in key_ids if k.hex() not in owners]
    if unknown:
        raise KeyNotFound(f"envelope recipients not in this store: {', '.join(unknown)}")
    return list(dict.fromkeys(owners[k.hex()] for k in key_ids))


def _default_signer(meta: Metadata, signer_key_id: bytes | None) -> str | None:
    if signer_key_id is None:
        return None
    for ident in meta.identities.values():
        for v in ident.versions:
            if VerifyingKey.parse(v.verifying_key).key_id == signer_key_id:
                return ident.name
    return None


class Envelopes:
    """Seal to names, open with every usable local version, rewrap: what ``KeyStore.seal``,
    ``open_envelope`` and ``rewrap`` do, on the store's ledger and secrets."""

    def __init__(self, ledger: Ledger, secrets: Secrets, config: KeyConfig) -> None:
        self._ledger, self._secrets, self._config = ledger, secrets, config

    def __repr__(self) -> str:
        return f"Envelopes({self._ledger!r})"

    def signing_key(self, name: str) -> SigningKey:
        """The ML-DSA key of ``name``'s active version."""
        return self._secrets.pair(*active_version(self._ledger.read(), name)).signing

    def verifying_keys(self, name: str) -> list[VerifyingKey]:
        """Verifying keys trusted for ``name``: its usable versions', or the recipient's."""
        meta = self._ledger.read()
        if name in meta.recipients:
            text = meta.recipients[name].verifying_key
            if text is None:
                raise KeyNotFound(f"recipient {name!r} has no verifying key")
            return [VerifyingKey.parse(text)]
        versions = meta.identity(name).versions
        return [VerifyingKey.parse(v.verifying_key) for v in versions if v.usable]

    def seal(self, data_map: DataMap, to: Sequence[str], sign_as: str | None) -> bytes:
        """Seal ``data_map`` to the current keys of ``to`` (local identities or recipients)."""
        if isinstance(to, str) or not to:
            raise ValueError("to must be a non-empty list of names")
        meta = self._ledger.read()
        keys = [_public_key(meta, name) for name in to]
        for key in keys:
            self._config.check_suite(key.suite)
        signer = None
        if sign_as is not None:
            signer = self._secrets.pair(*active_version(meta, sign_as)).signing
        sealed = seal(data_map, keys, signer)
        info = inspect(sealed)
        self._ledger.record("seal", ",".join(to), None, envelope_id=info.envelope_id.hex(),
                            key_id=",".join(k.key_id.hex() for k in keys))  # fmt: skip
        return sealed

    def open(self, sealed: bytes, signer: str | None) -> DataMap:
        """Open ``sealed``; audit success or failure (the failure is re-raised)."""
        envelope_id = None
        meta = self._ledger.read()  # outside the try: a failed MAC check writes nothing
        try:
            envelope_id = inspect(sealed).envelope_id.hex()
            data_map, ident, version = self._open_with(sealed, meta, signer)
        except Error as exc:
            self._ledger.record_failure("open", exc, envelope_id=envelope_id)
            raise
        self._ledger.record("open", ident.name, version, envelope_id=envelope_id)
        return data_map

    def _open_with(
        self, sealed: bytes, meta: Metadata, signer: str | None
    ) -> tuple[DataMap, Identity, KeyVersion]:
        info = inspect(sealed)
        expected = None if signer is None else self.verifying_keys(signer)
        for ident, version in _addressed(meta, info.recipients):
            try:
                kem = self._secrets.pair(ident, version).kem
                return open_sealed(sealed, [kem], expected), ident, version
            except DecryptionError:
                continue
        raise DecryptionError("the envelope did not open with any local identity")

    def rewrap(self, sealed: bytes, sign_as: str | None) -> bytes:
        """Open ``sealed`` with any usable version, re-seal to the same names' current keys."""
        try:
            info = inspect(sealed)
        except InvalidDataError as exc:
            self._ledger.record_failure("rewrap", exc)
            raise
        meta = self._ledger.read()
        names = _names_for(meta, info.recipients)
        signer = sign_as or _default_signer(meta, info.signer_key_id)
        data_map = self.open(sealed, None)
        try:
            new = self.seal(data_map, names, signer)
        except Error as exc:
            self._ledger.record_failure("rewrap", exc, envelope_id=info.envelope_id.hex())
            raise
        detail = f"from envelope {info.envelope_id.hex()}"
        self._ledger.record("rewrap", ",".join(names), None,
                            envelope_id=inspect(new).envelope_id.hex(), detail=detail)  # fmt: skip
        return new
