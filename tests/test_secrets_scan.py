"""Secrets never appear in repr, str, log records, exception messages, the audit log or metadata.

Whole flows run with logging captured at DEBUG on every logger: encrypt/decrypt with a
convergence secret, seal/open/sign, key store create/generate/rotate/seal/open/rewrap/export/
destroy, and their failures. Every secret involved is collected (plaintext, convergence secret,
chunk keys, nonces and source hashes, DMKs and the keys derived from them, KEM and ML-DSA seeds,
the store root secret and vault key, passphrases) and every text that came out is scanned for
it as raw bytes, hex (either case), base64 (standard and URL-safe), base32, and for 8-byte
windows of each, so a partial leak is caught too.
"""

from __future__ import annotations

import base64
import logging
import os
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

from pqselfenc import (
    CompressionConfig,
    DataMap,
    DirectoryChunkStore,
    EncryptedChunk,
    EncryptionConfig,
    ParallelConfig,
    SelfEncryptor,
)
from pqselfenc.core import _primitives as P
from pqselfenc.core._cipher import ChunkKeys
from pqselfenc.error import Error

WINDOW = 8  # bytes: a leak of any aligned 8-byte piece of a secret counts


def forms(secret: bytes) -> set[str]:
    """Text forms of ``secret`` and of its aligned windows that a leak could take."""
    out: set[str] = set()
    pieces = [secret] + [secret[i : i + WINDOW] for i in range(0, len(secret) - WINDOW + 1, 4)]
    for piece in pieces:
        out |= {piece.hex(), piece.hex().upper(), piece.decode("latin-1")}
    for step, enc in ((3, base64.b64encode), (3, base64.urlsafe_b64encode), (5, base64.b32encode)):
        windows = [secret] + [secret[i : i + 4 * step] for i in range(0, len(secret), step)]
        for piece in windows:
            if len(piece) >= WINDOW:
                text = enc(piece).decode().rstrip("=")
                body = text[: len(text) - 2]  # the last characters depend on what follows
                out |= {body, body.lower()}
    return {f for f in out if len(f) >= WINDOW}


class Scan:
    """Collects secrets and texts; ``check()`` fails naming the secret and where it leaked."""

    def __init__(self) -> None:
        self.secrets: dict[str, bytes] = {}
        self.whole: dict[str, str] = {}
        self.texts: list[tuple[str, str]] = []

    def secret(self, label: str, value: bytes) -> bytes:
        assert isinstance(value, bytes) and len(value) >= WINDOW, label
        self.secrets[f"{label}#{len(self.secrets)}"] = value
        return value

    def passphrase(self, text: str) -> None:
        """A passphrase is words: scanned whole (its 8-byte pieces occur in ordinary text)."""
        self.whole[f"passphrase#{len(self.whole)}"] = text

    def see(self, *objs: object) -> None:
        for obj in objs:
            self.texts += [(f"repr {type(obj).__name__}", repr(obj)), ("str", str(obj))]
            if isinstance(obj, list | tuple):
                self.see(*obj)

    def failing(self, call: Callable[[], object], exc: type[Error] = Error) -> Error:
        """Run ``call``, expect ``exc``; scan its message, repr, chain and full traceback."""
        with pytest.raises(exc) as info:
            call()
        err: BaseException | None = info.value
        self.texts.append(("traceback", "".join(traceback.format_exception(info.value))))
        seen: set[int] = set()
        while err is not None and id(err) not in seen:
            seen.add(id(err))
            self.texts += [("exception", str(err)), ("exception repr", repr(err))]
            err = err.__cause__ or err.__context__
        return info.value

    def file(self, path: Path) -> None:
        self.texts.append((f"file {path.name}", path.read_bytes().decode("latin-1")))

    def logs(self, records: Iterable[logging.LogRecord]) -> None:
        fmt = logging.Formatter("%(name)s %(levelname)s %(message)s")
        self.texts += [("log", fmt.format(r)) for r in records]

    def check(self) -> None:
        assert self.secrets and self.texts
        for label, value in self.secrets.items():
            needles = forms(value)
            for where, text in self.texts:
                hit = next((n for n in needles if n in text), None)
                assert hit is None, f"secret {label} leaked in {where}: …{hit}…"
        for label, phrase in self.whole.items():
            for where, text in self.texts:
                assert phrase not in text, f"{label} leaked in {where}"


@pytest.fixture
def scan(caplog: pytest.LogCaptureFixture) -> Iterable[Scan]:
    caplog.set_level(logging.DEBUG)
    for name in ("pqselfenc", "filelock", "keyring", "botocore", "urllib3"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    s = Scan()
    yield s
    s.logs(caplog.records)
    s.check()


def test_the_scanner_finds_every_form() -> None:
    secret = bytes(range(40, 80))
    for text in (
        secret.hex(),
        f"key={secret[8:16].hex().upper()}!",
        base64.b64encode(secret).decode(),
        base64.urlsafe_b64encode(secret[6:30]).decode(),
        base64.b32encode(secret[10:30]).decode().lower(),
        "raw " + secret[4:12].decode("latin-1"),
    ):
        s = Scan()
        s.secret("probe", secret)
        s.texts.append(("t", text))
        with pytest.raises(AssertionError, match="probe"):
            s.check()


# -- core ---------------------------------------------------------------------------------------


def _chunk_secrets(scan: Scan, data_map: DataMap, salt: bytes) -> None:
    entries = data_map.chunks
    for i, e in enumerate(entries):
        assert e.src_hash is not None
        scan.secret("src_hash", e.src_hash)
        ring = [entries[(i - k) % len(entries)].src_hash for k in (1, 2)]
        keys = ChunkKeys(salt, data_map.pipeline, data_map.compression, data_map.level)
        key, second = keys.derive(e.src_hash, ring[0], ring[1])  # type: ignore[arg-type]
        scan.secret("chunk key", key)
        scan.secret("chunk nonce key" if keys.synthetic else "chunk nonce", second)
        scan.secret("chunk key+nonce", key + second)


def test_core_flows(scan: Scan, tmp_path: Path) -> None:
    secret = scan.secret("convergence secret", os.urandom(32))
    plain = scan.secret("plaintext", os.urandom(5000))
    cfg = EncryptionConfig(
        chunk_size=512,
        compression=CompressionConfig("zstd", 3),
        parallel=ParallelConfig(max_threads=2),
        convergence_secret=secret,
    )
    store = DirectoryChunkStore(tmp_path / "chunks")
    enc = SelfEncryptor(plain, cfg, chunk_store=store)
    data_map, _ = enc.encrypt()
    _chunk_secrets(scan, data_map, secret)
    scan.secret("map bytes", data_map.to_bytes())
    reader = SelfEncryptor.from_data_map(data_map, store, cfg)
    assert reader.decrypt() == plain and reader.read_range(100, 50) == plain[100:150]
    scan.see(cfg, data_map, enc, reader, store, list(data_map.chunks), data_map.chunks[0])
    _, chunks = SelfEncryptor(plain, cfg).encrypt()
    scan.see(chunks)
    # failures: no secret, wrong secret, a tampered chunk, a missing chunk, a bad map
    scan.failing(lambda: SelfEncryptor.from_data_map(data_map, store).decrypt())
    wrong = cfg.with_convergence_secret(os.urandom(32))
    scan.failing(lambda: SelfEncryptor.from_data_map(data_map, store, wrong).decrypt())
    bad = [EncryptedChunk(c.name, c.content[:-1] + b"\x00") for c in chunks]
    scan.failing(lambda: SelfEncryptor.from_data_map(data_map, bad, cfg).decrypt())
    scan.failing(lambda: SelfEncryptor.from_data_map(data_map, chunks[1:], cfg).decrypt())
    raw = bytearray(data_map.to_bytes())
    raw[-1] ^= 1
    scan.failing(lambda: DataMap.from_bytes(bytes(raw)))
    scan.failing(lambda: DataMap.from_json(data_map.to_json().replace('"src_size"', '"x"')))


# -- kem ----------------------------------------------------------------------------------------


class Recording:
    """An ``rng`` that hands out fresh random bytes and reports the secret ones to the scan."""

    def __init__(self, scan: Scan) -> None:
        self.scan = scan
        self.dmks: list[bytes] = []

    def __call__(self, n: int) -> bytes:
        value = os.urandom(n)
        if n == P.DMK_SIZE:
            self.dmks.append(self.scan.secret("DMK", value))
        return value

    def derived(self, envelope_ids: Iterable[bytes]) -> None:
        for dmk in self.dmks:
            self.scan.secret("header MAC key", P.hkdf_sha3(dmk, info=P.HEADER_MAC_LABEL))
            for eid in envelope_ids:
                self.scan.secret("payload key", P.payload_key(dmk, eid))


def test_kem_flows(scan: Scan) -> None:
    from pqselfenc.kem import PrivateKey, PublicKey, SigningKey, VerifyingKey, inspect, open_sealed
    from pqselfenc.kem import seal as kem_seal

    rng = Recording(scan)
    alice = PrivateKey.generate("x-wing", rng=lambda n: scan.secret("x-wing seed", os.urandom(n)))
    bob = PrivateKey.generate("ml-kem-1024", rng=lambda n: scan.secret("kem seed", os.urandom(n)))
    bob768 = PrivateKey.generate("ml-kem-768", rng=lambda n: scan.secret("kem seed", os.urandom(n)))
    signer = SigningKey.generate("ml-dsa-65", rng=lambda n: scan.secret("dsa seed", os.urandom(n)))
    data_map = SelfEncryptor(os.urandom(300), EncryptionConfig(chunk_size=64)).encrypt()[0]
    _chunk_secrets(scan, data_map, P.ZERO_SALT)
    sealed = kem_seal(data_map, [alice.recipient()], signer, rng=rng)
    sealed_bob = kem_seal(data_map, [bob.recipient()], rng=rng)
    rng.derived([inspect(sealed).envelope_id, inspect(sealed_bob).envelope_id])
    assert open_sealed(sealed, [alice], signer.verifying_key()) == data_map
    assert open_sealed(sealed_bob, [bob]) == data_map
    pub = alice.recipient()
    scan.see(alice, bob, signer, pub, signer.verifying_key(), inspect(sealed), bob768)
    assert PublicKey.parse(str(pub)) == pub
    assert VerifyingKey.parse(str(signer.verifying_key())) == signer.verifying_key()
    # failures: not for me, tampered, wrong signer, unsigned but signer expected, bad key text
    scan.failing(lambda: open_sealed(sealed, [PrivateKey.generate("x-wing")]))
    tampered = bytearray(sealed)
    tampered[len(tampered) // 2] ^= 1
    scan.failing(lambda: open_sealed(bytes(tampered), [alice]))
    other = SigningKey.generate("ml-dsa-65").verifying_key()
    scan.failing(lambda: open_sealed(sealed, [alice], other))
    scan.failing(lambda: open_sealed(sealed_bob, [bob], other))
    scan.failing(lambda: open_sealed(sealed[:-5], [alice]))
    scan.failing(lambda: PublicKey.parse(str(pub)[:-3] + "aaa"))
    with pytest.raises(ValueError) as info:  # misuse: a seed of the wrong size
        PrivateKey.from_seed("x-wing", alice.seed_bytes()[:-1])
    scan.texts.append(("misuse", str(info.value)))


# -- keys ---------------------------------------------------------------------------------------

PASSPHRASE = "gravel orbit candle mosaic tundra"
EXPORT_PASSPHRASE = "another long passphrase for export"


def _store_secrets(scan: Scan, ks: Any) -> None:
    """Every secret a store holds, read through its own backend."""
    scan.secret("store secret", ks._secrets.backend.get("_store", 1))
    scan.secret("convergence secret", ks.convergence_secret())
    scan.secret("keystore.json MAC key", ks._secret.metadata_mac_key())
    for ident in ks.identities.values():
        for v in ident.versions:
            if v.usable:
                blob = ks._secrets.backend.get(ident.name, v.version)
                scan.secret(f"{ident.name} v{v.version} secret", blob)


def test_key_store_flows(scan: Scan, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pqselfenc.keys import KeyStore
    from pqselfenc.keys import _envelopes as envelopes_module

    scan.passphrase(PASSPHRASE)
    scan.passphrase(EXPORT_PASSPHRASE)
    real_urandom = os.urandom

    def urandom(n: int) -> bytes:  # vault key, self-test DMKs, seeds: every 32+ byte draw
        value = real_urandom(n)
        if n >= 32:
            scan.secret("urandom draw", value)
        return value

    monkeypatch.setattr(os, "urandom", urandom)
    rng = Recording(scan)
    real_seal = envelopes_module.seal
    monkeypatch.setattr(envelopes_module, "seal", lambda *a, **k: real_seal(*a, rng=rng, **k))

    ks = KeyStore.open(tmp_path / "ks", passphrase=PASSPHRASE)
    v1 = ks.generate("alice")
    ks.generate("bob", suite="ml-kem-1024", signature="ml-dsa-87")
    cfg = EncryptionConfig(chunk_size=256)
    data_map, _ = SelfEncryptor(os.urandom(2000), cfg, key_store=ks).encrypt()
    sealed = ks.seal(data_map, ["alice"], sign_as="alice")
    assert ks.open_envelope(sealed, signer="alice") == data_map
    v2 = ks.rotate("alice")
    _store_secrets(scan, ks)  # v1 is still usable here: collect it before it is destroyed
    rewrapped = ks.rewrap(sealed)
    exported = ks.export_identity("alice", EXPORT_PASSPHRASE)
    ks.destroy("alice", 1)
    rng.derived([])
    from pqselfenc.kem import inspect

    rng.derived([inspect(sealed).envelope_id, inspect(rewrapped).envelope_id])
    report = ks.audit.verify()
    assert report.ok, report
    scan.see(ks, v1, v2, ks.identity("alice"), ks.identities, report, ks.audit, ks.config)
    scan.see(ks._secrets.backend, ks._secret, ks.signing_key("alice"), ks.due(), ks.recipients)
    scan.see(ks._secrets, ks._ledger)
    # failures: destroyed version, wrong passphrase, unknown names, tampered envelope
    scan.failing(lambda: ks.open_envelope(sealed))
    scan.failing(lambda: KeyStore.open(tmp_path / "ks", passphrase=PASSPHRASE + "x"))
    scan.failing(lambda: ks.seal(data_map, ["nobody"]))
    scan.failing(lambda: ks.destroy("alice", 9))
    scan.failing(lambda: ks.open_envelope(rewrapped[:-1]))
    scan.failing(lambda: ks.import_identity(exported, "wrong passphrase", name="carol"))
    ks.close()
    for path in (tmp_path / "ks").rglob("*"):  # at rest: only public data, or ciphertext
        if path.is_file():
            scan.file(path)
    scan.texts.append(("identity export", exported.decode("latin-1")))


def test_pkcs11_key_store_flows(scan: Scan, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                softhsm: Any) -> None:  # fmt: skip
    """Issue 15: "no seed ever on disk unwrapped". The same flows on a store whose secrets a
    real token wraps (SoftHSM): every seed, the store secret and the PIN are looked for in every
    file of the store folder *and of the token's own folder*, in messages, reprs and logs."""
    from pqselfenc.keys import KeyStore
    from pqselfenc.keys.pkcs11_backend import Pkcs11Backend

    for name, value in softhsm.env().items():
        if name.startswith("PQSELFENC_PKCS11_"):
            monkeypatch.setenv(name, value)
    scan.passphrase(softhsm.pin)
    scan.passphrase(EXPORT_PASSPHRASE)
    real_urandom = os.urandom

    def urandom(n: int) -> bytes:  # root secret, self-test DMKs, seeds, IVs: every draw >= 32
        value = real_urandom(n)
        if n >= 32:
            scan.secret("urandom draw", value)
        return value

    monkeypatch.setattr(os, "urandom", urandom)
    ks = KeyStore.open(tmp_path / "ks", backend="pkcs11")
    ks.generate("alice")
    ks.generate("bob", suite="ml-kem-1024", signature="ml-dsa-87")
    data_map, _ = SelfEncryptor(real_urandom(2000), EncryptionConfig(chunk_size=256),
                                key_store=ks).encrypt()  # fmt: skip
    sealed = ks.seal(data_map, ["alice"], sign_as="alice")
    assert ks.open_envelope(ks.seal(data_map, ["bob"], sign_as="bob")) == data_map
    assert ks.open_envelope(sealed, signer="alice") == data_map
    ks.rotate("alice")
    _store_secrets(scan, ks)
    exported = ks.export_identity("alice", EXPORT_PASSPHRASE)
    ks.rewrap(sealed)
    ks.destroy("alice", 1)
    assert isinstance(ks._secrets.backend, Pkcs11Backend)
    scan.see(ks, ks._secrets, ks._secrets.backend, ks._ledger, ks.identities, ks.audit)
    scan.see(ks.rollback_protection(), ks.token_capabilities())
    scan.failing(lambda: ks.open_envelope(sealed[:-1]))
    scan.failing(lambda: KeyStore.open(tmp_path / "ks", backend="pkcs11", pin=softhsm.pin + "0"))
    ks.close()
    scan.failing(lambda: KeyStore.open(tmp_path / "ks", backend="pkcs11", pin=softhsm.pin + "0"))
    files = [p for root in (tmp_path / "ks", softhsm.tokendir) for p in root.rglob("*")
             if p.is_file()]  # fmt: skip
    assert any(p.suffix == ".p11" for p in files) and any(p.suffix == ".object" for p in files)
    for path in files:
        scan.file(path)
    scan.texts.append(("identity export", exported.decode("latin-1")))
