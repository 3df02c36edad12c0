"""Passphrase-protected export and import of an identity (argon2id -> AES-256-GCM).

The plaintext is JSON: ``{"format": "pqselfenc-identity", "version": 1, "name", "suite",
"signature", "versions": [{"version", "state", "created", "retired", "secret"}]}`` where
``secret`` is the base64 of the version's seed record (see ``_material``). Destroyed versions are
never exported: there is nothing left to export.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import replace
from typing import Any

from pqselfenc.core import _primitives as P
from pqselfenc.error import Error, InvalidDataError, KeyStoreError
from pqselfenc.keys import _metadata as M
from pqselfenc.keys._entropy import check_passphrase
from pqselfenc.keys._json import loads
from pqselfenc.keys._ledger import Ledger
from pqselfenc.keys._material import KeyPair, decode_pair, encode_pair
from pqselfenc.keys._metadata import Identity, KeyState, KeyVersion
from pqselfenc.keys._secrets import Secrets
from pqselfenc.keys._vault import passphrase_decrypt, passphrase_encrypt
from pqselfenc.keys.config import KeyConfig, check_name

__all__ = ["export_identity", "import_identity"]

_FORMAT = "pqselfenc-identity"


def export_identity(
    ledger: Ledger, secrets: Secrets, config: KeyConfig, name: str, passphrase: str
) -> bytes:
    """Every usable version of ``name``, encrypted under ``passphrase`` (strength-checked)."""
    check_passphrase(passphrase, config.min_passphrase_bits)
    ident = ledger.read().identity(name)
    versions = [
        {"version": v.version, "state": v.state.value, "created": M.fmt_time(v.created),
         "retired": None if v.retired is None else M.fmt_time(v.retired),
         "secret": base64.b64encode(encode_pair(secrets.pair(ident, v))).decode("ascii")}
        for v in ident.versions if v.usable
    ]  # fmt: skip
    doc = {"format": _FORMAT, "version": 1, "name": name, "suite": ident.suite,
           "signature": ident.signature, "versions": versions}  # fmt: skip
    blob = passphrase_encrypt(P.EXPORT_MAGIC, P.EXPORT_LABEL, json.dumps(doc).encode(), passphrase)
    active = ident.active
    ledger.record("export", name, active or ident.versions[-1])
    return blob


def _parse(plain: bytes) -> dict[str, Any]:
    doc = loads(plain, InvalidDataError, "the identity export")
    try:
        ok = doc["format"] == _FORMAT and doc["version"] == 1 and isinstance(doc["versions"], list)
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidDataError("the identity export does not parse") from exc
    if not ok or not doc["versions"]:
        raise InvalidDataError("not a pqselfenc identity export of a known version")
    return dict(doc)


def _version(config: KeyConfig, doc: dict[str, Any], item: Any) -> tuple[KeyVersion, KeyPair]:
    try:
        state = KeyState(item["state"])
        secret = base64.b64decode(item["secret"], validate=True)
        number, created = item["version"], M.parse_time(item["created"])
        retired = None if item["retired"] is None else M.parse_time(item["retired"])
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise InvalidDataError("an exported key version does not parse") from exc
    if state is KeyState.DESTROYED or type(number) is not int or number < 1:
        raise InvalidDataError("an exported key version is inconsistent")
    pair = decode_pair(secret, doc["suite"], doc["signature"], config.min_entropy)
    pair.self_test()
    version = KeyVersion(number, state, created, str(pair.kem.recipient()),
                         str(pair.signing.verifying_key()), pair.kem.key_id.hex(),
                         pair.kem.fingerprint, retired)  # fmt: skip
    return version, pair


def import_identity(
    ledger: Ledger,
    secrets: Secrets,
    config: KeyConfig,
    blob: bytes,
    passphrase: str,
    name: str | None,
) -> Identity:
    """Add the exported identity (under ``name`` if given); refuses weak or malformed secrets."""
    doc = _parse(passphrase_decrypt(P.EXPORT_MAGIC, P.EXPORT_LABEL, blob, passphrase))
    name = check_name(name or doc.get("name"), "identity name")
    try:
        config.check_suite(doc["suite"])
        config.check_signature(doc["signature"])
        pairs = [_version(config, doc, item) for item in doc["versions"]]
    except Error as exc:
        ledger.record_failure("import", exc, name=name)
        raise
    numbers = [v.version for v, _ in pairs]
    if len(set(numbers)) != len(numbers) or sum(v.state is KeyState.ACTIVE for v, _ in pairs) > 1:
        raise InvalidDataError("the identity export has inconsistent versions")
    ident = Identity(name, doc["suite"], doc["signature"],
                     tuple(sorted((v for v, _ in pairs), key=lambda v: v.version)))  # fmt: skip
    with ledger.locked() as meta:
        if name in meta.identities or name in meta.recipients:
            raise KeyStoreError(f"{name!r} already exists; import under another name")
        for version, pair in pairs:
            secrets.put(name, version.version, pair)  # secrets first, then the metadata
        ledger.commit(meta.with_identity(ident), "import", name, ident.active or ident.versions[-1])
    return replace(ident)
