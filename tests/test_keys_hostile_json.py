"""Hostile values in every keys parser (issue 11 item 7) and imported seeds that are not seeds
(issue 18 item 6).

Every integer read from a file someone else can write (exports, metadata, audit lines) is
range-checked before use, every field type-checked: whatever is put at any place of a valid
document, only a ``pqselfenc`` error comes out. The sweeps below put each value of
``fuzz_keys.HOSTILE_VALUES`` (lists for strings, huge, negative and float numbers, bools, null,
deep nesting, odd unicode) at every path of a real document, and remove every field; the
``*_typed`` fuzz targets do the same at random under hypothesis and atheris.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import hashlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _keys_support import StoreFactory, small_map

sys.path.insert(0, str(Path(__file__).resolve().parent / "fuzz"))

import fuzz_keys as K

from pqselfenc.core import _primitives as P
from pqselfenc.error import Error, InvalidDataError, WeakSecretError
from pqselfenc.keys import KeyConfig, KeyState
from pqselfenc.keys import _metadata as M
from pqselfenc.keys._audit_format import check_line
from pqselfenc.keys._entropy import check_seed, shortest_period
from pqselfenc.keys._json import loads
from pqselfenc.keys._transfer import parse_export
from pqselfenc.keys._vault import passphrase_encrypt

EXPORT_PASSPHRASE = "quartz-lantern-ripple-meadow-falcon-7"


def sweep(document: Any, parse: Callable[[Any], object]) -> int:
    """``parse`` each variant of ``document`` (one path replaced by one hostile value, or
    removed); only a pqselfenc ``Error`` may escape. The number of variants tried."""
    tried = 0
    for path in K._paths(document):
        for choice in range(len(K.HOSTILE_VALUES) + 1):
            variant = copy.deepcopy(document)
            parent = variant
            for key in path[:-1]:
                parent = parent[key]
            if choice == len(K.HOSTILE_VALUES):
                del parent[path[-1]]
            else:
                parent[path[-1]] = copy.deepcopy(K.HOSTILE_VALUES[choice])
            with contextlib.suppress(Error):
                parse(variant)
            tried += 1
    return tried


def dump(obj: Any) -> bytes:
    return K._dump(obj)


def test_every_place_of_an_identity_export_takes_any_value() -> None:
    doc = json.loads(K.seed_store().export)
    assert sweep(doc, lambda d: parse_export(dump(d), KeyConfig())) > 500


def test_every_place_of_keystore_json_takes_any_value() -> None:
    """Before the MAC (the unauthenticated read that finds the backend) and after it (re-MACed
    with the store's key, as if its holder wrote it)."""
    seed = K.seed_store()
    doc = json.loads(seed.metadata)

    def both(variant: Any) -> None:
        with_mac = K.remac_metadata(variant)
        for raw, key in ((dump(variant), None), (with_mac, seed.mac_key)):
            with contextlib.suppress(Error):
                M.from_json(raw, key)

    assert sweep(doc, both) > 2000


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16", "utf-32-be", "utf-32", "utf-8-sig"])
def test_key_store_json_in_another_encoding_is_refused(encoding: str) -> None:
    """Every JSON file the key store reads goes through ``keys/_json.loads``: UTF-8, decoded
    strictly, so UTF-16/32 (which ``json.loads(bytes)`` would guess) and a byte-order mark are
    refused (review #1, finding 15, checked here for the keys layer)."""
    raw = K.seed_store().metadata
    assert M.from_json(raw, None).backend == "file"
    with pytest.raises(InvalidDataError, match="keystore metadata is not valid JSON"):
        M.from_json(raw.decode().encode(encoding), None)
    line = K.seed_store().log.splitlines()[0]
    with pytest.raises(InvalidDataError):
        check_line(loads(line.decode().encode(encoding), InvalidDataError, "the line"))


def test_every_place_of_every_kind_of_audit_line_takes_any_value() -> None:
    lines = [json.loads(x) for x in K.seed_store().log.splitlines()]
    kinds = {(x["action"], "generation" in x): x for x in lines}
    assert len(kinds) >= 5
    for line in kinds.values():
        sweep(line, check_line)


def test_hostile_audit_lines_through_verify_and_open() -> None:
    """A sample through the whole reader (re-hashed and re-MACed): verify reports, the readers
    used at open raise AuditError, nothing else."""
    for program in (b"\x01\x03\x00", b"\x04\x07\x10", b"\x05\x00\x20", b"\x02\x09\x2a"):
        report = K._audit_typed(program)
        assert report is not None


# -- imports end to end ---------------------------------------------------------------------------


def export_blob(doc: dict[str, Any]) -> bytes:
    plain = json.dumps(doc).encode()
    return passphrase_encrypt(P.EXPORT_MAGIC, P.EXPORT_LABEL, plain, EXPORT_PASSPHRASE)


def export_doc(secret: bytes, version: object = 1, **fields: object) -> dict[str, Any]:
    return {"format": "pqselfenc-identity", "version": 1, "name": "zed", "suite": "x-wing",
            "signature": "ml-dsa-65", "versions": [{"version": version, "state": "active",
            "created": "2026-01-01T00:00:00.000000Z", "retired": None,
            "secret": base64.b64encode(secret).decode()}], **fields}  # fmt: skip


def pair_record(kem: bytes, dsa: bytes) -> bytes:
    return bytes([1, len(kem)]) + kem + dsa


def random_record() -> bytes:
    return pair_record(os.urandom(96), os.urandom(32))


@pytest.mark.parametrize(
    ("doc", "error"),
    [
        (export_doc(random_record(), 2**32), InvalidDataError),  # struct.error before
        (export_doc(random_record(), -1), InvalidDataError),
        (export_doc(random_record(), True), InvalidDataError),
        (export_doc(random_record(), 1.0), InvalidDataError),
        (export_doc(random_record(), suite=[]), InvalidDataError),  # TypeError before
        (export_doc(random_record(), name=["zed"]), InvalidDataError),
        (export_doc(random_record(), name="../zed"), InvalidDataError),  # ValueError before
        (export_doc(random_record(), versions="x"), InvalidDataError),
        (export_doc(random_record(), signature={"a": 1}), InvalidDataError),
    ],
    ids=["version-2^32", "version-negative", "version-bool", "version-float", "suite-list",
         "name-list", "name-path", "versions-string", "signature-object"],
)
def test_hostile_exports_are_refused_with_our_error(
    open_store: StoreFactory, doc: dict[str, Any], error: type[Error]
) -> None:
    ks = open_store()
    with pytest.raises(error):
        ks.import_identity(export_blob(doc), EXPORT_PASSPHRASE)
    assert ks.identities == {}
    failed = [e for e in ks.audit.events() if e["action"] == "import"]
    assert failed and failed[-1]["outcome"] == "failure"  # every refusal is audited


# -- issue 18 item 6: min_entropy and the seeds an import brings ---------------------------------

WEAK_RECORDS = {
    "all-zero": pair_record(bytes(96), bytes(32)),
    "constant": pair_record(b"\x5a" * 96, b"\x5a" * 32),
    "zero-ml-dsa-seed": pair_record(os.urandom(96), bytes(32)),
    "zero-x25519-key": pair_record(os.urandom(64) + bytes(32), os.urandom(32)),
    "period-4": pair_record(b"\x01\x02\x03\x04" * 24, os.urandom(32)),
    "period-16": pair_record(os.urandom(64) + os.urandom(16) * 2, os.urandom(32)),
    "run-of-4": pair_record(os.urandom(20) + b"\x07" * 4 + os.urandom(72), os.urandom(32)),
}


@pytest.mark.parametrize("record", WEAK_RECORDS.values(), ids=WEAK_RECORDS.keys())
def test_imported_seeds_must_pass_the_health_tests(
    open_store: StoreFactory, record: bytes
) -> None:
    """Every seed an import brings passes the tests a generated draw passes (repetition count,
    adaptive proportion) and has no period of 16 bytes or less."""
    ks = open_store()
    with pytest.raises(WeakSecretError, match=r"health tests|repeats every"):
        ks.import_identity(export_blob(export_doc(record)), EXPORT_PASSPHRASE)
    assert ks.identities == {}
    assert [e["outcome"] for e in ks.audit.events() if e["action"] == "import"] == ["failure"]


def test_all_zero_seeds_are_refused_under_min_entropy_256(open_store: StoreFactory) -> None:
    """Issue 18 item 6 as reported: an export whose seeds are all zero bytes imported as an
    active identity under KeyConfig(min_entropy=256). (That setting now also requires the
    category 5 algorithms, ml-kem-1024 and ml-dsa-87.)"""
    ks = open_store(min_entropy=256, suite="ml-kem-1024", signature="ml-dsa-87")
    zero = export_doc(pair_record(bytes(64), bytes(32)), suite="ml-kem-1024",
                      signature="ml-dsa-87")  # fmt: skip
    with pytest.raises(WeakSecretError, match="health tests"):
        ks.import_identity(export_blob(zero), EXPORT_PASSPHRASE)
    assert ks.identities == {}


def test_a_healthy_export_still_imports(open_store: StoreFactory) -> None:
    ks = open_store()
    ident = ks.import_identity(export_blob(export_doc(random_record())), EXPORT_PASSPHRASE)
    assert ident.active is not None and ident.active.state is KeyState.ACTIVE


def test_min_entropy_is_the_least_strength_the_store_accepts(
    open_store: StoreFactory, tmp_path: Path
) -> None:
    """min_entropy=256: only ml-kem-1024 and ml-dsa-87 (category 5) are accepted, anywhere a
    key enters or is used to seal: config, generate, import, recipients, seal, rotate."""
    with pytest.raises(ValueError, match="x-wing is 192-bit strong, below min_entropy=256"):
        KeyConfig(min_entropy=256, suite="x-wing")
    with pytest.raises(ValueError, match="ml-dsa-65 is 192-bit strong, below min_entropy=256"):
        KeyConfig(min_entropy=256, signature="ml-dsa-65")
    default = KeyConfig(min_entropy=256)  # the defaults follow the bound (the seed page's form)
    assert (default.suite, default.signature) == ("ml-kem-1024", "ml-dsa-87")
    assert (KeyConfig().suite, KeyConfig().signature) == ("x-wing", "ml-dsa-65")
    assert KeyConfig().min_entropy == 192 and KeyConfig(min_entropy=128).check_suite("x-wing")
    weak = open_store(path=tmp_path / "weak")
    weak.generate("old")
    strict = open_store(path=tmp_path / "weak", min_entropy=256, suite="ml-kem-1024",
                        signature="ml-dsa-87")  # fmt: skip
    cnsa = strict.generate("cnsa")
    assert cnsa.public_key.startswith("pqse-pub-ml-kem-1024:")
    with pytest.raises(ValueError, match="192-bit"):
        strict.generate("x", suite="x-wing")
    with pytest.raises(ValueError, match="192-bit"):
        strict.generate("x", signature="ml-dsa-65")
    with pytest.raises(ValueError, match="192-bit"):
        strict.rotate("old")  # an identity made under a laxer policy gets no new x-wing key
    with pytest.raises(ValueError, match="192-bit"):
        strict.recipients.add("bob", weak.identity("old").versions[0].public_key)
    with pytest.raises(ValueError, match="192-bit"):
        strict.seal(small_map(), to=["old"])
    with pytest.raises(ValueError, match="192-bit"):
        strict.seal(small_map(), to=["cnsa"], sign_as="old")
    blob = weak.export_identity("old", EXPORT_PASSPHRASE)
    with pytest.raises(WeakSecretError, match="192-bit"):
        strict.import_identity(blob, EXPORT_PASSPHRASE, name="again")
    assert strict.open_envelope(weak.seal(small_map(), to=["old"]))  # old keys still open


def test_check_seed_refuses_trivial_seeds_and_passes_random_ones() -> None:
    for i in range(500):  # fixed pseudo-random seeds: all pass (a random one fails ~1.7e-6)
        check_seed(hashlib.shake_256(f"seed {i}".encode()).digest(32))
    assert shortest_period(bytes(32)) == 1 and shortest_period(b"ab" * 16) == 2
    assert shortest_period(b"0123456789abcdef" * 2) == 16
    assert shortest_period(b"0123456789abcdefg" * 2) is None  # 17: beyond the bound
    for seed in (bytes(32), b"\x01" * 32, b"abcd" * 8, b"0123456789abcdef" * 2, b"",
                 b"x" * 4 + bytes(range(28)), bytes(range(20)) + b"\x00" * 12):
        with pytest.raises(WeakSecretError):
            check_seed(seed)
