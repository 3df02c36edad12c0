"""Sealing, opening and rewrapping envelopes with a store's identities and recipients.

Every seal, open and rewrap is audited; a failed open or rewrap is recorded, then re-raised.
A failed MAC check of the metadata writes nothing, not even an audit event.

Trust in a signer is decided here, in one place (``trusted_signer``): a usable version of a local
identity, or a recipient's verifying key. A destroyed version's key is never trusted again, so
``rewrap`` cannot turn a signature made with a stolen, destroyed key into one by a current key.

Who a map is sealed to is decided here, in one place (``plan_seal``): the names asked for, then
every escrow recipient of the policy in force (``escrow_names``: the store's own list and
``KeyConfig.escrow``). ``Envelopes.seal`` is the store's only call of ``kem.seal`` and always seals
to a plan, so ``KeyStore.seal``, ``rewrap`` and every command that seals go through it
(``tests/test_escrow.py`` checks that no other call exists). A missing or unusable escrow
recipient is ``EscrowError``: nothing is sealed, and the refusal is audited.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pqselfenc.core.datamap import DataMap
from pqselfenc.error import (
    DecryptionError,
    Error,
    EscrowError,
    InvalidDataError,
    KeyDestroyedError,
    KeyNotFound,
    KeyStoreError,
    SignatureError,
)
from pqselfenc.kem import PublicKey, SigningKey, VerifyingKey, inspect, open_sealed, seal
from pqselfenc.keys._ledger import Ledger
from pqselfenc.keys._metadata import Identity, KeyVersion, Metadata
from pqselfenc.keys._secrets import Secrets
from pqselfenc.keys.config import KeyConfig, check_name

__all__ = [
    "Envelopes",
    "SealPlan",
    "TrustedSigner",
    "active_version",
    "escrow_names",
    "plan_seal",
    "trusted_signer",
]


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


@dataclass(frozen=True)
class SealPlan:
    """Who one seal goes to: ``names``, the names asked for and then the escrow recipients not
    among them, with their current ``keys`` in the same order; ``escrow``, the escrow
    recipients' names, and ``escrow_ids``, their key ids (hex)."""

    names: tuple[str, ...]
    keys: tuple[PublicKey, ...]
    escrow: tuple[str, ...]
    escrow_ids: tuple[str, ...]


def escrow_names(meta: Metadata, config: KeyConfig) -> tuple[str, ...]:
    """The escrow policy in force: the store's own list (keystore.json) and ``config.escrow``."""
    return tuple(sorted({*meta.escrow, *config.escrow}))


def _escrow_key(meta: Metadata, config: KeyConfig, name: str, suite: str) -> PublicKey:
    """The key of escrow recipient ``name``, usable for an envelope of ``suite``; else
    ``EscrowError`` saying why."""
    entry = meta.recipients.get(name)
    if entry is None:
        what = "a local identity, not a recipient" if name in meta.identities else "missing"
        raise EscrowError(f"escrow recipient {name!r} is {what}: no map is sealed without it "
                          "(add its public key with recipients.add, or change the escrow "
                          "policy)")  # fmt: skip
    try:
        key = PublicKey.parse(entry.public_key)
        config.check_suite(key.suite)
    except (InvalidDataError, ValueError) as exc:
        raise EscrowError(f"escrow recipient {name!r} has a key this store cannot seal to: "
                          f"{exc}") from exc  # fmt: skip
    if key.suite != suite:
        raise EscrowError(f"escrow recipient {name!r} has a {key.suite} key, this map's "
                          f"recipients {suite}: one envelope has one suite (the escrow holder "
                          f"needs a {suite} key)")  # fmt: skip
    return key


def plan_seal(meta: Metadata, config: KeyConfig, to: Sequence[str]) -> SealPlan:
    """The recipients of a seal to ``to`` under ``config`` and the store's escrow policy.

    ``ValueError`` for misuse (``to`` empty or not names, a suite the policy refuses, suites
    that differ); ``KeyNotFound`` for a name that is neither a recipient nor a local identity
    with an active version; ``EscrowError`` when an escrow recipient cannot be sealed to.
    """
    if isinstance(to, str) or not isinstance(to, Sequence) or not to:
        raise ValueError("to must be a non-empty list of names")
    asked = tuple(dict.fromkeys(check_name(name, "recipient name") for name in to))
    keys = [_public_key(meta, name) for name in asked]
    suites = sorted({config.check_suite(key.suite) for key in keys})
    if len(suites) > 1:
        raise ValueError(f"all recipients of one envelope must share one suite, got {suites}")
    escrow = escrow_names(meta, config)
    escrow_keys = {name: _escrow_key(meta, config, name, suites[0]) for name in escrow}
    extra = [name for name in escrow if name not in asked]
    return SealPlan((*asked, *extra), (*keys, *(escrow_keys[n] for n in extra)), escrow,
                    tuple(escrow_keys[n].key_id.hex() for n in escrow))  # fmt: skip


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


@dataclass(frozen=True)
class TrustedSigner:
    """Who signed an envelope, as far as this store trusts it: a local identity (``local``) or a
    recipient, and the verifying key its signature must verify under."""

    name: str
    key: VerifyingKey
    local: bool


def trusted_signer(meta: Metadata, claimed: VerifyingKey) -> TrustedSigner:
    """The trusted owner of the ``claimed`` signer key: a usable version of a local identity or
    a recipient's current verifying key. ``SignatureError`` for any other key, including a
    destroyed (or destroy-pending) version's: its signatures are no longer trusted."""
    wanted = claimed.key_id
    for ident in meta.identities.values():
        for v in ident.versions:
            if VerifyingKey.parse(v.verifying_key).key_id != wanted:
                continue
            if not v.usable:
                raise SignatureError(
                    f"signed by {ident.name} v{v.version}, which was destroyed: its signatures "
                    "are no longer trusted"
                )
            return TrustedSigner(ident.name, claimed, True)
    for r in meta.recipients.values():
        if r.verifying_key is not None and VerifyingKey.parse(r.verifying_key).key_id == wanted:
            return TrustedSigner(r.name, claimed, False)
    raise SignatureError(f"signed by {claimed.fingerprint}, a key this store does not trust")


def _resigner(signer: TrustedSigner | None, sign_as: str | None, drop: bool) -> str | None:
    """Who signs the rewrapped envelope: ``sign_as``; else the original signer when that is a
    local identity (never a signature the original did not carry); else nobody, which for an
    envelope a recipient signed needs ``drop`` (the signature would silently disappear)."""
    if sign_as is not None and drop:
        raise ValueError("give sign_as or drop_signature, not both")
    if sign_as is not None or drop or signer is None:
        return sign_as
    if signer.local:
        return signer.name
    raise KeyStoreError(
        f"the envelope is signed by recipient {signer.name!r}; rewrap cannot sign as them: "
        "sign it yourself (sign_as) or drop the signature explicitly (drop_signature)"
    )


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
        keys = [VerifyingKey.parse(v.verifying_key) for v in meta.identity(name).versions
                if v.usable]  # fmt: skip
        if not keys:
            raise KeyDestroyedError(f"{name!r} has no usable version: none of its keys is trusted")
        return keys

    def seal(self, data_map: DataMap, to: Sequence[str], sign_as: str | None) -> bytes:
        """Seal ``data_map`` to the current keys of ``to`` (local identities or recipients) and
        of every escrow recipient (``plan_seal``); a refusal that is a library error is audited.
        The seal event names everyone it went to, and the escrow recipients' key ids."""
        meta = self._ledger.read()  # outside the try: a failed MAC check writes nothing
        try:
            plan = plan_seal(meta, self._config, to)
            signer = None
            if sign_as is not None:
                ident, version = active_version(meta, sign_as)
                self._config.check_signature(ident.signature)
                signer = self._secrets.pair(ident, version).signing
            sealed = seal(data_map, plan.keys, signer)
        except Error as exc:
            self._ledger.record_failure("seal", exc, ",".join(to))  # names: plan_seal checked
            raise
        fields = {"envelope_id": inspect(sealed).envelope_id.hex(),
                  "key_id": ",".join(k.key_id.hex() for k in plan.keys)}  # fmt: skip
        if plan.escrow:
            fields["escrow"] = ",".join(plan.escrow_ids)
        self._ledger.record("seal", ",".join(plan.names), None, **fields)
        return sealed

    def open(self, sealed: bytes, signer: str | None) -> DataMap:
        """Open ``sealed``; audit success or failure (the failure is re-raised)."""
        return self._open(sealed, lambda: None if signer is None else self.verifying_keys(signer))

    def _open(self, sealed: bytes, expected: Callable[[], list[VerifyingKey] | None]) -> DataMap:
        envelope_id = None
        meta = self._ledger.read()  # outside the try: a failed MAC check writes nothing
        try:
            envelope_id = inspect(sealed).envelope_id.hex()
            data_map, ident, version = self._open_with(sealed, meta, expected())
        except Error as exc:
            self._ledger.record_failure("open", exc, envelope_id=envelope_id)
            raise
        self._ledger.record("open", ident.name, version, envelope_id=envelope_id)
        return data_map

    def _open_with(
        self, sealed: bytes, meta: Metadata, expected: list[VerifyingKey] | None
    ) -> tuple[DataMap, Identity, KeyVersion]:
        info = inspect(sealed)
        for ident, version in _addressed(meta, info.recipients):
            try:
                kem = self._secrets.pair(ident, version).kem
                return open_sealed(sealed, [kem], expected), ident, version
            except DecryptionError:
                continue
        raise DecryptionError("the envelope did not open with any local identity")

    def rewrap(self, sealed: bytes, sign_as: str | None, drop_signature: bool = False) -> bytes:
        """Open ``sealed`` with any usable version, re-seal to the same names' current keys.

        A signed envelope must carry a valid signature by a key this store trusts
        (``trusted_signer``), else ``SignatureError``; it is re-signed by ``sign_as``, or by the
        original signer when that is a local identity (its active version). An unsigned one
        stays unsigned unless ``sign_as`` is given. One signed by a recipient needs ``sign_as``
        or ``drop_signature``. Every refusal is audited as a failed ``rewrap``.
        """
        envelope_id = None
        try:
            info = inspect(sealed)
            envelope_id = info.envelope_id.hex()
            meta = self._ledger.read()
            names = _names_for(meta, info.recipients)
            signer = None if info.signer is None else trusted_signer(meta, info.signer)
            resign = _resigner(signer, sign_as, drop_signature)
            data_map = self._open(sealed, lambda: None if signer is None else [signer.key])
            new = self.seal(data_map, names, resign)
        except Error as exc:
            self._ledger.record_failure("rewrap", exc, envelope_id=envelope_id)
            raise
        detail = f"from envelope {info.envelope_id.hex()}"
        self._ledger.record("rewrap", ",".join(names), None,
                            envelope_id=inspect(new).envelope_id.hex(), detail=detail)  # fmt: skip
        return new
