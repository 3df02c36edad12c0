"""Audit export for a SIEM and ``audit verify --json`` (issue 15, item 4; docs/format.md 4.9).

Every exported line was verified first, the export stops at the first bad line with the good
prefix out and exit 1, consecutive exports chain (seq + 1, prev = last hash), a log rewritten or
cut between two exports is caught, and the log is read in bounded memory.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tracemalloc
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from _cli_helpers import Result, run
from _keys_support import PASSPHRASE, FakeClock, StoreFactory, rechain

from pqselfenc.error import AuditError
from pqselfenc.keys import KeyStore
from pqselfenc.keys.audit import ExportRecord, ExportState

FAIL_KEYRING = "keyring.backends.fail.Keyring"
ZERO = "0" * 64


def _lines(ks: KeyStore) -> list[dict[str, Any]]:
    return [json.loads(x) for x in ks.audit.path.read_bytes().splitlines()]


def _busy(ks: KeyStore, clock: FakeClock, rounds: int = 2) -> None:
    for _ in range(rounds):
        clock.advance(minutes=1)
        ks.rotate("alice")
    ks.close()


def _spec_hash(event: dict[str, Any]) -> str:
    """docs/format.md 4.6, from the text alone: SHA3-256(label || prev || canonical(body))."""
    body = {k: v for k, v in event.items() if k not in ("prev", "hash", "mac")}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    prev = bytes.fromhex(event["prev"])
    return hashlib.sha3_256(b"pqselfenc/v1/audit-chain" + prev + text).hexdigest()


def _chained(records: list[dict[str, Any]], prev: str = ZERO, seq: int = 0) -> None:
    """What a SIEM checks (docs/format.md 4.9): seq + 1, prev = the last hash, hash recomputed."""
    for record in records:
        assert (record["seq"], record["prev"]) == (seq + 1, prev)
        assert record["hash"] == record["event"]["hash"] == _spec_hash(record["event"])
        assert record["seq"] == record["event"]["seq"] and record["prev"] == record["event"]["prev"]
        prev, seq = record["hash"], record["seq"]


def _as_json(records: list[ExportRecord]) -> list[dict[str, Any]]:
    return [json.loads(r.to_json()) for r in records]


@pytest.fixture
def store(open_store: StoreFactory, clock: FakeClock) -> KeyStore:
    ks = open_store()
    ks.generate("alice")
    _busy(ks, clock)
    return ks


def _export(path: Path, since: Any = None) -> tuple[list[ExportRecord], Any]:
    export = KeyStore.export_audit(path, since=since, passphrase=PASSPHRASE)
    records: list[ExportRecord] = []
    try:
        for record in export:
            records.append(record)
    except AuditError:
        pass
    return records, export


# -- the library -------------------------------------------------------------------------------


def test_every_line_is_exported_with_its_chain_position(store: KeyStore, tmp_path: Path) -> None:
    records, export = _export(tmp_path / "ks")
    assert export.report.ok and [r.event for r in records] == _lines(store)
    docs = _as_json(records)
    _chained(docs)
    store_id = json.loads((tmp_path / "ks" / "keystore.json").read_text())["store_id"]
    assert {d["store_id"] for d in docs} == {store_id}
    assert {(d["format"], d["version"]) for d in docs} == {("pqselfenc-audit-export", 1)}
    assert all(r.to_json() == json.dumps(d, sort_keys=True, separators=(",", ":")).encode()
               for r, d in zip(records, docs, strict=True))  # fmt: skip
    assert export.state == ExportState(store_id, records[-1].seq, records[-1].hash)
    assert export.report.last_hash == records[-1].hash


def test_two_exports_chain_into_each_other(
    store: KeyStore, clock: FakeClock, tmp_path: Path
) -> None:
    first, export = _export(tmp_path / "ks")
    saved = ExportState.parse(export.state.to_json())
    _busy(store, clock)
    second, again = _export(tmp_path / "ks", since=saved)
    assert second and again.report.ok
    _chained(_as_json(second), prev=first[-1].hash, seq=first[-1].seq)
    by_seq, _ = _export(tmp_path / "ks", since=first[-1].seq)
    assert [r.event for r in by_seq] == [r.event for r in second]
    nothing, done = _export(tmp_path / "ks", since=again.state)
    assert nothing == [] and done.report.ok and done.state == again.state


def test_export_since_a_time_is_a_contiguous_range(
    store: KeyStore, clock: FakeClock, tmp_path: Path
) -> None:
    lines = _lines(store)
    cut = clock.now
    _busy(store, clock)
    records, export = _export(tmp_path / "ks", since=cut + timedelta(seconds=1))
    assert export.report.ok and records[0].seq == len(lines) + 1
    _chained(_as_json(records), prev=lines[-1]["hash"], seq=len(lines))


def _forge(ks: KeyStore, index: int, mac_key: bytes | None) -> None:
    """Rewrite line ``index`` (0-based) and re-chain every line from it: without the MAC key
    (an attacker) the lines from there on carry no valid MAC."""
    lines = _lines(ks)
    lines[index]["actor"] = "mallory"
    good = b"".join(ks.audit.path.read_bytes().splitlines(keepends=True)[:index])
    tail = rechain(lines, mac_key).splitlines(keepends=True)[index:]
    ks.audit.path.write_bytes(good + b"".join(tail))


@pytest.mark.parametrize("how", ["forged", "edited"])
def test_an_export_stops_at_the_first_bad_line(store: KeyStore, tmp_path: Path, how: str) -> None:
    whole = _lines(store)
    if how == "forged":
        _forge(store, 3, None)  # re-hashed and re-linked, no MAC: bad-mac at line 4
    else:
        raw = store.audit.path.read_bytes().splitlines(keepends=True)
        raw[3] = raw[3].replace(b'"actor":"', b'"actor":"x')  # content no longer hashes
        store.audit.path.write_bytes(b"".join(raw))
    export = KeyStore.export_audit(tmp_path / "ks", passphrase=PASSPHRASE)
    got = []
    with pytest.raises(AuditError, match="at line 4, seq 4"):
        for record in export:
            got.append(record.event)
    assert got == whole[:3]  # the good prefix, nothing past it
    assert export.report.kind == ("bad-mac" if how == "forged" else "bad-hash")
    assert (export.report.seq, export.report.line, export.state.seq) == (4, 4, 3)
    assert store.audit.verify().kind == export.report.kind  # the same verdict as verify


def test_a_log_rolled_back_and_rewritten_since_the_last_export_is_caught(
    store: KeyStore, clock: FakeClock, tmp_path: Path, open_store: StoreFactory
) -> None:
    """The whole folder is put back to an older copy (the gap the rollback anchor closes) and
    used again: the next export refuses to continue from the state it saved."""
    copy = tmp_path / "copy"
    shutil.copytree(tmp_path / "ks", copy)
    _busy(store, clock)
    _, export = _export(tmp_path / "ks")
    saved = export.state
    shutil.rmtree(tmp_path / "ks")
    shutil.copytree(copy, tmp_path / "ks")
    short, cut = _export(tmp_path / "ks", since=saved)
    assert short == [] and cut.report.kind == "truncated"  # the log now ends before saved.seq
    again = open_store()
    _busy(again, clock, rounds=3)  # new, different lines reach past saved.seq again
    records, rewritten = _export(tmp_path / "ks", since=saved)
    assert records == [] and rewritten.report.kind == "continuity"
    assert rewritten.report.seq == saved.seq and rewritten.state == saved


def test_misuse_of_since_is_refused(store: KeyStore, tmp_path: Path) -> None:
    path = tmp_path / "ks"
    for bad in (True, -1, "3", 1.5):
        with pytest.raises(TypeError):
            KeyStore.export_audit(path, since=bad, passphrase=PASSPHRASE)
    with pytest.raises(ValueError, match="another key store"):
        KeyStore.export_audit(path, since=ExportState("ab" * 16, 1, ZERO), passphrase=PASSPHRASE)
    export = KeyStore.export_audit(path, passphrase=PASSPHRASE)
    list(export)
    with pytest.raises(RuntimeError, match="once"):
        list(export)
    for raw in (b"{}", b"[]", b"x" * 5000, ExportState("ab" * 16, 1, ZERO).to_json()[:-3]):
        with pytest.raises(Exception, match="export state"):
            ExportState.parse(raw)


def test_export_reads_the_log_in_bounded_memory(
    store: KeyStore, clock: FakeClock, tmp_path: Path
) -> None:
    """A long log (valid MACs, written with the store's own key) is exported with a peak of a
    few lines in memory, where verify() holds the whole log."""
    lines = _lines(store)
    filler = dict(lines[-1], action="open", outcome="success", name="alice", detail="x" * 300)
    filler.pop("signer", None)
    filler.pop("signature", None)
    extra = [dict(filler, seq=len(lines) + i + 1) for i in range(12_000)]
    store.audit.path.write_bytes(rechain(lines + extra, store._secret.audit_mac_key()))
    size = store.audit.path.stat().st_size
    assert size > 6_000_000
    tracemalloc.start()
    try:
        export = KeyStore.export_audit(tmp_path / "ks", passphrase=PASSPHRASE)
        count = sum(1 for _ in export)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert export.report.ok and count == len(lines) + len(extra)
    assert peak < size // 8, (peak, size)


# -- the command -------------------------------------------------------------------------------


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clock: FakeClock) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PQSELFENC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PQSELFENC_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", FAIL_KEYRING)
    return tmp_path / "home" / "keys"


def ok(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> Result:
    result = run(capsys, *argv)
    assert result.code == 0, result.err
    return result


def _records(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines()]


def test_cli_export_with_a_state_file_continues_each_time(
    capsys: pytest.CaptureFixture[str], cli: Path
) -> None:
    ok(capsys, "keys", "generate", "alice")
    first = ok(capsys, "audit", "export", "--state", "export.state", "--format", "jsonl")
    docs = _records(first.out)
    _chained(docs)
    assert "exported" in first.err
    state = json.loads(Path("export.state").read_text())
    assert (state["seq"], state["hash"]) == (docs[-1]["seq"], docs[-1]["hash"])
    assert state["format"] == "pqselfenc-audit-export-state"
    assert os.stat("export.state").st_mode & 0o777 == 0o600
    ok(capsys, "keys", "rotate", "alice")
    second = _records(ok(capsys, "audit", "export", "--state", "export.state").out)
    _chained(second, prev=docs[-1]["hash"], seq=docs[-1]["seq"])
    third = ok(capsys, "audit", "export", "--state", "export.state", "--json")
    assert third.out == "" and json.loads(third.err.splitlines()[-1])["exported"] == 0
    since = _records(ok(capsys, "audit", "export", "--since", str(docs[-1]["seq"])).out)
    assert since == second


def test_cli_export_prints_the_good_prefix_then_fails(
    capsys: pytest.CaptureFixture[str], cli: Path
) -> None:
    ok(capsys, "keys", "generate", "alice")
    ok(capsys, "keys", "rotate", "alice")
    ok(capsys, "keys", "rotate", "alice")
    log = cli / "audit.jsonl"
    raw = log.read_bytes().splitlines(keepends=True)
    good = [json.loads(x) for x in raw[:3]]
    raw[3] = raw[3].replace(b'"actor":"', b'"actor":"x')
    log.write_bytes(b"".join(raw))
    failed = run(capsys, "audit", "export", "--state", "st")
    assert failed.code == 1
    assert [d["event"] for d in _records(failed.out)] == good
    assert failed.error_line().startswith("audit log broken (bad-hash) at line 4, seq 4")
    assert "the lines before it were exported" in failed.err
    assert json.loads(Path("st").read_text())["seq"] == 3  # the good prefix went out
    again = run(capsys, "audit", "export", "--state", "st")  # stuck there, loudly, every run
    assert again.code == 1 and again.out == ""


_FSYNC_FAILS_ON_STDOUT = """
import errno, os
real = os.fsync
def fsync(fd):
    if fd == 1:  # stdout, a regular file here
        raise OSError(errno.EIO, os.strerror(errno.EIO))
    real(fd)
os.fsync = fsync
from pqselfenc.cli import main
raise SystemExit(main())
"""


def test_cli_export_state_never_claims_lines_not_made_durable(
    capsys: pytest.CaptureFixture[str], cli: Path, tmp_path: Path
) -> None:
    """stdout is a file whose fsync fails (EIO): the export fails with that error and the state
    file is not advanced, so the next export repeats those lines rather than skip them."""
    ok(capsys, "keys", "generate", "alice")
    first = ok(capsys, "audit", "export", "--state", "st")
    saved = Path("st").read_bytes()
    ok(capsys, "keys", "rotate", "alice")
    with open(tmp_path / "shipped.jsonl", "wb") as out:
        child = subprocess.run(
            [sys.executable, "-c", _FSYNC_FAILS_ON_STDOUT, "audit", "export", "--state", "st"],
            stdout=out, stderr=subprocess.PIPE, text=True, timeout=120, check=False,
        )  # fmt: skip
    assert child.returncode == 1, child.stderr
    assert os.strerror(errno.EIO) in child.stderr and "state file is left as it was" in child.stderr
    assert Path("st").read_bytes() == saved
    again = _records(ok(capsys, "audit", "export", "--state", "st").out)
    last = _records(first.out)[-1]
    assert again and again[0]["seq"] == last["seq"] + 1


def test_cli_export_refuses_a_state_it_cannot_continue(
    capsys: pytest.CaptureFixture[str], cli: Path, tmp_path: Path
) -> None:
    ok(capsys, "keys", "generate", "alice")
    Path("garbage").write_text("{}")
    bad = run(capsys, "audit", "export", "--state", "garbage")
    assert "garbage: export state" in bad.error_line() and bad.out == ""
    other = ExportState("ab" * 16, 1, ZERO)
    Path("other").write_bytes(other.to_json())
    wrong = run(capsys, "audit", "export", "--state", "other")
    assert "another key store" in wrong.error_line() and "its own state file" in wrong.err
    ahead = json.loads(ok(capsys, "audit", "export", "--state", "s").out.splitlines()[-1])
    Path("s").write_bytes(ExportState(ahead["store_id"], ahead["seq"] + 5, ZERO).to_json())
    cut = run(capsys, "audit", "export", "--state", "s")
    assert "(truncated)" in cut.error_line()


@pytest.mark.parametrize(
    ("value", "code"),
    [("0", 0), ("2026-01-01", 0), ("2026-01-01T00:00:00Z", 0), ("2026-01-01T00:00:00+02:00", 0),
     ("2026-01-01T00:00:00", 2), ("yesterday", 2), ("-1", 2), ("9" * 20, 2)],
)  # fmt: skip
def test_cli_export_since_reads_a_seq_or_a_zoned_time(
    capsys: pytest.CaptureFixture[str], cli: Path, value: str, code: int
) -> None:
    ok(capsys, "keys", "generate", "alice")
    assert run(capsys, "audit", "export", "--since", value).code == code


def test_cli_export_since_and_state_exclude_each_other(
    capsys: pytest.CaptureFixture[str], cli: Path
) -> None:
    ok(capsys, "keys", "generate", "alice")
    assert run(capsys, "audit", "export", "--since", "1", "--state", "s").code == 2


VERIFY_FIELDS = {"ok", "events", "last_seq", "last_hash", "checkpoint_seq", "problem", "seq",
                 "line", "detail"}  # fmt: skip


def test_cli_verify_json_fields(capsys: pytest.CaptureFixture[str], cli: Path) -> None:
    ok(capsys, "keys", "generate", "alice")
    ok(capsys, "keys", "rotate", "alice")
    lines = [json.loads(x) for x in (cli / "audit.jsonl").read_bytes().splitlines()]
    good = json.loads(ok(capsys, "audit", "verify", "--json").out)
    assert set(good) == VERIFY_FIELDS
    checkpoints = [x["seq"] for x in lines if x["action"] == "checkpoint"]
    assert good == {"ok": True, "events": len(lines), "last_seq": lines[-1]["seq"],
                    "last_hash": lines[-1]["hash"], "checkpoint_seq": checkpoints[-1],
                    "problem": None, "seq": None, "line": None, "detail": None}  # fmt: skip
    raw = (cli / "audit.jsonl").read_bytes().splitlines(keepends=True)
    raw[2] = raw[2].replace(b'"actor":"', b'"actor":"x')
    (cli / "audit.jsonl").write_bytes(b"".join(raw))
    broken = run(capsys, "audit", "verify", "--json")
    assert broken.code == 1 and broken.error_line().startswith("audit log broken")
    doc = json.loads(broken.out)
    assert set(doc) == VERIFY_FIELDS
    assert (doc["ok"], doc["problem"], doc["seq"], doc["line"]) == (False, "bad-hash", 3, 3)
    assert (doc["last_seq"], doc["last_hash"]) == (2, lines[1]["hash"])
    assert isinstance(doc["detail"], str)
    none = run(capsys, "audit", "verify", "--json", "--home", "nowhere")
    assert none.code == 1 and none.out == ""  # could not check: no result object at all
