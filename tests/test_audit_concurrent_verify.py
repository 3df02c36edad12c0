"""``audit verify`` while another process writes (issue 18 item 8): a consistent snapshot.

Every command appends events and a closing checkpoint (which also rewrites audit.checkpoint);
a verifier that read the log and the checkpoint file at different moments reported
"truncated" or "torn-tail" for a log nobody touched (on the release before: 29 false alarms in
62 verifies against 84 writer rounds). The verifier now reads audit.checkpoint, keystore.json
and the log's length under the store lock, then checks that prefix of the append-only log.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from _keys_support import PASSPHRASE, StoreFactory

from pqselfenc.keys.audit import AuditReport

# Seals and closes (a checkpoint each time) until the stop file appears; at most 60 s.
WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from pqselfenc import SelfEncryptor
    from pqselfenc.keys import KeyConfig, KeyStore

    ks = KeyStore.open(sys.argv[1], config=KeyConfig(checkpoint_every=3), passphrase=sys.argv[2])
    data_map = SelfEncryptor(b"concurrent verify" * 20).encrypt()[0]
    stop, end, rounds = Path(sys.argv[3]), time.monotonic() + 60, 0
    print("ready", flush=True)
    while not stop.exists() and time.monotonic() < end:
        ks.seal(data_map, ["alice"])
        ks.close()  # a checkpoint: the log and audit.checkpoint both change
        rounds += 1
    print(rounds, flush=True)
    """
)
VERIFIES = 8


def overlapped(reports: list[AuditReport]) -> bool:
    """Enough verifies, run while the log grew by at least one writer round (an event and a
    checkpoint) per verify: they really raced the writer."""
    return len(reports) >= VERIFIES and reports[-1].events - reports[0].events >= 2 * VERIFIES


def test_verify_during_writes_reports_no_false_alarm(
    open_store: StoreFactory, tmp_path: Path
) -> None:
    ks = open_store(checkpoint_every=3)
    ks.generate("alice")
    ks.close()
    stop = tmp_path / "stop"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path.cwd()), *sys.path])}
    command = [sys.executable, "-c", WRITER, str(ks.directory), PASSPHRASE, str(stop)]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env) as writer:
        try:
            assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
            reports, deadline = [ks.audit.verify()], time.monotonic() + 60
            while not overlapped(reports) and writer.poll() is None and time.monotonic() < deadline:
                reports.append(ks.audit.verify())
            stop.touch()
            rounds = int(writer.stdout.read().strip() or 0)
        finally:
            writer.kill()
    false_alarms = [str(r) for r in reports if not r.ok]
    assert overlapped(reports) and rounds >= 1, (rounds, [r.events for r in reports])
    assert false_alarms == [], false_alarms
    assert ks.audit.verify().ok
