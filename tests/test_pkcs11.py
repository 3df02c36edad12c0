"""The PKCS#11 backend against a real token (SoftHSM 2 in a private config dir, tests/_softhsm.py).

Covers: round trip, secrets scan of the directory and the token dir, blobs moved between names,
versions and stores, the token's AES-GCM against ``cryptography`` (known key), wrong PIN, token
absent, module missing, key deleted from the token (in this and another process), destroy of one
version, two processes at once, fork, the rollback anchor (replace, crash between its steps,
objects planted without the PIN), PINs in messages, planted symlinks/FIFOs, the capability probe.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import subprocess
import sys
import textwrap
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from _softhsm import (
    REQUIRE_ENV,
    SoftHsm,
    missing,
    skip_or_fail,
)
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from pqselfenc.core import _primitives as P
from pqselfenc.error import (
    Error,
    IntegrityError,
    InvalidDataError,
    KeyDestroyedError,
    KeyNotFound,
    KeyStoreError,
    TokenKeyError,
    TokenPinError,
    TokenUnavailable,
)
from pqselfenc.keys import _p11anchor, _pkcs11
from pqselfenc.keys import pkcs11_backend as pb
from pqselfenc.keys.backends import SecretBackend
from pqselfenc.keys.pkcs11_backend import Anchor, Pkcs11Backend

SEED = bytes(range(1, 97))  # 96 bytes, no 16-byte window repeats, like an X-Wing seed


@pytest.fixture(autouse=True)
def _sessions_closed() -> Iterator[None]:
    """Every test gives back its token sessions: the next one starts logged out."""
    yield
    assert _pkcs11._OPEN == {}, "a test left a PKCS#11 session open"


@pytest.fixture
def opener(softhsm: SoftHsm, tmp_path: Path) -> Iterator[Callable[..., Pkcs11Backend]]:
    """``opener(store_id=None, create=True, **kw)``: a backend on the test token, closed after."""
    opened: list[Pkcs11Backend] = []

    def make(store_id: str | None = None, *, create: bool = True, **kw: Any) -> Pkcs11Backend:
        kw.setdefault("module", softhsm.module)
        kw.setdefault("token", softhsm.token)
        kw.setdefault("pin", softhsm.pin)
        directory = kw.pop("directory", tmp_path / (store_id or "store"))
        backend = Pkcs11Backend.open(directory, store_id or secrets.token_hex(16),
                                     create=create, **kw)  # fmt: skip
        opened.append(backend)
        return backend

    yield make
    for backend in opened:
        backend.close()


def blob(backend: Pkcs11Backend, name: str, version: int) -> Path:
    return backend._dir / "secrets" / f"{name}.v{version}.p11"


def run_child(hsm: SoftHsm, code: str, *args: str, timeout: float = 120) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args], env=hsm.env(),
        capture_output=True, text=True, timeout=timeout, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


# ---- round trip and format ---------------------------------------------------------------------


def test_round_trip_put_get_delete(opener: Callable[..., Pkcs11Backend], tmp_path: Path) -> None:
    backend = opener("a" * 32)
    assert isinstance(backend, SecretBackend) and backend.kind == "pkcs11"
    backend.put("_store", 1, SEED)
    backend.put("alice", 1, SEED[:64])
    backend.put("alice", 2, SEED[::-1])
    assert backend.get("_store", 1) == SEED
    assert backend.get("alice", 2) == SEED[::-1]
    backend.put("alice", 2, b"replaced")
    assert backend.get("alice", 2) == b"replaced"
    again = opener("a" * 32, create=False, key_id=backend.key_id)  # a second open, same process
    assert again.get("alice", 1) == SEED[:64]
    assert backend.delete("alice", 1) is True
    assert backend.delete("alice", 1) is False
    with pytest.raises(KeyNotFound):
        again.get("alice", 1)
    assert backend.key_label == "pqselfenc-" + "a" * 32 and len(backend.key_id) == 16


def test_blob_layout_and_mode(opener: Callable[..., Pkcs11Backend]) -> None:
    backend = opener()
    backend.put("bob", 7, SEED)
    path = blob(backend, "bob", 7)
    raw = path.read_bytes()
    assert raw[:8] == b"PQSEP11\x00" and raw[8] == 1 and raw[9:25] == backend.key_id
    assert len(raw) == 25 + 12 + len(SEED) + 16
    assert path.stat().st_mode & 0o777 == 0o600
    assert (path.parent.stat().st_mode & 0o777) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["bob.v7.p11"]  # no temp file left


def test_the_token_computes_standard_aes_gcm(opener: Callable[..., Pkcs11Backend]) -> None:
    """Known key imported as a session object: the token's output is cryptography's AES-GCM, and
    the AAD really binds the store id (same key, another store id: the tag fails)."""
    import pkcs11
    from pkcs11 import Attribute as A

    backend = opener()
    key_bytes, iv = os.urandom(32), os.urandom(12)
    header = pb._HEAD.pack(P.P11_BLOB_MAGIC, P.P11_BLOB_VERSION, bytes(16))
    aad = pb._aad("store-1", header, "alice", 3)

    def check(session: Any) -> None:
        key = session.create_object({
            A.CLASS: pkcs11.ObjectClass.SECRET_KEY, A.KEY_TYPE: pkcs11.KeyType.AES,
            A.TOKEN: False, A.VALUE: key_bytes, A.ENCRYPT: True, A.DECRYPT: True,
        })  # fmt: skip
        body = pb.token_encrypt(key, iv, aad, SEED)
        assert body == AESGCM(key_bytes).encrypt(iv, SEED, aad)
        assert pb.token_decrypt(key, iv, aad, body) == SEED
        other = pb._aad("store-2", header, "alice", 3)
        with pytest.raises(Exception) as info:
            pb.token_decrypt(key, iv, other, body)
        err = _pkcs11.translate(info.value, "unwrapping", decrypting=True)
        assert isinstance(err, IntegrityError)
        key.destroy()

    backend._token.run(check, "known-answer check")


def test_secrets_scan_directory_and_token(opener: Callable[..., Pkcs11Backend],
                                          softhsm: SoftHsm, tmp_path: Path) -> None:  # fmt: skip
    """No secret, nor any 16-byte window of it (raw or hex), in any file of the store directory
    or of the token directory."""
    backend = opener()
    others = [os.urandom(64), os.urandom(33)]
    backend.put("_store", 1, SEED)
    for i, secret in enumerate(others, 1):
        backend.put("alice", i, secret)
    assert backend.get("_store", 1) == SEED
    files = [p for root in (tmp_path, softhsm.tokendir) for p in root.rglob("*") if p.is_file()]
    assert any(p.suffix == ".p11" for p in files) and len(files) > 3
    for secret in (SEED, *others):
        windows = {secret[i : i + 16] for i in range(len(secret) - 15)}
        for path in files:
            data = path.read_bytes()
            text = data.hex()
            for w in windows:
                assert w not in data and w.hex() not in text, f"secret window in {path}"


# ---- tampering ----------------------------------------------------------------------------------


def test_blob_moved_to_another_name_or_version_fails(opener: Callable[..., Pkcs11Backend]) -> None:
    backend = opener()
    backend.put("alice", 1, SEED)
    backend.put("bob", 1, b"bob's seed")
    raw = blob(backend, "alice", 1).read_bytes()
    for name, version in (("bob", 1), ("alice", 2), ("carol", 1)):
        blob(backend, name, version).write_bytes(raw)
        with pytest.raises(IntegrityError):
            backend.get(name, version)
    assert backend.get("alice", 1) == SEED


def test_blob_moved_from_another_store_fails(opener: Callable[..., Pkcs11Backend]) -> None:
    one, two = opener(), opener()
    two.put("alice", 1, SEED)
    blob(one, "alice", 1).write_bytes(blob(two, "alice", 1).read_bytes())
    with pytest.raises(IntegrityError, match="another token key"):
        one.get("alice", 1)


def test_tampered_blobs(opener: Callable[..., Pkcs11Backend]) -> None:
    backend = opener()
    backend.put("alice", 1, SEED)
    path = blob(backend, "alice", 1)
    good = path.read_bytes()
    cases: list[tuple[bytes, type[Error]]] = [
        (good[:40], InvalidDataError),  # shorter than header + IV + 1 + tag
        (b"X" + good[1:], InvalidDataError),  # magic
        (good[:8] + b"\x02" + good[9:], InvalidDataError),  # format version
        (good[:9] + bytes(16) + good[25:], IntegrityError),  # key id of another key
        (good[:30] + bytes([good[30] ^ 1]) + good[31:], IntegrityError),  # IV
        (good[:-1] + bytes([good[-1] ^ 1]), IntegrityError),  # tag
        (good[:50] + bytes([good[50] ^ 0x80]) + good[51:], IntegrityError),  # ciphertext
        (good + b"\x00", IntegrityError),  # trailing byte: tag no longer at the end
        (good[:25] + bytes(5000), InvalidDataError),  # larger than any wrapped secret
    ]
    for data, error in cases:
        path.write_bytes(data)
        with pytest.raises(error):
            backend.get("alice", 1)
    path.write_bytes(good)
    assert backend.get("alice", 1) == SEED


def test_symlinks_and_fifos_are_never_followed(opener: Callable[..., Pkcs11Backend],
                                               tmp_path: Path) -> None:  # fmt: skip
    backend = opener()
    backend.put("alice", 1, SEED)
    outside = tmp_path / "outside"
    outside.write_bytes(blob(backend, "alice", 1).read_bytes())
    link = blob(backend, "alice", 2)
    link.symlink_to(outside)
    with pytest.raises(InvalidDataError, match="symlink"):
        backend.get("alice", 2)  # would authenticate if followed? never read: refused first
    backend.put("alice", 2, b"new")  # replaces the link itself, never writes through it
    assert not link.is_symlink() and outside.read_bytes()[:8] == b"PQSEP11\x00"
    assert backend.get("alice", 2) == b"new"
    link.unlink()
    link.symlink_to(outside)
    assert backend.delete("alice", 2) is True and outside.exists()
    fifo = blob(backend, "alice", 3)
    os.mkfifo(fifo)
    with pytest.raises(InvalidDataError, match="not a regular file"):
        backend.get("alice", 3)  # O_NONBLOCK: no hang waiting for a writer


def test_planted_secrets_folder_symlink_is_refused(opener: Callable[..., Pkcs11Backend],
                                                   tmp_path: Path) -> None:  # fmt: skip
    backend = opener()
    backend.put("alice", 1, SEED)
    secrets_dir = backend._dir / "secrets"
    elsewhere = tmp_path / "elsewhere"
    secrets_dir.rename(elsewhere)
    secrets_dir.symlink_to(elsewhere)
    for call in (lambda: backend.get("alice", 1), lambda: backend.put("alice", 2, SEED),
                 lambda: backend.delete("alice", 1)):  # fmt: skip
        with pytest.raises(KeyStoreError, match="not a plain folder"):
            call()
    assert sorted(p.name for p in elsewhere.iterdir()) == ["alice.v1.p11"]


def test_misuse_is_a_value_error(opener: Callable[..., Pkcs11Backend]) -> None:
    backend = opener()
    for name, version in (("../x", 1), ("A", 1), ("", 1), ("a/b", 1), ("a", 0), ("a", True),
                          ("a", 1 << 32)):  # fmt: skip
        with pytest.raises(ValueError):
            backend.put(name, version, SEED)
    with pytest.raises(ValueError):
        backend.put("a", 1, b"")
    with pytest.raises(ValueError):
        backend.put("a", 1, bytes(4097))
    with pytest.raises(ValueError):
        Pkcs11Backend.open("/tmp", "bad/id", module="/x", token="t", pin="p")


# ---- token, module, PIN -------------------------------------------------------------------------


def test_wrong_pin_refused_by_the_token(opener: Callable[..., Pkcs11Backend],
                                        softhsm: SoftHsm) -> None:  # fmt: skip
    with pytest.raises(TokenPinError, match="PinIncorrect") as info:
        opener(pin=softhsm.pin + "x")
    assert softhsm.pin not in "".join(traceback.format_exception(info.value))
    with pytest.raises(TokenPinError, match="no PKCS#11 PIN"):
        opener(pin="")
    with pytest.raises(TokenPinError, match="not valid text") as info:
        opener(pin="12\udcff34")
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_wrong_pin_while_logged_in_is_refused(opener: Callable[..., Pkcs11Backend],
                                              softhsm: SoftHsm) -> None:  # fmt: skip
    """PKCS#11 login state is per process: a second open with another PIN is refused here,
    not waved through as "already logged in"."""
    backend = opener()
    with pytest.raises(TokenPinError, match="another PIN"):
        opener(backend._store_id, create=False, pin="0000")
    backend.put("alice", 1, SEED)
    assert backend.get("alice", 1) == SEED


def test_no_pin_from_the_environment(opener: Callable[..., Pkcs11Backend],
                                     monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.delenv(_pkcs11.ENV_PIN, raising=False)
    with pytest.raises(TokenPinError, match=_pkcs11.ENV_PIN):
        opener(pin=None)


def test_configuration_from_the_environment(softhsm: SoftHsm, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    for name, value in softhsm.env().items():
        if name.startswith("PQSELFENC_PKCS11_"):
            monkeypatch.setenv(name, value)
    with Pkcs11Backend.open(tmp_path, secrets.token_hex(16), create=True) as backend:
        backend.put("alice", 1, SEED)
        assert backend.get("alice", 1) == SEED
        backend.destroy_wrapping_key()


def test_token_absent(opener: Callable[..., Pkcs11Backend],
                      monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    with pytest.raises(TokenUnavailable, match=f"no PKCS#11 token labelled.*{_pkcs11.ENV_TOKEN}"):
        opener(token="no-such-token")
    monkeypatch.delenv(_pkcs11.ENV_TOKEN, raising=False)
    with pytest.raises(TokenUnavailable, match=_pkcs11.ENV_TOKEN):
        opener(token="")


def test_module_missing(opener: Callable[..., Pkcs11Backend], tmp_path: Path,
                        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    monkeypatch.delenv(_pkcs11.ENV_MODULE, raising=False)
    with pytest.raises(TokenUnavailable, match=_pkcs11.ENV_MODULE):
        opener(module="")
    for path in (str(tmp_path / "nope.so"), "libsofthsm2.so"):  # absent; relative (dlopen search)
        with pytest.raises(TokenUnavailable, match=f"absolute path.*{_pkcs11.ENV_MODULE}"):
            opener(module=path)
    junk = tmp_path / "junk.so"
    junk.write_bytes(b"not an ELF file")
    with pytest.raises(TokenUnavailable, match=f"cannot load.*{_pkcs11.ENV_MODULE}"):
        opener(module=str(junk))


def test_key_on_another_token_or_absent(opener: Callable[..., Pkcs11Backend],
                                        softhsm: SoftHsm) -> None:  # fmt: skip
    backend = opener()
    with pytest.raises(KeyDestroyedError, match="another token"):
        opener(backend._store_id, create=False, token=softhsm.other_token)
    with pytest.raises(KeyDestroyedError):
        opener(secrets.token_hex(16), create=False)
    with pytest.raises(IntegrityError, match="key id differs"):  # a recorded id altered
        opener(backend._store_id, create=False, key_id=bytes(16))
    with pytest.raises(KeyStoreError, match="already holds"):
        opener(backend._store_id, create=True)


def test_a_key_not_made_by_the_token_is_refused(opener: Callable[..., Pkcs11Backend]) -> None:
    """A key imported under the store's label (extractable, not generated in the token) is
    never used: the attributes are checked, not the label trusted."""
    import pkcs11
    from pkcs11 import Attribute as A

    helper = opener()
    store_id = secrets.token_hex(16)

    def plant(session: Any) -> None:
        session.create_object({
            A.CLASS: pkcs11.ObjectClass.SECRET_KEY, A.KEY_TYPE: pkcs11.KeyType.AES,
            A.TOKEN: True, A.PRIVATE: True, A.VALUE: os.urandom(32), A.ENCRYPT: True,
            A.DECRYPT: True, A.LABEL: "pqselfenc-" + store_id, A.ID: bytes(16),
        })  # fmt: skip

    helper._token.run(plant, "planting")
    with pytest.raises(IntegrityError, match=r"EXTRACTABLE|LOCAL|SENSITIVE"):
        opener(store_id, create=False)
    helper._token.run(lambda s: [k.destroy() for k in pb._keys(s, store_id)], "cleanup")


def test_key_deleted_from_the_token_shreds_everything(opener: Callable[..., Pkcs11Backend],
                                                      softhsm: SoftHsm) -> None:  # fmt: skip
    """Deleted by another process: this process's open backend fails every call from then on."""
    backend = opener()
    for i in range(1, 4):
        backend.put("alice", i, SEED)
    run_child(softhsm, """
        import sys
        from pqselfenc.keys.pkcs11_backend import Pkcs11Backend
        with Pkcs11Backend.open(sys.argv[1], sys.argv[2], key_id=bytes.fromhex(sys.argv[3])) as b:
            assert b.destroy_wrapping_key()
    """, str(backend._dir), backend._store_id, backend.key_id.hex())  # fmt: skip
    for i in range(1, 4):
        with pytest.raises(KeyDestroyedError, match="crypto-shredded"):
            backend.get("alice", i)
    with pytest.raises(KeyDestroyedError):
        backend.put("alice", 4, SEED)
    with pytest.raises(KeyDestroyedError):
        opener(backend._store_id, create=False)
    assert backend.destroy_wrapping_key() is False


_PLANT = """
    import sys, pkcs11
    from pkcs11 import Attribute as A
    module, token, label, key_id, pin = sys.argv[1:6]
    with pkcs11.lib(module).get_token(token_label=token).open(rw=True, user_pin=pin or None) as s:
        if sys.argv[6] == "destroy":  # the admin, with the PIN: crypto-shred the store
            for key in s.get_objects({A.CLASS: pkcs11.ObjectClass.SECRET_KEY, A.LABEL: label}):
                key.destroy()
        elif sys.argv[6] == "public":  # anyone, no PIN: an exportable key of a known value
            s.create_object({A.CLASS: pkcs11.ObjectClass.SECRET_KEY, A.KEY_TYPE: pkcs11.KeyType.AES,
                             A.TOKEN: True, A.PRIVATE: False, A.SENSITIVE: False,
                             A.EXTRACTABLE: True, A.ENCRYPT: True, A.DECRYPT: True,
                             A.LABEL: label, A.ID: bytes.fromhex(key_id), A.VALUE: bytes(32)})
        else:  # with the PIN: a genuine token-generated key under the same label and id
            s.generate_key(pkcs11.KeyType.AES, 256, id=bytes.fromhex(key_id), label=label,
                           store=True, template={A.TOKEN: True, A.PRIVATE: True,
                                                 A.SENSITIVE: True, A.EXTRACTABLE: False})
"""


def plant(hsm: SoftHsm, backend: Pkcs11Backend, what: str, key_id: bytes | None = None) -> None:
    """In another process: ``destroy`` (PIN), ``public`` (no PIN) or ``private`` (PIN)."""
    pin = "" if what == "public" else hsm.pin
    run_child(hsm, _PLANT, hsm.module, hsm.token, backend.key_label,
              (key_id or backend.key_id).hex(), pin, what)  # fmt: skip


def remove_all(backend: Pkcs11Backend) -> None:
    """Every secret key under the backend's label, public ones too (cleanup)."""
    import pkcs11
    from pkcs11 import Attribute as A

    query = {A.CLASS: pkcs11.ObjectClass.SECRET_KEY, A.LABEL: backend.key_label}
    backend._token.run(lambda s: [k.destroy() for k in s.get_objects(query)], "cleanup")


def test_a_key_made_after_the_shred_is_never_used(opener: Callable[..., Pkcs11Backend],
                                                  softhsm: SoftHsm) -> None:  # fmt: skip
    """The store's key destroyed while a backend is open, then an exportable public key of a
    known value planted under the same label and id without the PIN: nothing is wrapped under it
    (its owner would decrypt the blob offline) nor unwrapped. A genuine key made later under the
    same label and id with the PIN is not the one found at open either: the shred is final."""
    backend = opener()
    backend.put("alice", 1, SEED)
    plant(softhsm, backend, "destroy")
    plant(softhsm, backend, "public")
    for _attempt in ("public", "private"):
        with pytest.raises(KeyDestroyedError, match="crypto-shredded"):
            backend.put("carol", 1, SEED)
        with pytest.raises(KeyDestroyedError, match="crypto-shredded"):
            backend.get("alice", 1)
        assert not blob(backend, "carol", 1).exists()
        plant(softhsm, backend, "private")
    with pytest.raises(KeyDestroyedError, match="made after it"):
        backend.put("carol", 1, SEED)
    remove_all(backend)


def test_public_objects_under_the_label_never_count(opener: Callable[..., Pkcs11Backend],
                                                    softhsm: SoftHsm) -> None:  # fmt: skip
    """Public keys planted without the PIN under the store's label (with its id or another)
    neither lock the store out ("several keys") nor are ever used or destroyed by it."""
    backend = opener()
    backend.put("alice", 1, SEED)
    plant(softhsm, backend, "public")
    plant(softhsm, backend, "public", key_id=bytes(16))
    again = opener(backend._store_id, create=False, key_id=backend.key_id, directory=backend._dir)
    assert again.get("alice", 1) == SEED
    again.put("alice", 2, SEED[::-1])
    assert backend.get("alice", 2) == SEED[::-1]
    assert opener(backend._store_id, create=False).key_id == backend.key_id
    assert again.destroy_wrapping_key()
    with pytest.raises(KeyDestroyedError):
        backend.get("alice", 1)
    remove_all(backend)


def test_several_private_keys_under_the_label(opener: Callable[..., Pkcs11Backend],
                                              softhsm: SoftHsm) -> None:  # fmt: skip
    """A second private key made under the label with the PIN: ``TokenKeyError`` naming the ids,
    at open and at every use; neither key is used."""
    backend = opener()
    backend.put("alice", 1, SEED)
    plant(softhsm, backend, "private", key_id=bytes(16))
    with pytest.raises(TokenKeyError, match=f"several private keys.*{bytes(16).hex()}"):
        opener(backend._store_id, create=False)
    plant(softhsm, backend, "private")
    with pytest.raises(TokenKeyError, match="several"):
        backend.get("alice", 1)
    remove_all(backend)


def test_destroy_one_version(opener: Callable[..., Pkcs11Backend]) -> None:
    backend = opener()
    backend.put("alice", 1, SEED)
    backend.put("alice", 2, SEED[::-1])
    assert backend.delete("alice", 1)
    with pytest.raises(KeyNotFound):
        backend.get("alice", 1)
    assert backend.get("alice", 2) == SEED[::-1]
    assert not blob(backend, "alice", 1).exists()


def test_no_pin_in_messages_or_reprs(opener: Callable[..., Pkcs11Backend], softhsm: SoftHsm,
                                     tmp_path: Path) -> None:  # fmt: skip
    backend = opener()
    backend.put("alice", 1, SEED)
    texts = [repr(backend), str(backend), repr(backend._token), repr(backend.capabilities())]
    attempts: list[Callable[[], object]] = [
        lambda: opener(pin=softhsm.pin[::-1]),  # other PIN while logged in
        lambda: opener(token="absent"),
        lambda: opener(module=str(tmp_path / "x.so")),
        lambda: opener(backend._store_id, create=False, key_id=bytes(16)),
    ]
    blob(backend, "alice", 2).write_bytes(blob(backend, "alice", 1).read_bytes())
    attempts.append(lambda: backend.get("alice", 2))
    for attempt in attempts:
        with pytest.raises(Error) as info:
            attempt()
        texts.append("".join(traceback.format_exception(info.value)))
    backend.close()
    with pytest.raises(TokenPinError) as info:  # logged out now: the token itself refuses
        opener(pin=softhsm.pin + "0")
    texts.append("".join(traceback.format_exception(info.value)))
    for text in texts:
        assert softhsm.pin not in text and softhsm.pin[::-1] not in text
        assert SEED.hex()[:16] not in text


def test_without_python_pkcs11(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The module imports without the optional dependency; opening says what to install."""
    monkeypatch.setitem(sys.modules, "pkcs11", None)  # import pkcs11 -> ImportError
    with pytest.raises(TokenUnavailable, match=r"pqselfenc\[hsm\]"):
        Pkcs11Backend.open(tmp_path, "s", module="/x.so", token="t", pin="p", create=True)
    assert not (tmp_path / "secrets").exists()


def test_threads_share_one_session(opener: Callable[..., Pkcs11Backend]) -> None:
    """Two backends of one process share the login; threads interleave calls safely."""
    import threading

    one = opener()
    two = opener(one._store_id, create=False, directory=one._dir)
    errors: list[BaseException] = []

    def work(backend: Pkcs11Backend, tag: int) -> None:
        try:
            for i in range(1, 16):
                secret = bytes([tag, i]) * 20
                backend.put(f"t{tag}", i, secret)
                assert backend.get(f"t{tag}", i) == secret
        except BaseException as exc:
            errors.append(exc)

    pairs = enumerate((one, two, one, two))
    threads = [threading.Thread(target=work, args=(b, n)) for n, b in pairs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert two.get("t0", 15) == bytes([0, 15]) * 20


# ---- processes ----------------------------------------------------------------------------------

WORKER = """
    import hashlib, sys
    from pqselfenc.error import IntegrityError
    from pqselfenc.keys.pkcs11_backend import Anchor, Pkcs11Backend
    directory, store_id, key_id, tag = sys.argv[1:5]
    written, refused = [], 0
    with Pkcs11Backend.open(directory, store_id, key_id=bytes.fromhex(key_id)) as b:
        shared = b.get("shared", 1)
        for i in range(1, 16):
            secret = f"{tag}-{i}-".encode() * 8
            b.put(f"w{tag}", i, secret)
            assert b.get(f"w{tag}", i) == secret
            assert b.get("shared", 1) == shared
            gen = 2 * i + int(tag)
            try:
                b.write_anchor(Anchor(gen, gen, hashlib.sha3_256(str(gen).encode()).digest()))
                written.append(gen)
            except IntegrityError:
                refused += 1
    print(max(written, default=0), refused)
"""


def test_two_processes_share_token_and_directory(opener: Callable[..., Pkcs11Backend],
                                                 softhsm: SoftHsm) -> None:  # fmt: skip
    """Each process opens its own session; puts, gets and anchor replaces interleave."""
    backend = opener()
    backend.put("shared", 1, SEED)
    args = [str(backend._dir), backend._store_id, backend.key_id.hex()]
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(WORKER), *args, tag],
                              env=softhsm.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for tag in ("0", "1")]  # fmt: skip
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-6000:] for _, err in outs]
    best = max(int(out.split()[0]) for out, _ in outs)
    anchor = backend.read_anchor()
    assert anchor is not None and anchor.generation == best >= 30
    for tag in ("0", "1"):
        for i in range(1, 16):
            assert backend.get(f"w{tag}", i) == f"{tag}-{i}-".encode() * 8
    assert backend.delete_anchor() >= 1


def test_fork_child_logs_in_afresh(opener: Callable[..., Pkcs11Backend], softhsm: SoftHsm) -> None:
    backend = opener()
    backend.put("alice", 1, SEED)
    pid = os.fork()
    if pid == 0:  # child: the parent's session is forgotten, the module re-initialised
        code = 1
        try:
            with Pkcs11Backend.open(backend._dir, backend._store_id, module=softhsm.module,
                                    token=softhsm.token, pin=softhsm.pin) as child:  # fmt: skip
                code = 0 if child.get("alice", 1) == SEED else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert backend.get("alice", 1) == SEED  # the parent's session is untouched


# ---- rollback anchor ----------------------------------------------------------------------------


def anchor(generation: int, seq: int | None = None) -> Anchor:
    seq = generation * 3 if seq is None else seq
    return Anchor(generation, seq, hashlib.sha3_256(b"%d/%d" % (generation, seq)).digest())


def anchor_objects(backend: Pkcs11Backend) -> int:
    label = backend.anchor_label
    return backend._token.run(lambda s: len(_p11anchor._anchor_objects(s, label)), "count")


def test_anchor_read_and_replace(opener: Callable[..., Pkcs11Backend]) -> None:
    backend = opener()
    assert backend.read_anchor() is None
    backend.write_anchor(anchor(1))
    assert backend.read_anchor() == anchor(1)
    backend.write_anchor(anchor(1, 9))  # same generation, later audit head
    backend.write_anchor(anchor(4))
    assert backend.read_anchor() == anchor(4) and anchor_objects(backend) == 1
    backend.write_anchor(anchor(4))  # the same again: no-op
    assert anchor_objects(backend) == 1
    with pytest.raises(IntegrityError, match="move back from generation 4"):
        backend.write_anchor(anchor(3))
    with pytest.raises(IntegrityError, match="move back"):
        backend.write_anchor(anchor(5, 11))  # generation on, audit seq back (12 -> 11)
    with pytest.raises(IntegrityError, match="forked"):
        backend.write_anchor(Anchor(4, 12, bytes(32)))
    assert backend.read_anchor() == anchor(4)
    other = opener()
    assert other.read_anchor() is None  # per store
    assert backend.delete_anchor() == 1 and backend.read_anchor() is None


def test_anchor_crash_between_create_and_destroy(opener: Callable[..., Pkcs11Backend],
                                                 softhsm: SoftHsm) -> None:  # fmt: skip
    """A process killed after creating the new object and before destroying the old one leaves
    both: read takes the higher, and the next replace removes both old ones."""
    backend = opener()
    backend.write_anchor(anchor(2))
    run_child(softhsm, """
        import hashlib, os, sys
        from pqselfenc.keys import _p11anchor, pkcs11_backend as pb
        _p11anchor._destroy_older = lambda found, new: os._exit(0)  # dies between the two steps
        with pb.Pkcs11Backend.open(sys.argv[1], sys.argv[2]) as b:
            b.write_anchor(pb.Anchor(5, 15, hashlib.sha3_256(b"5/15").digest()))
        sys.exit(3)
    """, str(backend._dir), backend._store_id)  # fmt: skip
    assert anchor_objects(backend) == 2
    assert backend.read_anchor() == anchor(5)
    with pytest.raises(IntegrityError):
        backend.write_anchor(anchor(3))  # the crashed write still counts
    backend.write_anchor(anchor(5))  # the same again: a no-op that finishes the cleanup
    assert anchor_objects(backend) == 1
    backend.write_anchor(anchor(6))
    assert anchor_objects(backend) == 1 and backend.read_anchor() == anchor(6)
    backend.delete_anchor()


def test_anchor_objects_planted_without_the_pin_are_ignored(
    opener: Callable[..., Pkcs11Backend], softhsm: SoftHsm
) -> None:
    """Without the PIN one can still create public objects: a public "anchor" claiming a far
    future generation (a denial of service) or the past is never read."""
    import pkcs11
    from pkcs11 import Attribute as A

    backend = opener()
    backend.write_anchor(anchor(3))
    planted = anchor(1000).encode(backend._store_id)
    run_child(softhsm, """
        import sys, pkcs11
        from pkcs11 import Attribute as A
        token = pkcs11.lib(sys.argv[1]).get_token(token_label=sys.argv[2])
        with token.open(rw=True) as s:  # no login
            s.create_object({A.CLASS: pkcs11.ObjectClass.DATA, A.TOKEN: True, A.PRIVATE: False,
                             A.LABEL: sys.argv[3], A.VALUE: bytes.fromhex(sys.argv[4])})
            try:
                s.create_object({A.CLASS: pkcs11.ObjectClass.DATA, A.TOKEN: True,
                                 A.PRIVATE: True, A.LABEL: sys.argv[3], A.VALUE: b"x"})
                sys.exit(4)  # a private object without login: the token must refuse
            except pkcs11.PKCS11Error:
                pass
    """, softhsm.module, softhsm.token, backend.anchor_label, planted.hex())  # fmt: skip
    assert backend.read_anchor() == anchor(3)
    backend.write_anchor(anchor(4))
    assert backend.read_anchor() == anchor(4)

    def public(session: Any) -> list[Any]:
        query = {A.CLASS: pkcs11.ObjectClass.DATA, A.LABEL: backend.anchor_label, A.PRIVATE: False}
        return list(session.get_objects(query))

    objs = backend._token.run(public, "list")
    assert len(objs) == 1
    backend._token.run(lambda s: [o.destroy() for o in public(s)], "cleanup")
    backend.delete_anchor()


def test_anchor_malformed_or_of_another_store(opener: Callable[..., Pkcs11Backend]) -> None:
    backend, other = opener(), opener()
    record = anchor(2).encode(other._store_id)  # another store's record under this label
    label = backend.anchor_label
    backend._token.run(lambda s: _p11anchor._create_anchor(s, label, record), "plant")
    with pytest.raises(InvalidDataError, match="another store"):
        backend.read_anchor()
    with pytest.raises(InvalidDataError):
        backend.write_anchor(anchor(9))
    assert backend.delete_anchor() == 1
    good = anchor(2).encode(backend._store_id)
    for bad in (good[:-1], good + b"0", b"X" + good[1:], good[:8] + b"\x02" + good[9:]):
        with pytest.raises(InvalidDataError):
            Anchor.decode(bad, backend._store_id)
    assert Anchor.decode(good, backend._store_id) == anchor(2)
    bad_args: list[tuple[Any, Any, Any]] = [
        (-1, 0, bytes(32)), (0, 1 << 64, bytes(32)), (0, 0, bytes(31)), (True, 0, bytes(32)),
    ]  # fmt: skip
    for args in bad_args:
        with pytest.raises(ValueError):
            Anchor(*args)


def test_anchor_record_bytes() -> None:
    record = Anchor(7, 258, bytes(range(32))).encode("ab12")
    assert record == (b"PQSEANC\x00" + b"\x01" + (7).to_bytes(8, "big") + (258).to_bytes(8, "big")
                      + bytes(range(32)) + b"\x04" + b"ab12")  # fmt: skip


# ---- capabilities and CI ------------------------------------------------------------------------


def test_capabilities_of_softhsm(opener: Callable[..., Pkcs11Backend], softhsm: SoftHsm) -> None:
    """SoftHSM 2.6 lists no ML-KEM/ML-DSA mechanism; the probe reads the real list."""
    import pkcs11

    backend = opener()
    caps = backend.capabilities()
    label, serial, mechanisms = backend._token.token_info()
    assert int(pkcs11.Mechanism.AES_GCM) in mechanisms and label == softhsm.token and serial
    assert caps.ml_kem == (_pkcs11.CKM_ML_KEM in mechanisms) is False
    assert caps.ml_dsa == (_pkcs11.CKM_ML_DSA in mechanisms) is False
    assert caps.statement() == (
        f"token {softhsm.token!r} implements no ML-KEM/ML-DSA mechanisms: decapsulation and "
        "signing keys are wrapped by the token's AES key and unwrapped in process memory per use"
    )


def test_capability_statement_never_claims_use() -> None:
    import pkcs11

    ours = (_pkcs11.CKM_ML_KEM, _pkcs11.CKM_ML_KEM_KEY_PAIR_GEN, _pkcs11.CKM_ML_DSA,
            _pkcs11.CKM_ML_DSA_KEY_PAIR_GEN)  # fmt: skip
    theirs = (pkcs11.Mechanism.ML_KEM, pkcs11.Mechanism.ML_KEM_KEY_PAIR_GEN,
              pkcs11.Mechanism.ML_DSA, pkcs11.Mechanism.ML_DSA_KEY_PAIR_GEN)  # fmt: skip
    assert ours == tuple(int(m) for m in theirs) == (0x17, 0x0F, 0x1D, 0x1C)
    line = _pkcs11.Capabilities("hsm", ml_kem=True, ml_dsa=False).statement()
    assert "implements ML-KEM, unused so far" in line and "process memory" in line


def test_ci_cannot_skip_the_token_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    """With PQSELFENC_REQUIRE_HSM=1 (set by .ci/run) a missing SoftHSM fails, never skips."""
    if os.environ.get(REQUIRE_ENV) == "1":
        assert missing() is None, f"{REQUIRE_ENV}=1 but {missing()}"
    monkeypatch.setenv(REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match="softhsm2"):
        skip_or_fail("softhsm2 is not installed")
    monkeypatch.delenv(REQUIRE_ENV)
    with pytest.raises(pytest.skip.Exception):
        skip_or_fail("softhsm2 is not installed")
