"""Crash safety and concurrent writers: real subprocesses, real SIGKILL, real file locks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from _keys_support import PASSPHRASE, FakeClock, StoreFactory, small_map

from pqselfenc.error import AuditError, KeyStoreError
from pqselfenc.keys import KeyState, KeyStore
from pqselfenc.keys import _metadata as M

TESTS = Path(__file__).resolve().parent


def run_python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_injected_failure_between_key_and_metadata(
    open_store: StoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    ks = open_store()
    ks.generate("alice")
    sealed = ks.seal(small_map(), to=["alice"])

    def boom(path: Path, meta: M.Metadata, mac_key: bytes) -> None:
        raise KeyStoreError("disk full (injected)")

    monkeypatch.setattr(M, "write_metadata", boom)
    with pytest.raises(KeyStoreError, match="injected"):
        ks.rotate("alice")
    with pytest.raises(KeyStoreError, match="injected"):
        ks.generate("bob")
    monkeypatch.undo()
    assert (ks.directory / "secrets" / "alice.v2.key").exists()  # the orphan secret
    reopened = KeyStore.open(ks.directory, config=ks.config, passphrase=PASSPHRASE)
    assert [v.version for v in reopened.identity("alice").versions] == [1]
    assert "bob" not in reopened.identities
    assert reopened.open_envelope(sealed).to_bytes() == small_map().to_bytes()
    assert reopened.rotate("alice").version == 2  # the orphan is simply overwritten
    reopened.generate("bob")
    assert reopened.audit.verify().ok


def test_sigkill_between_key_and_metadata_leaves_a_store_that_opens(
    open_store: StoreFactory,
) -> None:
    ks = open_store()
    ks.generate("alice")
    sealed = ks.seal(small_map(), to=["alice"])
    proc = run_python(
        """
        import os, signal, sys
        from pqselfenc.keys import KeyStore, KeyConfig
        from pqselfenc.keys import _metadata as M
        from _keys_support import PASSPHRASE
        ks = KeyStore.open(sys.argv[1], passphrase=PASSPHRASE)
        M.write_metadata = lambda path, meta, mac_key: os.kill(os.getpid(), signal.SIGKILL)
        ks.rotate("alice")
        """,
        str(ks.directory),
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert (ks.directory / "secrets" / "alice.v2.key").exists()
    reopened = KeyStore.open(ks.directory, config=ks.config, passphrase=PASSPHRASE)
    alice = reopened.identity("alice")
    assert [(v.version, v.state) for v in alice.versions] == [(1, KeyState.ACTIVE)]
    assert reopened.open_envelope(sealed).to_bytes() == small_map().to_bytes()
    assert reopened.audit.verify().ok
    assert reopened.rotate("alice").version == 2


def test_sigkill_mid_audit_append_is_reported_then_recovered(open_store: StoreFactory) -> None:
    ks = open_store()
    ks.generate("alice")
    proc = run_python(
        """
        import os, signal, sys
        from pqselfenc.keys import KeyStore
        from pqselfenc.keys import audit
        from _keys_support import PASSPHRASE
        ks = KeyStore.open(sys.argv[1], passphrase=PASSPHRASE)
        real_write = os.write
        def torn(fd, data):
            real_write(fd, data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        audit.os.write = torn
        ks.rotate("alice")
        """,
        str(ks.directory),
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    report = ks.audit.verify()
    assert not report.ok and report.kind == "torn-tail"
    assert report.seq == report.last_seq + 1 and "without a newline" in (report.detail or "")
    with pytest.raises(AuditError, match="torn"):
        ks.generate("bob")  # fail closed: no event can be chained onto a torn line
    assert "bob" not in ks.identities
    reopened = KeyStore.open(ks.directory, config=ks.config, passphrase=PASSPHRASE)
    assert reopened.audit.verify().ok
    torn = (ks.directory / "audit.jsonl.torn").read_bytes()
    assert torn.endswith(b"\n") and torn.startswith(b'{"action":"rotate"')
    events = list(reopened.audit.events())
    assert events[-1]["action"] == "audit-recover"
    # the rotate never reached its metadata commit: alice is still at version 1
    assert reopened.identity("alice").latest == 1


WRITER = """
import sys
from pqselfenc.keys import KeyStore
from _keys_support import PASSPHRASE, small_map
ks = KeyStore.open(sys.argv[1], passphrase=PASSPHRASE)
tag = sys.argv[2]
from pqselfenc.kem import generate_identity
key = str(generate_identity().recipient())
for i in range(12):
    ks.recipients.add(f"{tag}-r{i}", key)
    if i % 4 == 0:
        ks.generate(f"{tag}-id{i}")
        ks.open_envelope(ks.seal(small_map(), to=[f"{tag}-id{i}"]))
ks.rotate(f"{tag}-id0")
print("done")
"""


def test_two_processes_writing_leave_consistent_metadata(open_store: StoreFactory) -> None:
    ks = open_store()  # created (and its vault) before the writers start
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), *sys.path]))  # this checkout
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(ks.directory), tag],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in ("p", "q")
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and out.strip() == "done", err
    mac_key = ks._secret.metadata_mac_key()
    meta = M.read_metadata(ks.directory / "keystore.json", mac_key)  # MAC checked
    assert sorted(meta.recipients) == sorted(f"{t}-r{i}" for t in "pq" for i in range(12))
    assert sorted(meta.identities) == sorted(f"{t}-id{i}" for t in "pq" for i in (0, 4, 8))
    for tag in "pq":
        assert meta.identity(f"{tag}-id0").latest == 2
    report = ks.audit.verify()
    assert report.ok, report
    actions = [e["action"] for e in ks.audit.events()]
    assert actions.count("recipient-add") == 24 and actions.count("open") == 6
    assert actions.count("generate") == 6 and actions.count("rotate") == 2
    assert meta.generation == 1 + 24 + 6 + 2  # create, then one generation per write: none lost


def test_fake_clock_is_used_for_every_event(open_store: StoreFactory, clock: FakeClock) -> None:
    ks = open_store()
    clock.advance(days=3)
    ks.generate("alice")
    times = {e["time"] for e in ks.audit.events() if e["action"] == "generate"}
    assert times == {"2026-01-04T00:00:00.000000Z"}
