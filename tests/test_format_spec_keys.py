"""docs/format.md section 4 is a complete spec (issue 18, "the spec, for a third party").

Two checks: every constant the section names is given a value there, and every value equals
``pqselfenc/core/_primitives.py`` (so the spec cannot drift); then a reader written from the
section alone (its table of values, ``cryptography``, ``argon2``, ``hashlib``; no pqselfenc code)
opens a real store's vault, key files and store secret, derives its convergence secret and
both MAC keys, checks keystore.json's MAC and every audit line's hash and MAC, and opens an
identity export.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import struct
from pathlib import Path
from typing import Any

import pytest
from _keys_support import PASSPHRASE, StoreFactory, small_map
from argon2.low_level import Type, hash_secret_raw
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pqselfenc.core import _primitives as P
from pqselfenc.kem import generate_identity
from pqselfenc.keys import KeyConfig
from pqselfenc.keys._material import encode_pair

SPEC = Path(__file__).resolve().parent.parent / "docs" / "format.md"
ROW = re.compile(r"^\| `P\.([A-Z0-9_]+)` \| (hex )?`([^`]*)` \|", re.MULTILINE)
STRENGTH = re.compile(r"^\| `([a-z0-9-]+)` \| `(\d+)` \|$", re.MULTILINE)


def section_4() -> str:
    text = SPEC.read_text()
    return text[text.index("## 4. Key store") :]


def spec_values() -> dict[str, bytes | int]:
    """The constants table of section 4.0, as bytes (labels, magics, hex) or ints."""
    values: dict[str, bytes | int] = {}
    for name, is_hex, text in ROW.findall(section_4()):
        if is_hex:
            values[name] = bytes.fromhex(text)
        elif text.isdigit():
            values[name] = int(text)
        else:
            values[name] = text.replace("\\0", "\x00").encode("ascii")
    return values


def test_every_constant_named_in_section_4_has_its_value_there() -> None:
    named = set(re.findall(r"`P\.([A-Z0-9_]+)", section_4()))
    stated = set(spec_values())
    tables = {"SUITE_STRENGTH_BITS", "SIG_STRENGTH_BITS"}  # stated as their own table
    assert named - stated - tables == set(), "named without a value"
    assert len(stated) >= 35


def test_every_value_stated_is_the_code_s() -> None:
    for name, value in spec_values().items():
        code = getattr(P, name)  # a label the token or keyring stores as text is a str
        assert code == (value.decode("ascii") if isinstance(code, str) else value), name


def test_the_strength_table_and_the_defaults_are_the_code_s() -> None:
    table_text = section_4().split("| algorithm | bits |", 1)[1].split("\n\n", 1)[0]
    rows = dict(STRENGTH.findall(table_text))
    for name, bits in rows.items():
        table, ids = ((P.SIG_STRENGTH_BITS, P.SIG_IDS) if name in P.SIG_IDS
                      else (P.SUITE_STRENGTH_BITS, P.SUITE_IDS))  # fmt: skip
        assert table[ids[name]] == int(bits), name
    assert set(rows) == set(P.SUITE_IDS) | set(P.SIG_IDS)
    domain = re.search(r"The default convergence domain is `([^`]+)`", section_4())
    assert domain is not None and domain.group(1) == KeyConfig().domain
    default = re.search(r"`KeyConfig\.min_entropy` \(default `(\d+)`", section_4())
    assert default is not None and int(default.group(1)) == KeyConfig().min_entropy


# -- a reader from the spec alone ------------------------------------------------------------------

V = spec_values()


def hkdf(ikm: bytes, info: bytes, length: int = 32) -> bytes:
    """Section 4's HKDF: SHA3-256, no salt."""
    return HKDF(algorithm=hashes.SHA3_256(), length=length, salt=None, info=info).derive(ikm)


def open_passphrase_blob(blob: bytes, magic: bytes, label: bytes, passphrase: str) -> bytes:
    """vault.key / an export (4.3, 4.4)."""
    got, version, t, m, p = struct.unpack(">8sBIIB", blob[:18])
    assert (got, version) == (magic, V["KEY_FILE_VERSION"])
    assert (t, m, p) == (V["ARGON2_TIME_COST"], V["ARGON2_MEMORY_KIB"], V["ARGON2_PARALLELISM"])
    salt, nonce = blob[18:34], blob[34:46]
    kek = hash_secret_raw(passphrase.encode(), salt, t, m, p, 32, Type.ID, version=0x13)
    return AESGCM(kek).decrypt(nonce, blob[46:], label + blob[:46])


def open_key_file(vault_key: bytes, path: Path, name: str, version: int) -> bytes:
    """secrets/<name>.v<N>.key (4.3)."""
    blob = path.read_bytes()
    assert blob[:9] == V["KEY_FILE_MAGIC"] + bytes([V["KEY_FILE_VERSION"]])  # type: ignore[operator, list-item]
    k = hkdf(vault_key, V["KEY_FILE_LABEL"])  # type: ignore[arg-type]
    aad = V["KEY_FILE_LABEL"] + blob[:9] + name.encode() + b"\x00" + struct.pack(">I", version)  # type: ignore[operator]
    return AESGCM(k).decrypt(blob[9:21], blob[21:], aad)


def canonical(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def test_a_reader_from_section_4_alone_opens_a_real_store(open_store: StoreFactory) -> None:
    ks = open_store(checkpoint_every=3)
    ks.generate("alice")
    ks.recipients.add("bob", str(generate_identity().recipient()))
    ks.seal(small_map(), to=["alice", "bob"], sign_as="alice")
    export = ks.export_identity("alice", "quartz-lantern-ripple-meadow-falcon-7")
    ks.close()
    d = ks.directory
    vault = (d / "vault.key").read_bytes()
    assert len(vault) == 94
    vault_key = open_passphrase_blob(vault, V["VAULT_MAGIC"], V["VAULT_WRAP_LABEL"], PASSPHRASE)  # type: ignore[arg-type]
    assert len(vault_key) == V["VAULT_KEY_SIZE"]
    record = open_key_file(vault_key, d / "secrets" / "alice.v1.key", "alice", 1)
    assert record[:2] == bytes([1, 96]) and len(record) == 2 + 96 + V["MLDSA_SEED_SIZE"]  # type: ignore[operator]
    ident = ks.identity("alice")
    assert record == encode_pair(ks._secrets.pair(ident, ident.version(1)))
    store = open_key_file(vault_key, d / "secrets" / "_store.v1.key", "_store", 1)
    assert store[0] == 2 and len(store) == 65
    root = store[1:33]
    label: bytes = V["CONVERGENCE_SECRET_LABEL"]  # type: ignore[assignment]
    assert hkdf(root, label + b"default") == ks.convergence_secret()

    doc = json.loads((d / "keystore.json").read_bytes())
    mac = doc.pop("mac")
    meta_key = hkdf(root, V["METADATA_MAC_LABEL"])  # type: ignore[arg-type]
    assert mac == hmac.new(meta_key, canonical(doc), hashlib.sha3_256).hexdigest()

    audit_key = hkdf(root, V["AUDIT_MAC_LABEL"])  # type: ignore[arg-type]
    prev: bytes = V["AUDIT_GENESIS"]  # type: ignore[assignment]
    commits, offset = [], 0
    for raw in (d / "audit.jsonl").read_bytes().splitlines():
        line = json.loads(raw)
        body = {k: v for k, v in line.items() if k not in ("prev", "hash", "mac")}
        digest = hashlib.sha3_256(V["AUDIT_CHAIN_LABEL"] + prev + canonical(body)).digest()  # type: ignore[operator]
        assert (line["prev"], line["hash"]) == (prev.hex(), digest.hex())
        message = digest + struct.pack(">Q", offset)
        assert line["mac"] == hmac.new(audit_key, message, hashlib.sha3_256).hexdigest()
        if "generation" in line:
            commits.append((line["generation"], line["meta_mac"]))
        prev, offset = digest, offset + len(raw) + 1
    assert commits[-1] == (doc["generation"], mac)  # the binding of 4.5
    assert (d / "audit.checkpoint").read_bytes().rstrip(b"\n") == raw

    plain = open_passphrase_blob(export, V["EXPORT_MAGIC"], V["EXPORT_LABEL"],  # type: ignore[arg-type]
                                 "quartz-lantern-ripple-meadow-falcon-7")  # fmt: skip
    exported = json.loads(plain)
    assert (exported["format"], exported["version"], exported["name"]) == (
        "pqselfenc-identity", 1, "alice")  # fmt: skip
    assert base64.b64decode(exported["versions"][0]["secret"]) == record


@pytest.mark.parametrize("name", ["SUITE_STRENGTH_BITS", "SIG_STRENGTH_BITS"])
def test_the_strength_tables_cover_every_algorithm(name: str) -> None:
    ids = P.SUITE_IDS if name.startswith("SUITE") else P.SIG_IDS
    assert set(getattr(P, name)) == set(ids.values())
