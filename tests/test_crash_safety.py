"""Crash safety: a process killed (SIGKILL) at each write step leaves state that opens and verifies.

The child process patches one step of a write so that it kills itself right there: no timing,
no sleeps, the crash point is exact. The parent then reopens what the child left behind.

Already covered by the owners and not repeated here (threat-model/README.md lists them):
``tests/test_stores.py`` (directory store: just before the rename, mid-stream),
``tests/test_keys_concurrency.py`` (between key and metadata write; mid audit append, torn
line reported then recovered). This module adds the steps inside the atomic metadata write,
the destroy between mark and delete, the checkpoint between log line and checkpoint file, and
a whole ``SelfEncryptor`` run into a directory store killed mid-way and resumed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pqselfenc import DirectoryChunkStore, EncryptionConfig, ParallelConfig, SelfEncryptor
from pqselfenc.error import KeyDestroyedError
from pqselfenc.keys import KeyConfig, KeyState, KeyStore

PASSPHRASE = "gravel orbit candle mosaic tundra"
CONFIG = KeyConfig(checkpoint_every=4)

PRELUDE = """
import os, signal, sys
from pathlib import Path
from pqselfenc.keys import KeyConfig, KeyStore
from pqselfenc.core import _durable
from pqselfenc.keys import backends, store as store_module
def die(*_a, **_k):
    os.kill(os.getpid(), signal.SIGKILL)
ks = KeyStore.open(sys.argv[1], config=KeyConfig(checkpoint_every=4), passphrase=sys.argv[2])
"""

# crash point -> code that arms it, then the action that runs into it
CRASHES = {
    # keystore.json: next generation staged and its audit event appended, killed before the
    # rename over keystore.json (open renames the staged file into place: the rotate holds)
    "metadata-before-rename": """
        real_replace = _durable.os.replace
        def replace(src, dst, **dir_fds):
            if Path(dst).name == "keystore.json":
                die()
            real_replace(src, dst, **dir_fds)
        _durable.os.replace = replace
        ks.rotate("alice")
    """,
    # keystore.json: half the new bytes in the temp file, killed mid-write
    "metadata-torn-temp": """
        real_fdopen = _durable.os.fdopen
        class Torn:
            def __init__(self, fh): self.fh = fh
            def __enter__(self): return self
            def __exit__(self, *a): self.fh.close()
            def write(self, data):
                if b'"identities"' in data:
                    self.fh.write(data[: len(data) // 2]); self.fh.flush(); die()
                return self.fh.write(data)
            def __getattr__(self, name): return getattr(self.fh, name)
        _durable.os.fdopen = lambda fd, mode, **kw: Torn(real_fdopen(fd, mode, **kw))
        ks.rotate("alice")
    """,
    # keystore.json renamed into place, killed before the folder fsync
    "metadata-after-rename": """
        real_replace = _durable.os.replace
        def replace(src, dst, **dir_fds):
            real_replace(src, dst, **dir_fds)
            if Path(dst).name == "keystore.json":
                die()
        _durable.os.replace = replace
        ks.rotate("alice")
    """,
    # destroy: metadata says destroyed, killed before the secret file is deleted
    "destroy-before-delete": """
        backends.FileBackend.delete = die
        ks.destroy("alice", 1)
    """,
    # close(): checkpoint line appended, killed before audit.checkpoint is saved
    "checkpoint-before-file": """
        real_replace_file = _durable.replace_file
        def replace_file(path, data, mode=0o600):
            if Path(path).name == "audit.checkpoint":
                die()
            real_replace_file(path, data, mode=mode)
        _durable.replace_file = replace_file
        ks.rotate("alice")  # one event past the last checkpoint, so close() writes one
        ks.close()
    """,
}


def run_child(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    script = textwrap.dedent(PRELUDE) + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """A store with alice v1 (one checkpoint behind) and an envelope sealed to her."""
    d = tmp_path_factory.mktemp("template") / "ks"
    ks = KeyStore.open(d, config=CONFIG, passphrase=PASSPHRASE)
    ks.generate("alice")
    data_map = SelfEncryptor(b"crash safety " * 40).encrypt()[0]
    sealed = ks.seal(data_map, ["alice"])
    ks.generate("bob")  # 4 events so far (create, generate, seal, generate): one checkpoint
    return d, sealed


def crashed_store(template: tuple[Path, bytes], tmp_path: Path, point: str) -> tuple[Path, bytes]:
    import shutil

    d = tmp_path / "ks"
    shutil.copytree(template[0], d)
    proc = run_child(CRASHES[point], str(d), PASSPHRASE)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    return d, template[1]


@pytest.mark.parametrize("point", sorted(CRASHES))
def test_store_opens_and_verifies_after_sigkill(
    point: str, template: tuple[Path, bytes], tmp_path: Path
) -> None:
    d, sealed = crashed_store(template, tmp_path, point)
    ks = KeyStore.open(d, config=CONFIG, passphrase=PASSPHRASE)
    report = ks.audit.verify()
    assert report.ok, report
    alice = ks.identity("alice")
    if point == "destroy-before-delete":
        assert alice.version(1).state is KeyState.DESTROYED
        assert not (d / "secrets" / "alice.v1.key").exists()  # open finished the delete
        with pytest.raises(KeyDestroyedError):
            ks.open_envelope(sealed)
    else:
        assert ks.open_envelope(sealed).total_size == len(b"crash safety " * 40)
        # the rename happened, or open finished it (its audit event had landed), or the rotate
        # completed before the checkpoint: the change holds
        rotated = point in ("metadata-after-rename", "metadata-before-rename",
                            "checkpoint-before-file")  # fmt: skip
        assert alice.latest == (2 if rotated else 1)
        assert alice.active is not None and alice.active.version == alice.latest
    ks.rotate("alice")  # the store is writable again, and the log still verifies
    ks.close()
    assert ks.audit.verify().ok
    assert not (d / "keystore.json.staged").exists()  # committed or dropped at open
    strays = [p.name for p in d.iterdir() if p.name.endswith(".tmp")]
    assert all(name.startswith(".keystore.json.") for name in strays), strays


def test_selfencryptor_killed_mid_run_then_resumed(tmp_path: Path) -> None:
    """A directory store after SIGKILL in the middle of a threaded encryption: every chunk
    listed verifies, temp files are only temp files, and a rerun completes and decrypts."""
    data = os.urandom(64 * 40)
    root = tmp_path / "chunks"
    code = """
        from pqselfenc import DirectoryChunkStore, EncryptionConfig, ParallelConfig, SelfEncryptor
        from pqselfenc.core.stores import directory
        real_replace, count = directory.os.replace, [0]
        def replace(src, dst, **dir_fds):
            count[0] += 1
            if count[0] == 17:
                die()  # the 17th chunk: its temp file is written, the rename never happens
            real_replace(src, dst, **dir_fds)
        directory.os.replace = replace
        data = Path(sys.argv[3]).read_bytes()
        cfg = EncryptionConfig(chunk_size=64, parallel=ParallelConfig(max_threads=2))
        SelfEncryptor(data, cfg, chunk_store=DirectoryChunkStore(sys.argv[4])).encrypt()
    """
    (tmp_path / "data").write_bytes(data)
    template = tmp_path / "ks"
    KeyStore.open(template, config=CONFIG, passphrase=PASSPHRASE)  # the prelude opens one
    proc = run_child(code, str(template), PASSPHRASE, str(tmp_path / "data"), str(root))
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    store = DirectoryChunkStore(root)
    listed = list(store)
    assert 10 <= len(listed) < 40
    for info in listed:
        store.retrieve(info)  # verifies the name: no partial chunk is visible under a name
    assert store.clean_temp() >= 1
    cfg = EncryptionConfig(chunk_size=64, parallel=ParallelConfig(max_threads=2))
    data_map, _ = SelfEncryptor(data, cfg, chunk_store=store).encrypt()
    assert len(list(store)) == 40
    assert SelfEncryptor.from_data_map(data_map, store, cfg).decrypt() == data
