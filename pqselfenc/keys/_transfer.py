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
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from pqselfenc.core import _primitives as P
from pqselfenc.error import Error, InvalidDataError, KeyStoreError, WeakSecretError
from pqselfenc.keys import _metadata as M
from pqselfenc.keys._entropy import check_passphrase
from pqselfenc.keys._json import Fields, loads
from pqselfenc.keys._ledger import Ledger
from pqselfenc.keys._material import KeyPair, decode_pair, encode_pair
from pqselfenc.keys._metadata import Identity, KeyState, KeyVersion
from pqselfenc.keys._secrets import Secrets
from pqselfenc.keys._vault import passphrase_decrypt, passphrase_encrypt
from pqselfenc.keys.config import KeyConfig, check_name

__all__ = ["Export", "export_identity", "import_identity", "parse_export"]

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


@dataclass(frozen=True)
class Export:
    """A parsed identity export: its name, algorithms and versions (each with its key pair)."""

    name: str
    suite: str
    signature: str
    versions: tuple[tuple[KeyVersion, KeyPair], ...] = field(repr=False)


def _algorithm(r: Fields, key: str, known: dict[str, int], check: Callable[[str], str]) -> str:
    value: str = r.text(key, max_length=64)
    if value not in known:
        raise InvalidDataError(f"the identity export names an unknown {key} {value[:20]!r}")
    try:
        return check(value)  # the store's policy: quantum_safe, min_entropy
    except ValueError as exc:
        raise WeakSecretError(f"the identity export's {key}: {exc}") from exc


def parse_export(plain: bytes, config: KeyConfig) -> Export:
    """The identity export's plaintext, parsed strictly: every field of its type and range,
    algorithms known and allowed by ``config``, every seed healthy (``check_seed``) and every
    key pair self-tested. ``InvalidDataError`` for what does not parse, ``WeakSecretError``
    for what ``config`` refuses; nothing else escapes, whatever the plaintext holds."""
    r = Fields(loads(plain, InvalidDataError, "the identity export"), InvalidDataError,
               "the identity export")  # fmt: skip
    if r.get("format", str) != _FORMAT or r.get("version", int) != 1:
        raise InvalidDataError("not a pqselfenc identity export of a known version")
    name = r.text("name", max_length=64)
    try:
        check_name(name, "the export's identity name")
    except ValueError as exc:
        raise InvalidDataError(str(exc)) from exc
    suite = _algorithm(r, "suite", P.SUITE_IDS, config.check_suite)
    signature = _algorithm(r, "signature", P.SIG_IDS, config.check_signature)
    items = r.get("versions", list)
    if not items:
        raise InvalidDataError("the identity export holds no key version")
    versions = tuple(_version(config, suite, signature, item, i) for i, item in enumerate(items))
    numbers = [v.version for v, _ in versions]
    active = sum(v.state is KeyState.ACTIVE for v, _ in versions)
    if len(set(numbers)) != len(numbers) or active > 1:
        raise InvalidDataError("the identity export has inconsistent versions")
    return Export(name, suite, signature, tuple(sorted(versions, key=lambda vp: vp[0].version)))


def _version(
    config: KeyConfig, suite: str, signature: str, item: object, index: int
) -> tuple[KeyVersion, KeyPair]:
    r = Fields(item, InvalidDataError, f"the identity export's versions[{index}]")
    number = r.integer("version", 1, P.MAX_KEY_VERSION)
    state_text = r.text("state", max_length=32)
    if state_text not in (KeyState.ACTIVE, KeyState.DECRYPT_ONLY):
        raise InvalidDataError("an exported key version is neither active nor decrypt-only")
    created = M.parse_time(r.get("created", str))
    retired_text = r.text("retired", optional=True, max_length=64)
    retired = None if retired_text is None else M.parse_time(retired_text)
    try:
        secret = base64.b64decode(r.text("secret", max_length=1024), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidDataError("an exported key version's secret is not base64") from exc
    pair = decode_pair(secret, suite, signature, config.min_entropy, imported=True)
    pair.self_test()
    version = KeyVersion(number, KeyState(state_text), created, str(pair.kem.recipient()),
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
    """Add the exported identity (under ``name`` if given); refuses weak or malformed secrets
    (each refusal is audited as a failed ``import``)."""
    plain = passphrase_decrypt(P.EXPORT_MAGIC, P.EXPORT_LABEL, blob, passphrase)
    if name is not None:
        check_name(name, "identity name")
    try:
        export = parse_export(plain, config)
    except Error as exc:
        ledger.record_failure("import", exc, name=name)
        raise
    name = name or export.name
    ident = Identity(name, export.suite, export.signature, tuple(v for v, _ in export.versions))
    with ledger.locked() as meta:
        if name in meta.identities or name in meta.recipients:
            raise KeyStoreError(f"{name!r} already exists; import under another name")
        for version, pair in export.versions:
            secrets.put(name, version.version, pair)  # secrets first, then the metadata
        ledger.commit(meta.with_identity(ident), "import", name, ident.active or ident.versions[-1])
    return replace(ident)
