"""Secrets wrapped by a non-extractable AES-256 key inside a PKCS#11 token (HSM, SoftHSM).

The token generates one AES-256 key per store (label ``pqselfenc-<store id>``, a random 16-byte
``CKA_ID``; ``CKA_TOKEN``, ``CKA_PRIVATE``, ``CKA_SENSITIVE`` true, ``CKA_EXTRACTABLE`` false,
encrypt/decrypt only). Every secret is encrypted by the token with ``CKM_AES_GCM`` (fresh random
96-bit IV, 128-bit tag, AAD binding the store id, the name and the version) and the directory holds
only those blobs, ``secrets/NAME.vN.p11``; each ``get`` decrypts in the token again (nothing is
cached). Deleting the token key crypto-shreds the whole store. Byte layout: docs/format.md 4.7.

The token also holds the store's rollback anchor (``read_anchor``/``write_anchor``): a private
data object recording the newest generation and audit head, which a copy of an older directory
cannot rewind. Configuration: ``PQSELFENC_PKCS11_MODULE``, ``PQSELFENC_PKCS11_TOKEN``,
``PQSELFENC_PKCS11_PIN`` (or the arguments of ``Pkcs11Backend.open``).
"""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pqselfenc.core import _primitives as P
from pqselfenc.error import (
    IntegrityError,
    InvalidDataError,
    KeyDestroyedError,
    KeyNotFound,
    KeyStoreError,
    TokenKeyError,
    TokenUnavailable,
)
from pqselfenc.keys import _p11anchor
from pqselfenc.keys._anchor import Anchor
from pqselfenc.keys._p11files import (
    durable_unlink,
    durable_write,
    folder,
    make_folders,
    read_regular,
)
from pqselfenc.keys._pkcs11 import (
    ENV_MODULE,
    ENV_PIN,
    ENV_TOKEN,
    Capabilities,
    TokenSession,
    connect,
    destroy_object,
    private_objects,
)

if TYPE_CHECKING:
    import pkcs11

__all__ = ["Anchor", "Capabilities", "Pkcs11Backend"]

_HEAD = struct.Struct(f">8sB{P.P11_KEY_ID_SIZE}s")
_U32 = struct.Struct(">I")
_STORE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
_NAME = re.compile(r"[a-z0-9_][a-z0-9._-]{0,63}")
_MAX_BLOB = _HEAD.size + P.P11_IV_SIZE + P.P11_MAX_SECRET + P.P11_TAG_SIZE
_MAX_VERSION = (1 << 32) - 1


def _check_address(name: object, version: object) -> tuple[str, int]:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError("secret name must match [a-z0-9_][a-z0-9._-]{0,63}")
    if not isinstance(version, int) or isinstance(version, bool) or not 0 < version <= _MAX_VERSION:
        raise ValueError("version must be an int in 1..2^32-1")
    return name, version


def _aad(store_id: str, header: bytes, name: str, version: int) -> bytes:
    """Label || len || store id || header || len || name || version (length-prefixed)."""
    sid, nm = store_id.encode("ascii"), name.encode("ascii")
    return (P.P11_WRAP_LABEL + bytes([len(sid)]) + sid + header + bytes([len(nm)]) + nm
            + _U32.pack(version))  # fmt: skip


def _split(blob: bytes, name: str, version: int) -> tuple[bytes, bytes, bytes]:
    """Header (magic, version, key id), IV, ciphertext || tag; ``InvalidDataError`` if malformed."""
    head = _HEAD.size
    if len(blob) < head + P.P11_IV_SIZE + 1 + P.P11_TAG_SIZE:
        raise InvalidDataError(f"wrapped secret of {name} v{version} is malformed")
    magic, fmt, _key_id = _HEAD.unpack_from(blob)
    if magic != P.P11_BLOB_MAGIC or fmt != P.P11_BLOB_VERSION:
        raise InvalidDataError(f"wrapped secret of {name} v{version} is malformed")
    return blob[:head], blob[head : head + P.P11_IV_SIZE], blob[head + P.P11_IV_SIZE :]


# ---- Token operations ------------------------------------------------------------------------


def _gcm(iv: bytes, aad: bytes) -> Any:
    import pkcs11

    return pkcs11.GCMParams(iv, aad, P.P11_TAG_SIZE * 8)


# python-pkcs11 types a found key as ``SecretKey``, whose stub lacks the encrypt/decrypt mixins
# the runtime object has: hence ``Any`` for the key below.


def token_encrypt(key: Any, iv: bytes, aad: bytes, data: bytes) -> bytes:
    """AES-256-GCM computed by the token: ciphertext || 128-bit tag."""
    import pkcs11

    out = key.encrypt(data, mechanism=pkcs11.Mechanism.AES_GCM, mechanism_param=_gcm(iv, aad))
    assert isinstance(out, bytes)
    return out


def token_decrypt(key: Any, iv: bytes, aad: bytes, body: bytes) -> bytes:
    """Inverse of ``token_encrypt``; the token checks the tag (a failure raises in the token)."""
    import pkcs11

    out = key.decrypt(body, mechanism=pkcs11.Mechanism.AES_GCM, mechanism_param=_gcm(iv, aad))
    assert isinstance(out, bytes)
    return out


def _key_template() -> dict[Any, Any]:
    from pkcs11 import Attribute as A

    usage = {A.ENCRYPT: True, A.DECRYPT: True, A.WRAP: False, A.UNWRAP: False, A.SIGN: False,
             A.VERIFY: False, A.DERIVE: False}  # fmt: skip
    return {A.TOKEN: True, A.PRIVATE: True, A.SENSITIVE: True, A.EXTRACTABLE: False,
            A.MODIFIABLE: False, **usage}  # fmt: skip


def _check_key(key: pkcs11.SecretKey, key_id: bytes) -> None:
    """Refuse a key the token did not make as asked: never trust a label alone (read at
    creation, at open and before every use)."""
    from pkcs11 import Attribute as A
    from pkcs11 import KeyType

    want = {A.KEY_TYPE: KeyType.AES, A.VALUE_LEN: 32, A.TOKEN: True, A.PRIVATE: True,
            A.SENSITIVE: True, A.ALWAYS_SENSITIVE: True, A.EXTRACTABLE: False,
            A.NEVER_EXTRACTABLE: True, A.LOCAL: True, A.ID: key_id}  # fmt: skip
    got = key.get_attributes(list(want))
    bad = sorted(a.name for a, v in want.items() if got.get(a) != v)
    if bad:
        raise TokenKeyError(
            f"token key {key.label!r} is not a token-generated, non-extractable AES-256 key"
            f" (attributes {', '.join(bad)})"
        )


# ---- The backend -------------------------------------------------------------------------------


class Pkcs11Backend:
    """Secrets wrapped by a token key; open with ``Pkcs11Backend.open``.

    Holds a share of the process's logged-in session (``close`` gives it up) and the handle of
    the wrapping key found at open (``key_handle``: every use must find that very object again,
    its attributes unchanged); never the PIN, never an unwrapped secret.
    """

    kind = "pkcs11"

    def __init__(self, directory: Path, store_id: str, token: TokenSession, key_id: bytes,
                 *, key_handle: int) -> None:  # fmt: skip
        if not isinstance(store_id, str) or not _STORE_ID.fullmatch(store_id):
            raise ValueError("store_id must match [A-Za-z0-9._-]{1,64}")
        if not isinstance(key_id, bytes) or len(key_id) != P.P11_KEY_ID_SIZE:
            raise ValueError(f"key_id must be {P.P11_KEY_ID_SIZE} bytes")
        if not isinstance(key_handle, int) or isinstance(key_handle, bool):
            raise ValueError("key_handle must be the int handle of the token key")
        self._dir, self._store_id = Path(directory), store_id
        self._token, self._key_id, self._handle = token, key_id, key_handle

    def __repr__(self) -> str:
        where = f"{str(self._dir)!r}, token={self._token.label!r}"
        return f"Pkcs11Backend({where}, key={self.key_label!r})"

    def __enter__(self) -> Pkcs11Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @classmethod
    def open(cls, directory: str | os.PathLike[str], store_id: str, *, module: str | None = None,
             token: str | None = None, pin: str | None = None, create: bool = False,
             key_id: bytes | None = None) -> Pkcs11Backend:  # fmt: skip
        """Log in to the token and find (``create``: generate) this store's wrapping key.

        ``module``, ``token``, ``pin`` default to ``PQSELFENC_PKCS11_MODULE``, ``..._TOKEN``,
        ``..._PIN``. ``key_id`` (recorded in the store's metadata) pins the one key to use.
        ``TokenUnavailable``/``TokenPinError`` when the module, token or PIN fail;
        ``KeyDestroyedError`` when the token has no such key (crypto-shredded, or another token);
        ``TokenKeyError`` when the key is not the one recorded or not as generated;
        ``KeyStoreError`` when ``create`` finds a key already there. Only private token
        objects count: public ones anyone may create without the PIN are never looked at.
        """
        if not isinstance(store_id, str) or not _STORE_ID.fullmatch(store_id):
            raise ValueError("store_id must match [A-Za-z0-9._-]{1,64}")
        module = module if module is not None else os.environ.get(ENV_MODULE)
        label = token if token is not None else os.environ.get(ENV_TOKEN)
        if not module:
            raise TokenUnavailable(f"no PKCS#11 module: set {ENV_MODULE} to the vendor's .so")
        if not label:
            raise TokenUnavailable(f"no PKCS#11 token label: set {ENV_TOKEN}")
        session = connect(module, label, pin if pin is not None else os.environ.get(ENV_PIN, ""))
        try:
            if create:
                make_folders(Path(directory))
            found = _make_key(session, store_id) if create else _find_key(session, store_id, key_id)
        except BaseException:
            session.close()
            raise
        return cls(Path(directory), store_id, session, found[0], key_handle=found[1])

    @property
    def key_label(self) -> str:
        """``CKA_LABEL`` of the wrapping key (``pqselfenc-<store id>``): record it in metadata."""
        return P.P11_KEY_LABEL_PREFIX + self._store_id

    @property
    def key_id(self) -> bytes:
        """``CKA_ID`` of the wrapping key (16 random bytes): record it in metadata."""
        return self._key_id

    @property
    def token_label(self) -> str:
        """Label of the token holding the wrapping key."""
        return self._token.label

    def close(self) -> None:
        """Give up this backend's share of the session (the last one logs out)."""
        self._token.close()

    def capabilities(self) -> Capabilities:
        """Which PKCS#11 3.2 ML-KEM / ML-DSA mechanisms the token lists (``.statement()``)."""
        return self._token.capabilities()

    # -- secrets ---------------------------------------------------------------------------------

    def _key(self, session: pkcs11.Session) -> pkcs11.SecretKey:
        """The key found at open, found and checked again for this use (see ``_lookup``)."""
        return _lookup(session, self._store_id, self._key_id, self._handle)

    def put(self, name: str, version: int, secret: bytes) -> None:
        """Encrypt ``secret`` in the token and write ``secrets/NAME.vN.p11`` atomically (0600)."""
        name, version = _check_address(name, version)
        if not isinstance(secret, bytes) or not 0 < len(secret) <= P.P11_MAX_SECRET:
            raise ValueError(f"secret must be 1..{P.P11_MAX_SECRET} bytes")
        header = _HEAD.pack(P.P11_BLOB_MAGIC, P.P11_BLOB_VERSION, self._key_id)
        iv, aad = os.urandom(P.P11_IV_SIZE), _aad(self._store_id, header, name, version)
        body = self._token.run(
            lambda s: token_encrypt(self._key(s), iv, aad, secret), f"wrapping {name} v{version}"
        )
        with folder(self._dir / "secrets", create=True) as fd:
            durable_write(fd, f"{name}.v{version}.p11", header + iv + body)

    def get(self, name: str, version: int) -> bytes:
        """The secret, decrypted by the token now: ``KeyNotFound`` without a blob,
        ``InvalidDataError`` for a malformed one, ``IntegrityError`` if it fails authentication
        (moved from another name, version or store), ``KeyDestroyedError`` without the token key."""
        name, version = _check_address(name, version)
        try:
            with folder(self._dir / "secrets", create=False) as fd:
                blob = read_regular(fd, f"{name}.v{version}.p11", _MAX_BLOB)
        except FileNotFoundError as exc:
            raise KeyNotFound(f"no secret for {name} v{version} in the pkcs11 backend") from exc
        header, iv, body = _split(blob, name, version)
        if header[-P.P11_KEY_ID_SIZE:] != self._key_id:
            raise IntegrityError(f"{name} v{version} was wrapped by another token key")
        aad = _aad(self._store_id, header, name, version)
        return self._token.run(lambda s: token_decrypt(self._key(s), iv, aad, body),
                               f"unwrapping {name} v{version}", decrypting=True)  # fmt: skip

    def delete(self, name: str, version: int) -> bool:
        """Unlink the blob durably (it is ciphertext under the token key: nothing to overwrite);
        False if it was absent."""
        name, version = _check_address(name, version)
        try:
            with folder(self._dir / "secrets", create=False) as fd:
                return durable_unlink(fd, f"{name}.v{version}.p11")
        except FileNotFoundError:
            return False

    def destroy_wrapping_key(self) -> bool:
        """Destroy this store's key in the token: every secret becomes unreadable for good
        (crypto-shredding of the whole store). False if the token had no such key."""

        def destroy(session: pkcs11.Session) -> bool:
            keys = _keys(session, self._store_id)
            for key in keys:
                destroy_object(key)
            return bool(keys)

        return self._token.run(destroy, "destroying the wrapping key")

    # -- rollback anchor -------------------------------------------------------------------------

    @property
    def anchor_label(self) -> str:
        """``CKA_LABEL`` of this store's anchor data objects."""
        return P.P11_ANCHOR_LABEL_PREFIX + self._store_id

    @property
    def anchor_location(self) -> str:
        """Where the anchor is, for messages."""
        return f"token {self.token_label!r} (data object {self.anchor_label!r})"

    def read_anchor(self) -> Anchor | None:
        """The highest anchor in the token (two exist only after a crash mid-replace); None if
        there is none. ``InvalidDataError`` if a private object under the label does not parse."""
        label, sid = self.anchor_label, self._store_id
        return self._token.run(lambda s: _p11anchor.read_anchor(s, label, sid), "reading anchor")

    def write_anchor(self, anchor: Anchor) -> None:
        """Replace the anchor: create the new object, then destroy the older ones.

        ``IntegrityError`` if ``anchor`` is behind the token's (a rolled-back directory must not
        rewind it) or at the same position with another audit hash (a forked log); writing the
        same anchor again is a no-op.
        """
        if not isinstance(anchor, Anchor):
            raise TypeError("anchor must be an Anchor")
        label, sid = self.anchor_label, self._store_id
        self._token.run(lambda s: _p11anchor.write_anchor(s, label, sid, anchor),
                        "writing the anchor")  # fmt: skip

    def delete_anchor(self) -> int:
        """Destroy every anchor object of this store (when the store itself is deleted)."""
        label = self.anchor_label
        return self._token.run(lambda s: _p11anchor.delete_anchors(s, label), "deleting the anchor")


def _label(store_id: str) -> str:
    """``CKA_LABEL`` of a store's wrapping key."""
    return P.P11_KEY_LABEL_PREFIX + store_id


def _keys(session: pkcs11.Session, store_id: str, key_id: bytes | None = None) -> list[Any]:
    """This store's wrapping keys: private token secret keys under its label (with ``CKA_ID`` =
    ``key_id`` if given). A public object under the label, which anyone may create without the
    PIN, is not one of them: it neither counts as a second key nor is ever used."""
    from pkcs11 import Attribute as A
    from pkcs11 import ObjectClass

    extra = {} if key_id is None else {A.ID: key_id}
    return private_objects(session, ObjectClass.SECRET_KEY, _label(store_id), extra)


def _several(store_id: str, keys: list[Any]) -> TokenKeyError:
    from pkcs11 import Attribute as A

    ids = ", ".join(sorted(bytes(k[A.ID]).hex() for k in keys))
    return TokenKeyError(
        f"the token holds several private keys {_label(store_id)!r} (CKA_ID {ids}): someone "
        "with the PIN made another; none is used"
    )


def _handle(key: Any) -> int:
    """The object handle the token gave ``key`` (what every later use must find again)."""
    handle = key.handle
    if not isinstance(handle, int):
        raise KeyStoreError("the PKCS#11 module gave the wrapping key no object handle")
    return handle


def _lookup(session: pkcs11.Session, store_id: str, key_id: bytes,
            handle: int | None = None) -> pkcs11.SecretKey:  # fmt: skip
    """This store's key with ``key_id``, its attributes checked: at open (``handle`` None) the
    one the token holds; on every use after it, the very object found at open (``handle``). So a
    destroyed key fails every later call, even once another key is made under its label and id
    (crypto-shredding is final), and a key changed since open is refused."""
    keys = _keys(session, store_id, key_id)
    mine = [k for k in keys if handle is None or k.handle == handle]
    if not mine:
        later = " (the key now under its label and id was made after it: never used)"
        raise KeyDestroyedError(
            f"the token has no wrapping key {_label(store_id)!r} with this store's key id:"
            f" it was destroyed (the store is crypto-shredded) or this is another token"
            + (later if keys else "")
        )
    if len(keys) > 1:
        raise _several(store_id, keys)
    _check_key(mine[0], key_id)
    key: pkcs11.SecretKey = mine[0]
    return key


def _find_key(token: TokenSession, store_id: str, key_id: bytes | None) -> tuple[bytes, int]:
    """The id and handle of this store's key (the one with ``key_id`` if given), its attributes
    checked. A key under the store's label with another id than ``key_id`` is ``TokenKeyError``
    (the recorded id was altered, or the key replaced), not "destroyed"."""
    from pkcs11 import Attribute as A

    def find(session: pkcs11.Session) -> tuple[bytes, int]:
        keys = _keys(session, store_id)
        if len(keys) > 1:
            raise _several(store_id, keys)
        found = bytes(keys[0][A.ID]) if keys else None
        if key_id is not None and found is not None and found != key_id:
            raise TokenKeyError(
                f"the token's key {_label(store_id)!r} is not the one this store recorded "
                "(its key id differs): the store's metadata was altered or the key replaced"
            )
        key = _lookup(session, store_id, found or b"")  # KeyDestroyedError if none
        return found or b"", _handle(key)

    return token.run(find, "finding the wrapping key")


def _make_key(token: TokenSession, store_id: str) -> tuple[bytes, int]:
    """Generate this store's key inside the token; refuse if one is there already, destroy it
    again if the token did not honour the template. Its id and handle."""
    from pkcs11 import KeyType

    key_id = os.urandom(P.P11_KEY_ID_SIZE)

    def make(session: pkcs11.Session) -> tuple[bytes, int]:
        if _keys(session, store_id):
            raise KeyStoreError(f"the token already holds a key {_label(store_id)!r}: not created")
        key = session.generate_key(KeyType.AES, 256, id=key_id, label=_label(store_id),
                                   store=True, template=_key_template())  # fmt: skip
        try:
            _check_key(key, key_id)
        except BaseException:
            key.destroy()
            raise
        return key_id, _handle(key)

    return token.run(make, "generating the wrapping key")
