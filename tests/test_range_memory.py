"""A large range streams like a full decrypt (issue 18, item 5).

``decrypt --range`` used to join the whole range in memory and hand it over as one piece (a
150 MB range: 329 MB RSS, against 45 MB for a full decrypt). ``iter_range`` yields verified
pieces of at most one chunk with the full decrypt's task window. Each workload runs in a child
process that reports its peak RSS (``VmHWM``); the range must stay near the full decrypt.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pqselfenc import DataMap, DirectoryChunkStore, EncryptionConfig, SelfEncryptor
from pqselfenc.streaming import encrypt_file

MIB = 1 << 20
SIZE = 160 * MIB
OFFSET, LENGTH = 3 * MIB + 17, 150 * MIB
CONFIG = EncryptionConfig(chunk_size=MIB)

CHILD = """
import sys
from pathlib import Path
from pqselfenc import DataMap, DirectoryChunkStore, EncryptionConfig
from pqselfenc.streaming import StreamDecryptor

def peak() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise SystemExit("no VmHWM")

kind, root, map_path, offset, length = sys.argv[1:6]
data_map = DataMap.from_bytes(Path(map_path).read_bytes())
if kind == "cli":
    from pqselfenc.cli import main
    code = main(["decrypt", map_path, "--store", root, "--range", f"{offset}:{length}",
                 "--out", "-"])
    assert code == 0, code
else:
    store = DirectoryChunkStore(root)
    reader = StreamDecryptor.from_data_map(data_map, store, EncryptionConfig())
    pieces = iter(reader) if kind == "full" else reader.iter_range(int(offset), int(length))
    total = sum(sys.stdout.buffer.write(p) for p in pieces)
    assert total == (data_map.total_size if kind == "full" else int(length)), total
sys.stderr.write(f"PEAK {peak()}\\n")
"""

needs_proc = pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")


@pytest.fixture(scope="module")
def encrypted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    tmp = tmp_path_factory.mktemp("range")
    source = tmp / "in.bin"
    with open(source, "wb") as f:
        for i in range(SIZE // (16 * MIB)):
            f.write(os.urandom(16 * MIB) if i % 2 else bytes([i]) * (16 * MIB))
    store = DirectoryChunkStore(tmp / "chunks", fsync=False)
    data_map = encrypt_file(source, store, CONFIG)
    (tmp / "in.map").write_bytes(data_map.to_bytes())
    source.unlink()
    yield tmp / "chunks", tmp / "in.map"
    shutil.rmtree(tmp)  # 160 MB of chunks: not kept among pytest's last temp folders


def peak_of(kind: str, encrypted: tuple[Path, Path], out: Path | None = None) -> float:
    root, map_path = encrypted
    with open(out or os.devnull, "wb") as sink:
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, kind, str(root), str(map_path), str(OFFSET),
             str(LENGTH)],
            stdout=sink, stderr=subprocess.PIPE, text=True, timeout=600,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return float(proc.stderr.rsplit("PEAK ", 1)[1])


@needs_proc
def test_a_150_MB_range_streams_like_a_full_decrypt(encrypted: tuple[Path, Path]) -> None:
    full = peak_of("full", encrypted)
    ranged = peak_of("range", encrypted)
    cli = peak_of("cli", encrypted)
    assert ranged < full * 1.25 + 8, (ranged, full)
    assert cli < full * 1.25 + 24, (cli, full)  # the CLI imports argparse, keys, console...
    assert max(ranged, cli) < LENGTH / MIB / 2, (ranged, cli)  # far below the range itself


@needs_proc
def test_the_cli_range_is_the_right_bytes(encrypted: tuple[Path, Path], tmp_path: Path) -> None:
    root, map_path = encrypted
    peak_of("cli", encrypted, tmp_path / "range.out")
    want = SelfEncryptor.from_data_map(
        DataMap.from_bytes(map_path.read_bytes()), DirectoryChunkStore(root)
    ).read_range(OFFSET, 4 * MIB)
    with open(tmp_path / "range.out", "rb") as f:
        assert f.read(4 * MIB) == want
    assert (tmp_path / "range.out").stat().st_size == LENGTH
