"""Adversarial tests of the key store's parsers: metadata, audit lines, the checkpoint file.

An insider with disk access can write anything into ``keystore.json``, ``audit.jsonl`` and
``audit.checkpoint``. Whatever they write, the store must answer with a ``pqselfenc`` ``Error``
(or an ``AuditReport`` that says what is broken), never a foreign exception. The fuzz and
hypothesis targets (``tests/fuzz/fuzz_keys.py``) cover random and mutated inputs; the cases here
are the hostile shapes found by them or known to break JSON readers.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "fuzz"))

import fuzz_keys as K

from pqselfenc.error import AuditError, Error, InvalidDataError
from pqselfenc.keys import AuditLog, KeyConfig, KeyStore
from pqselfenc.keys import _metadata as M
from pqselfenc.keys.audit import chain_hash

DEEP = b"[" * 100_000 + b"]" * 100_000
HOSTILE_JSON = {
    "deep-array": DEEP,
    "deep-object": b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    "not-json": b"x",
    "huge-int": b'{"seq": 1' + b"0" * 5000 + b"}",
    "nan": b'{"seq": NaN}',
}


def copy_store(tmp_path: Path) -> Path:
    d = tmp_path / "ks"
    shutil.copytree(K.seed_store().directory, d)
    return d


def audit_of(d: Path) -> AuditLog:
    seed = K.seed_store()
    return AuditLog(d, clock=K.StepClock(), signer=seed.signer, verifier=seed.verifier,  # type: ignore[arg-type]
                    checkpoint_every=3, actor="test", mac_key=seed.audit_mac_key)  # fmt: skip


@pytest.mark.parametrize("raw", HOSTILE_JSON.values(), ids=HOSTILE_JSON.keys())
def test_hostile_metadata_is_invalid_data(raw: bytes) -> None:
    with pytest.raises(InvalidDataError):
        M.from_json(raw, None)


@pytest.mark.parametrize("raw", HOSTILE_JSON.values(), ids=HOSTILE_JSON.keys())
def test_a_store_with_hostile_metadata_fails_to_open_with_our_error(
    raw: bytes, tmp_path: Path
) -> None:
    d = copy_store(tmp_path)
    (d / "keystore.json").write_bytes(raw)
    with pytest.raises(Error):
        KeyStore.open(d, config=KeyConfig(checkpoint_every=3), passphrase=K.PASSPHRASE)


@pytest.mark.parametrize("raw", HOSTILE_JSON.values(), ids=HOSTILE_JSON.keys())
def test_hostile_audit_line_is_reported_by_verify(raw: bytes, tmp_path: Path) -> None:
    d = copy_store(tmp_path)
    with (d / "audit.jsonl").open("ab") as fh:
        fh.write(raw + b"\n")
    report = audit_of(d).verify()
    assert not report.ok and report.kind == "malformed"


UNPARSABLE = {k: v for k, v in HOSTILE_JSON.items() if k != "nan"}  # NaN is JSON to Python


@pytest.mark.parametrize("raw", UNPARSABLE.values(), ids=UNPARSABLE.keys())
def test_hostile_audit_line_reading_events_raises_our_error(raw: bytes, tmp_path: Path) -> None:
    """``AuditLog.events()`` is public (unverified reading): a line that does not parse is an
    Error, not a ``json`` exception."""
    d = copy_store(tmp_path)
    with (d / "audit.jsonl").open("ab") as fh:
        fh.write(raw + b"\n")
    with pytest.raises(Error):
        list(audit_of(d).events())


@pytest.mark.parametrize("raw", HOSTILE_JSON.values(), ids=HOSTILE_JSON.keys())
def test_hostile_last_audit_line_blocks_appends_with_audit_error(
    raw: bytes, tmp_path: Path
) -> None:
    """Fail closed: nothing is chained onto a line that does not parse, and it says so."""
    from pqselfenc.error import AuditError

    d = copy_store(tmp_path)
    with (d / "audit.jsonl").open("ab") as fh:
        fh.write(raw + b"\n")
    with pytest.raises(AuditError):
        audit_of(d).record("generate", name="mallory")


@pytest.mark.parametrize("raw", HOSTILE_JSON.values(), ids=HOSTILE_JSON.keys())
def test_hostile_checkpoint_file_is_reported_by_verify(raw: bytes, tmp_path: Path) -> None:
    d = copy_store(tmp_path)
    (d / "audit.checkpoint").write_bytes(raw)
    report = audit_of(d).verify()
    assert not report.ok and report.kind == "malformed"


def _rehash_tail(log: bytes, start: int, edit: dict[str, object]) -> bytes:
    """Rewrite line ``start`` with ``edit`` and recompute every later hash (no key needed; the
    MACs are left as they were: the attacker cannot compute them)."""
    lines = [json.loads(x) for x in log.splitlines()]
    prev = bytes.fromhex(lines[start]["prev"])
    lines[start] |= edit
    for obj in lines[start:]:
        obj["prev"] = prev.hex()
        body = {k: v for k, v in obj.items() if k not in ("prev", "hash", "mac")}
        prev = chain_hash(prev, body)
        obj["hash"] = prev.hex()
    out = [json.dumps(o, sort_keys=True, separators=(",", ":")).encode() for o in lines]
    return b"".join(line + b"\n" for line in out)


def test_insider_cannot_rewrite_events_after_the_last_checkpoint(tmp_path: Path) -> None:
    """The hash chain has no key, but every line carries a MAC keyed from the store's root
    secret: an insider who rewrites and re-hashes the events after the last signed checkpoint
    (the window the release before left open) is caught by verify at the first rewritten line,
    and nothing is appended after it, with or without its old MAC."""
    d = copy_store(tmp_path)
    audit = audit_of(d)
    audit.record("seal", name="alice", detail="after the checkpoint")
    log = (d / "audit.jsonl").read_bytes()
    last = len(log.splitlines()) - 1
    assert json.loads(log.splitlines()[last - 1])["action"] == "checkpoint"
    for strip in (False, True):
        forged = _rehash_tail(log, last, {"name": "mallory"})
        if strip:
            mac = json.loads(forged.splitlines()[-1])["mac"]
            forged = forged.replace(f',"mac":"{mac}"'.encode(), b"")
        (d / "audit.jsonl").write_bytes(forged)
        report = audit.verify()
        assert not report.ok and (report.kind, report.seq) == ("bad-mac", last + 1)
        with pytest.raises(AuditError, match="no valid MAC"):
            audit.record("open", name="alice")
        with pytest.raises(AuditError, match="no valid MAC"):
            audit.checkpoint()  # no signature is ever made over the forged line
        assert (d / "audit.jsonl").read_bytes() == forged
    (d / "audit.jsonl").write_bytes(log)
    assert audit.verify().ok
