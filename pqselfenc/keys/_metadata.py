"""Key store metadata: identities, key versions and their states, recipients; strict JSON.

Written atomically (temp + fsync + rename + fsync folder) and only under the store's file lock,
always re-read under that lock before a change, so two processes never lose each other's updates.
docs/format.md section 4 describes every field.

Authenticated: every write carries ``mac`` = HMAC-SHA3-256 under a key derived from the store's
root secret (``P.metadata_mac_key``) over the canonical JSON of the document without ``mac``, and
``generation``, one more than the document it replaces. Every read with the key checks the MAC
before any field is used (``IntegrityError`` if it is missing or wrong); reading without the key
(``mac_key=None``) is only for learning which backend holds the secret, before it is unlocked.
A MAC alone cannot catch a rollback to an older, validly MACed copy: the audit event of every
write carries the written file's ``mac`` (``meta_mac``), and the ledger binds the two at open.

Format version 2 (this release) adds ``audit_mac_from``, the first audit seq whose line must carry
a MAC; version 1 files (the release before) lack it and are upgraded when the store is opened.
Version 3 is version 2 with a non-empty ``escrow`` (the store's escrow recipients): a release that
does not know escrow refuses such a store rather than seal without it.
Optional, under the MAC: ``anchor`` (where the rollback anchor is: ``token``, ``keyring``) and, for
the pkcs11 backend, ``pkcs11`` (the token and the wrapping key's label and id).
"""

from __future__ import annotations

import hmac
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from pqselfenc.core import _durable
from pqselfenc.core import _primitives as P
from pqselfenc.error import IntegrityError, InvalidDataError, KeyNotFound, KeyStoreError
from pqselfenc.keys._json import Fields, canonical, loads
from pqselfenc.keys.config import as_names, check_name

__all__ = [
    "ANCHORS",
    "BACKENDS",
    "FORMAT",
    "STAGED_NAME",
    "Identity",
    "KeyState",
    "KeyVersion",
    "Metadata",
    "RecipientEntry",
    "TokenKey",
    "commit_staged",
    "fmt_time",
    "parse_time",
    "read_bytes",
    "read_committed",
    "read_metadata",
    "write_metadata",
]

FORMAT = "pqselfenc-keystore"
BACKENDS = ("file", "keyring", "pkcs11")
ANCHORS = {"pkcs11": ("token",), "keyring": ("keyring", None), "file": (None,)}  # by backend
_VERSION = 2  # what this release writes; 1 (no audit_mac_from) is still read, then upgraded
_ESCROW_VERSION = 3  # version 2 plus a non-empty "escrow": older releases refuse it
_VERSIONS = (1, 2, _ESCROW_VERSION)
_MAX_BYTES = 64 << 20  # refuse absurd metadata files before parsing them
_STORE_ID = re.compile(r"[0-9a-f]{32}")  # names a keyring service: never anything else


class KeyState(StrEnum):
    """Life cycle of a key version: active -> decrypt-only -> destroy-pending -> destroyed (or
    active -> destroy-pending). ``destroy-pending``: marked for destruction (never used again),
    but the backend has not yet confirmed that its secret is deleted."""

    ACTIVE = "active"
    DECRYPT_ONLY = "decrypt-only"
    DESTROY_PENDING = "destroy-pending"
    DESTROYED = "destroyed"


def fmt_time(when: datetime) -> str:
    """ISO 8601 UTC with microseconds and a ``Z``; naive datetimes are refused."""
    if not isinstance(when, datetime) or when.utcoffset() is None:
        raise ValueError("times must be timezone-aware datetimes (the clock must return UTC)")
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")  # what fmt_time writes


def parse_time(text: object) -> datetime:
    """A time as ``fmt_time`` writes it (``YYYY-MM-DDTHH:MM:SS.ffffffZ``); else
    ``InvalidDataError``."""
    if not isinstance(text, str) or not _TIME.fullmatch(text):
        raise InvalidDataError("time must be an ISO 8601 UTC string YYYY-MM-DDTHH:MM:SS.ffffffZ")
    try:
        return datetime.fromisoformat(text[:-1]).replace(tzinfo=UTC)
    except ValueError as exc:
        raise InvalidDataError(f"bad time {text[:40]!r}") from exc


@dataclass(frozen=True)
class KeyVersion:
    """One version of an identity: public halves, state and the times it changed state."""

    version: int
    state: KeyState
    created: datetime
    public_key: str = field(repr=False)
    verifying_key: str = field(repr=False)
    key_id: str
    fingerprint: str
    retired: datetime | None = None
    destroyed: datetime | None = None

    @property
    def usable(self) -> bool:
        """True for active and decrypt-only versions (they open envelopes); False once marked
        for destruction (``destroy-pending``) or destroyed."""
        return self.state in (KeyState.ACTIVE, KeyState.DECRYPT_ONLY)


@dataclass(frozen=True)
class Identity:
    """A local identity: a KEM key and an ML-DSA key per version, newest last."""

    name: str
    suite: str
    signature: str
    versions: tuple[KeyVersion, ...]

    @property
    def active(self) -> KeyVersion | None:
        """The version new envelopes are sealed to, or None when every version is retired."""
        return next((v for v in self.versions if v.state is KeyState.ACTIVE), None)

    @property
    def latest(self) -> int:
        """The highest version number (0 for an identity without versions)."""
        return max((v.version for v in self.versions), default=0)

    def version(self, number: int) -> KeyVersion:
        """Version ``number``; ``KeyNotFound`` if the identity has none."""
        for v in self.versions:
            if v.version == number:
                return v
        raise KeyNotFound(f"identity {self.name!r} has no version {number}")

    def with_version(self, new: KeyVersion) -> Identity:
        """A copy with ``new`` added, or replacing the version of the same number (kept sorted)."""
        rest = tuple(v for v in self.versions if v.version != new.version)
        return replace(self, versions=tuple(sorted((*rest, new), key=lambda v: v.version)))


@dataclass(frozen=True)
class RecipientEntry:
    """A named recipient in the directory: public key text, key id, fingerprint."""

    name: str
    suite: str
    public_key: str = field(repr=False)
    key_id: str
    fingerprint: str
    added: datetime
    verifying_key: str | None = field(default=None, repr=False)
    previous_key_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class TokenKey:
    """The pkcs11 backend's wrapping key: the token's label, the key's ``CKA_LABEL`` and
    ``CKA_ID`` (hex), recorded at creation; reopening uses exactly this key."""

    token: str
    key_label: str
    key_id: str


@dataclass(frozen=True)
class Metadata:
    """Everything the store knows that is not secret."""

    store_id: str
    backend: str
    created: datetime
    audit_key: str
    identities: Mapping[str, Identity] = field(default_factory=dict)
    recipients: Mapping[str, RecipientEntry] = field(default_factory=dict)
    generation: int = 0  # writes so far: each write stores one more (0 = never written)
    audit_mac_from: int | None = None  # first audit seq that carries a MAC; None: format 1
    escrow: tuple[str, ...] = ()  # recipients every sealed map also goes to (sorted)
    mac: str = field(default="", compare=False, repr=False)  # the file's own MAC (hex), if read
    anchor: str | None = None  # where the rollback anchor is: "token", "keyring", None (none)
    token_key: TokenKey | None = None  # the pkcs11 backend's wrapping key

    def identity(self, name: str) -> Identity:
        try:
            return self.identities[name]
        except KeyError:
            raise KeyNotFound(f"no identity named {name!r}") from None

    def with_identity(self, ident: Identity) -> Metadata:
        return replace(self, identities={**self.identities, ident.name: ident})

    def with_recipients(self, recipients: Mapping[str, RecipientEntry]) -> Metadata:
        return replace(self, recipients=dict(recipients))


def _opt_time(when: datetime | None) -> str | None:
    return None if when is None else fmt_time(when)


def _version_json(v: KeyVersion) -> dict[str, Any]:
    return {
        "version": v.version,
        "state": v.state.value,
        "created": fmt_time(v.created),
        "retired": _opt_time(v.retired),
        "destroyed": _opt_time(v.destroyed),
        "public_key": v.public_key,
        "verifying_key": v.verifying_key,
        "key_id": v.key_id,
        "fingerprint": v.fingerprint,
    }


def _recipient_json(r: RecipientEntry) -> dict[str, Any]:
    return {
        "suite": r.suite,
        "public_key": r.public_key,
        "key_id": r.key_id,
        "fingerprint": r.fingerprint,
        "added": fmt_time(r.added),
        "verifying_key": r.verifying_key,
        "previous_key_ids": list(r.previous_key_ids),
    }


def _document(meta: Metadata) -> dict[str, Any]:
    head: dict[str, Any] = {"format": FORMAT, "version": 1}
    if meta.audit_mac_from is not None:
        head = {"format": FORMAT, "version": _VERSION, "audit_mac_from": meta.audit_mac_from}
    if meta.escrow:  # never dropped: a store of the release before is upgraded at open first
        if meta.audit_mac_from is None:
            raise KeyStoreError("an escrow policy needs a store of this release: reopen it")
        head |= {"version": _ESCROW_VERSION, "escrow": sorted(meta.escrow)}
    if meta.anchor is not None:
        head["anchor"] = meta.anchor
    if meta.token_key is not None:
        key = meta.token_key
        head["pkcs11"] = {"token": key.token, "key_label": key.key_label, "key_id": key.key_id}
    return {
        **head,
        "generation": meta.generation,
        "store_id": meta.store_id,
        "backend": meta.backend,
        "created": fmt_time(meta.created),
        "audit_key": meta.audit_key,
        "identities": {
            name: {
                "suite": i.suite,
                "signature": i.signature,
                "versions": [_version_json(v) for v in i.versions],
            }
            for name, i in sorted(meta.identities.items())
        },
        "recipients": {n: _recipient_json(r) for n, r in sorted(meta.recipients.items())},
    }


def _mac(doc: dict[str, Any], mac_key: bytes) -> str:
    return P.metadata_mac(mac_key, canonical(doc)).hex()


def to_json(meta: Metadata, mac_key: bytes) -> bytes:
    """The file's bytes: the document of ``meta`` with its ``mac`` under ``mac_key``."""
    return _encode(meta, mac_key)[0]


def _encode(meta: Metadata, mac_key: bytes) -> tuple[bytes, str]:
    doc = _document(meta)
    doc["mac"] = _mac(doc, mac_key)
    return json.dumps(doc, indent=1, sort_keys=True).encode() + b"\n", doc["mac"]


def _check_mac(doc: dict[str, Any], mac_key: bytes) -> None:
    """``IntegrityError`` unless ``doc`` carries the right ``mac`` (checked before any field)."""
    if "mac" not in doc:
        raise IntegrityError(
            "keystore.json has no MAC: it was not written by this version of pqselfenc, or "
            "someone removed it; refusing to trust its keys and states"
        )
    body = {k: v for k, v in doc.items() if k != "mac"}
    stored = doc["mac"]
    if not isinstance(stored, str) or not hmac.compare_digest(
        stored.encode("ascii", "replace"), _mac(body, mac_key).encode("ascii")
    ):
        raise IntegrityError(
            "keystore.json failed its MAC check: it was changed outside pqselfenc (public keys, "
            "states or recipients may have been swapped) or belongs to another store"
        )


class _Reader(Fields):
    """Strict field access: every missing field, wrong type or out-of-range integer is an
    ``InvalidDataError``."""

    def __init__(self, obj: object, where: str) -> None:
        super().__init__(obj, InvalidDataError, f"keystore metadata: {where}")

    def time(self, key: str, optional: bool = False) -> datetime | None:
        value = self.get(key, (str, type(None)) if optional else str)
        return None if value is None else parse_time(value)


_MARKED = (KeyState.DESTROY_PENDING, KeyState.DESTROYED)  # the states that carry "destroyed"


def _parse_version(obj: object, where: str) -> KeyVersion:
    r = _Reader(obj, where)
    try:
        state = KeyState(r.get("state", str))
    except ValueError as exc:
        raise InvalidDataError(f"keystore metadata: {where}.state is unknown") from exc
    created = r.time("created")
    assert created is not None
    version = KeyVersion(
        version=r.integer("version", 1, P.MAX_KEY_VERSION),
        state=state,
        created=created,
        public_key=r.get("public_key", str),
        verifying_key=r.get("verifying_key", str),
        key_id=r.get("key_id", str),
        fingerprint=r.get("fingerprint", str),
        retired=r.time("retired", optional=True),
        destroyed=r.time("destroyed", optional=True),
    )
    if (state in _MARKED) != (version.destroyed is not None):
        raise InvalidDataError(f"keystore metadata: {where} is inconsistent")
    return version


def _name(name: str, where: str) -> str:
    try:
        return check_name(name, where)
    except ValueError as exc:
        detail = f"keystore metadata: {where} {name[:70]!r} is not a valid name"
        raise InvalidDataError(detail) from exc


def _algorithm(r: _Reader, key: str, known: Mapping[str, int]) -> str:
    value: str = r.get(key, str)
    if value not in known:
        raise InvalidDataError(f"{r.where}.{key} names no known algorithm")
    return value


def _parse_identity(name: str, obj: object) -> Identity:
    name = _name(name, "identity")
    r = _Reader(obj, f"identities.{name}")
    versions = tuple(
        _parse_version(v, f"identities.{name}.versions[{i}]")
        for i, v in enumerate(r.get("versions", list))
    )
    numbers = [v.version for v in versions]
    active = [v for v in versions if v.state is KeyState.ACTIVE]
    if numbers != sorted(set(numbers)) or len(active) > 1:
        raise InvalidDataError(f"keystore metadata: identity {name!r} has inconsistent versions")
    suite, signature = _algorithm(r, "suite", P.SUITE_IDS), _algorithm(r, "signature", P.SIG_IDS)
    return Identity(name, suite, signature, versions)


def _parse_recipient(name: str, obj: object) -> RecipientEntry:
    name = _name(name, "recipient")
    r = _Reader(obj, f"recipients.{name}")
    previous = r.get("previous_key_ids", list)
    if not all(isinstance(k, str) and len(k) <= 64 for k in previous):
        raise InvalidDataError(f"keystore metadata: recipients.{name}.previous_key_ids")
    added = r.time("added")
    assert added is not None
    return RecipientEntry(
        name=name,
        suite=_algorithm(r, "suite", P.SUITE_IDS),
        public_key=r.get("public_key", str),
        key_id=r.get("key_id", str),
        fingerprint=r.get("fingerprint", str),
        added=added,
        verifying_key=r.get("verifying_key", (str, type(None))),
        previous_key_ids=tuple(previous),
    )


def _escrow(r: _Reader, doc: dict[str, Any], version: int) -> tuple[str, ...]:
    """The escrow names: a non-empty, sorted list of names exactly in a version 3 file."""
    if version != _ESCROW_VERSION:
        if "escrow" in doc:
            raise InvalidDataError(f"keystore metadata: escrow in a version {version} file")
        return ()
    names = r.get("escrow", list)
    try:
        escrow = as_names(names, "escrow")
    except (TypeError, ValueError) as exc:
        raise InvalidDataError("keystore metadata: escrow is not a list of names") from exc
    if not escrow or list(escrow) != sorted(names):
        raise InvalidDataError("keystore metadata: escrow is empty, unsorted or repeats a name")
    return escrow


def from_json(data: bytes, mac_key: bytes | None) -> Metadata:
    """Parse strict JSON, check the MAC under ``mac_key`` (``IntegrityError``), then the fields
    (``InvalidDataError``). ``mac_key=None`` skips the MAC: only to learn the backend."""
    doc = loads(data, InvalidDataError, "keystore metadata")
    r = _Reader(doc, "top level")
    if mac_key is not None:
        _check_mac(doc, mac_key)
    version = r.get("version", int)
    if r.get("format", str) != FORMAT or version not in _VERSIONS:
        raise InvalidDataError("not pqselfenc keystore metadata of a known version")
    mac_from = None
    if version >= 2:
        mac_from = r.integer("audit_mac_from", 1, P.MAX_COUNTER)
    elif "audit_mac_from" in doc:
        raise InvalidDataError("keystore metadata: audit_mac_from in a version 1 file")
    escrow = _escrow(r, doc, version)
    generation = r.integer("generation", 1, P.MAX_COUNTER)
    created = r.time("created")
    assert created is not None
    backend = r.get("backend", str)
    if backend not in BACKENDS:
        raise InvalidDataError("keystore metadata: backend is not 'file', 'keyring' or 'pkcs11'")
    store_id = r.get("store_id", str)
    if not _STORE_ID.fullmatch(store_id):
        raise InvalidDataError("keystore metadata: store_id is not 32 lowercase hex digits")
    anchor, token_key = _anchor(r, backend), _token_key(r, backend, store_id)
    return Metadata(
        store_id=store_id,
        backend=backend,
        created=created,
        audit_key=r.get("audit_key", str),
        identities={n: _parse_identity(n, o) for n, o in r.get("identities", dict).items()},
        recipients={n: _parse_recipient(n, o) for n, o in r.get("recipients", dict).items()},
        generation=generation,
        audit_mac_from=mac_from,
        escrow=escrow,
        mac=doc["mac"] if isinstance(doc.get("mac"), str) else "",
        anchor=anchor,
        token_key=token_key,
    )


def _anchor(r: _Reader, backend: str) -> str | None:
    """``anchor``: absent for the file backend, ``token`` for pkcs11, ``keyring`` or absent
    (a store of the release before, anchored at its first open) for keyring."""
    value: str | None = r.text("anchor", optional=True, max_length=16)
    if value not in ANCHORS[backend]:
        raise InvalidDataError(f"keystore metadata: anchor {value!r} for the {backend} backend")
    return value


def _token_key(r: _Reader, backend: str, store_id: str) -> TokenKey | None:
    """``pkcs11``: present exactly for the pkcs11 backend, naming this store's key."""
    if backend != "pkcs11":
        if "pkcs11" in r.obj:
            raise InvalidDataError("keystore metadata: pkcs11 for another backend")
        return None
    k = _Reader(r.get("pkcs11", dict), "pkcs11")
    key = TokenKey(k.text("token", max_length=32), k.text("key_label", max_length=64),
                   k.text("key_id", max_length=32))  # fmt: skip
    ok_id = _STORE_ID.fullmatch(key.key_id)  # CKA_ID: P.P11_KEY_ID_SIZE bytes, 32 hex digits
    if key.key_label != P.P11_KEY_LABEL_PREFIX + store_id or not ok_id:
        raise InvalidDataError("keystore metadata: pkcs11 names no key of this store")
    return key


def read_bytes(path: Path) -> bytes:
    """The metadata file's bytes, refusing absurd sizes before anything parses them, and
    anything but a regular file (never read through a link); absent: ``FileNotFoundError``."""
    try:
        return _durable.read_file(path, limit=_MAX_BYTES)
    except _durable.FileTooLargeError as exc:
        raise InvalidDataError("keystore metadata is larger than 64 MiB") from exc
    except _durable.UnsafeFileError as exc:
        raise KeyStoreError(f"cannot read {_durable.describe(exc)}") from exc


def read_metadata(path: Path, mac_key: bytes | None) -> Metadata:
    """Parse the metadata file; ``IntegrityError`` if its MAC under ``mac_key`` is missing or
    wrong, ``InvalidDataError`` if it is malformed. ``mac_key=None``: see ``from_json``."""
    return from_json(read_bytes(path), mac_key)


def write_metadata(path: Path, meta: Metadata, mac_key: bytes) -> Metadata:
    """Atomically replace the metadata file with ``meta`` as its next generation, MACed under
    ``mac_key`` (the caller holds the store lock, and read ``meta`` under it); what was written."""
    if meta.generation >= P.MAX_COUNTER:
        raise KeyStoreError("keystore.json has reached the largest generation")
    written = replace(meta, generation=meta.generation + 1)
    data, mac = _encode(written, mac_key)
    try:
        _durable.replace_file(path, data)
    except OSError as exc:
        raise KeyStoreError(f"cannot write {path.name}: {exc.strerror}") from exc
    return replace(written, mac=mac)


def read_committed(directory: Path, mac_key: bytes) -> tuple[Metadata, Metadata | None]:
    """keystore.json and keystore.json.staged of ``directory``, both MAC-checked (the staged
    file is None when absent or not written by this store). Read under the store lock."""
    meta = read_metadata(directory / "keystore.json", mac_key)
    try:
        staged = read_metadata(directory / STAGED_NAME, mac_key)
    except FileNotFoundError:
        return meta, None
    except (IntegrityError, InvalidDataError):
        return meta, None  # not a file this store wrote: never trusted
    return meta, staged


STAGED_NAME = "keystore.json.staged"  # the next generation, before its audit event lands


def commit_staged(staged: Path, path: Path) -> None:
    """Rename the staged next generation over keystore.json, durably (under the store lock)."""
    try:
        os.replace(staged, path)
        _durable.sync_dir(path.parent)
    except OSError as exc:
        raise KeyStoreError(f"cannot commit {path.name}: {exc.strerror}") from exc
