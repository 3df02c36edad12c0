"""``pqselfenc encrypt`` of many files: groups of files share one store batch, chunks are made
durable in waves, and a group's maps are written (as one wave too) only once every chunk they
name is durable. A child killed (SIGKILL) at each step of that order, with its durability
events logged as they happen, never leaves a map whose chunks would not survive a power cut.
Also: one warning line for N unsealed maps, and the results as before."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from _cli_helpers import clean_env, run
from _keys_support import PASSPHRASE

from pqselfenc import DataMap, DirectoryChunkStore
from pqselfenc.cli import _encrypt
from pqselfenc.core import _syncfs

FILES = 10
GROUP = 4  # three groups: 4, 4 and 2 files


def inputs(folder: Path, sizes: list[int]) -> list[Path]:
    folder.mkdir(exist_ok=True)
    paths = []
    for i, size in enumerate(sizes):
        path = folder / f"f{i:02d}"
        path.write_bytes(os.urandom(size))
        paths.append(path)
    return paths


def test_one_warning_line_for_many_unsealed_maps_and_results_as_before(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(_encrypt, "GROUP_FILES", GROUP)
    paths = inputs(tmp_path / "in", [0, 1, 4096, 5000, 70_000, 3 << 20] + [4096] * 4)
    (tmp_path / "maps").mkdir()
    argv = ["encrypt", *paths, "--store", "store", "--out", "maps", "--home", "home"]
    result = run(capsys, *argv)
    assert result.code == 0, result.err
    warnings = [x for x in result.err.splitlines() if x.startswith("pqselfenc: warning:")]
    assert warnings == [
        "pqselfenc: warning: 10 unsealed DataMaps written: anyone who can read one can decrypt "
        "its content (written with mode 0600; use --to NAME to seal them)"
    ]
    lines = result.out.splitlines()
    assert [x.split(" -> ")[0] for x in lines] == [str(p) for p in paths]
    done = run(capsys, *argv, "--force", "--json")
    assert done.code == 0, done.err
    doc = json.loads(done.out)
    assert [d["input"] for d in doc["encrypted"]] == [str(p) for p in paths]
    for entry, path in zip(doc["encrypted"], paths, strict=True):
        assert set(entry) == {"input", "map", "sealed", "recipients", "escrow", "size", "chunks",
                              "levels"}  # fmt: skip
        assert entry["map"] == str(Path("maps") / (path.name + ".map"))
        assert (entry["sealed"], entry["recipients"], entry["escrow"]) == (False, [], [])
        assert entry["size"] == path.stat().st_size
        mapped = Path(entry["map"])
        assert stat.S_IMODE(mapped.stat().st_mode) == 0o600
        decrypted = tmp_path / "out"
        assert run(capsys, "decrypt", mapped, "--store", "store", "--out", decrypted,
                   "--force", "--home", "home").code == 0  # fmt: skip
        assert decrypted.read_bytes() == path.read_bytes()


def test_a_map_already_there_stops_the_run_with_one_error_and_no_temp_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Collisions are checked before any work; one that appears meanwhile (between the check
    and the link of its group's maps) is refused at the link, never overwritten."""
    monkeypatch.chdir(tmp_path)
    paths = inputs(tmp_path / "in", [100, 200, 300])
    real = _encrypt._maps.write_maps

    def planting(*args: object, **kwargs: object) -> None:
        Path("in/f01.map").write_bytes(b"someone else's")
        real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(_encrypt._maps, "write_maps", planting)
    result = run(capsys, "encrypt", *paths, "--store", "store", "--home", "home")
    assert "in/f01.map already exists" in result.error_line()
    assert Path("in/f01.map").read_bytes() == b"someone else's"
    assert sorted(p.name for p in Path("in").iterdir() if p.name.startswith(".")) == []


def test_sealed_maps_of_every_group_also_go_to_escrow(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The escrow policy applies to each map of each group (one batched write per group), and
    each result names the escrow recipients, as one file at a time did."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(_encrypt, "GROUP_FILES", 2)
    monkeypatch.setenv("PQSELFENC_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
    for argv in (["keys", "generate", "org", "--home", "org"],
                 ["keys", "export", "org", "--public", "--home", "org", "--out", "org.pub"],
                 ["keys", "generate", "alice", "--home", "home"],
                 ["recipients", "add", "org", "org.pub", "--home", "home"],
                 ["recipients", "escrow", "add", "org", "--home", "home"]):  # fmt: skip
        assert run(capsys, *argv).code == 0
    paths = inputs(tmp_path / "in", [10, 5000, 70_000, 0, 4096])
    argv = ["encrypt", *paths, "--to", "alice", "--store", "store", "--home", "home", "--json"]
    done = run(capsys, *argv)
    assert done.code == 0, done.err
    doc = json.loads(done.out)["encrypted"]
    assert [(d["sealed"], d["recipients"], d["escrow"]) for d in doc] == [
        (True, ["alice"], ["org"])
    ] * len(paths)
    for entry, path in zip(doc, paths, strict=True):
        assert entry["map"] == f"{path}.map"
        assert Path(entry["map"]).read_bytes().startswith(b"PQSESEAL")
    for i in (0, len(paths) - 1):  # the first group and the last
        out = tmp_path / f"out{i}"
        opened = run(capsys, "decrypt", doc[i]["map"], "--store", "store", "--home", "org",
                     "--out", out)  # fmt: skip
        assert opened.code == 0, opened.err
        assert out.read_bytes() == paths[i].read_bytes()


@pytest.mark.parametrize("when", ["before", "after"])
def test_an_interrupt_inside_a_group_s_map_wave_names_exactly_the_maps_written(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    when: str,
) -> None:  # fmt: skip
    """A SIGINT at the link of the second map of the second group (just before it, or right
    after): the maps of group 1 and the two of group 2 named so far are there and the report
    names them all, the rest of the wave is removed (no map, no temp file)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(_encrypt, "GROUP_FILES", 3)
    paths = inputs(tmp_path / "in", [3000] * 6)
    real = os.link

    def link(src: Any, dst: Any, **kwargs: Any) -> None:
        if dst == "f04.map" and when == "before":
            os.kill(os.getpid(), signal.SIGINT)
        real(src, dst, **kwargs)
        if dst == "f04.map" and when == "after":
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(os, "link", link)
    names = [p.relative_to(tmp_path) for p in paths]
    result = run(capsys, "encrypt", *names, "--store", "store", "--home", "home")
    assert result.code == 130, result.err
    assert result.error_line() == (
        "interrupted after writing in/f00.map, in/f01.map, in/f02.map and 2 more; "
        "nothing else was written under an output name"
    )
    assert sorted(p.name for p in Path("in").glob("*.map")) == [f"f0{i}.map" for i in range(5)]
    assert not list(Path("in").glob(".pqselfenc-tmp-*"))


# -- SIGKILL at each step ----------------------------------------------------------------------

CHILD = """
import os, signal, stat, sys, threading
from pqselfenc.cli import _encrypt, main
from pqselfenc.core import _durable, _syncfs

mode, point, n, log = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
_encrypt.GROUP_FILES = int(sys.argv[5])
out = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
lock, count = threading.Lock(), [0]

def path(name, dir_fd):
    return os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), name) if dir_fd else name

def event(kind, *paths):
    with lock:
        os.write(out, (" ".join((kind, *paths)) + "\\n").encode())
        if kind == point:
            count[0] += 1
            if count[0] == n:
                os.kill(os.getpid(), signal.SIGKILL)

real_fsync, real_replace, real_link = os.fsync, os.replace, os.link
real_syncfs, real_closed = _syncfs._syncfs, _durable.write_closed

def fsync(fd):
    real_fsync(fd)
    kind = "dir-fsync" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync"
    event(kind, os.readlink(f"/proc/self/fd/{fd}"))

def syncfs(fd):
    real_syncfs(fd)
    event("syncfs")

def replace(src, dst, src_dir_fd=None, dst_dir_fd=None):
    event("replace", path(src, src_dir_fd), path(dst, dst_dir_fd))  # before: a kill stops it
    real_replace(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)

def link(src, dst, src_dir_fd=None, dst_dir_fd=None, follow_symlinks=True):
    event("link", path(src, src_dir_fd), path(dst, dst_dir_fd))
    real_link(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd,
              follow_symlinks=follow_symlinks)

def write_closed(dir_fd, data, **kwargs):
    name = real_closed(dir_fd, data, **kwargs)
    event("written", path(name, dir_fd))
    return name

os.fsync, os.replace, os.link = fsync, replace, link
_syncfs._syncfs, _durable.write_closed = syncfs, write_closed
if mode == "fsync":
    _syncfs.trusted = lambda fd, dev=None: False
sys.exit(main(sys.argv[6:]))
"""

# (mode, event, n): the n-th such event kills the child (FILES files, groups of GROUP)
KILL_POINTS = [
    ("syncfs", "syncfs", 1),  # group 1: chunks written, made durable, none named yet
    ("syncfs", "replace", 7),  # group 1: half its chunks named
    ("syncfs", "syncfs", 2),  # group 1: chunks named, their folders durable
    ("syncfs", "syncfs", 3),  # group 1: maps written and durable, none named
    ("syncfs", "link", 2),  # group 1: half its maps named
    ("syncfs", "syncfs", 4),  # group 1: maps named, their folder durable
    ("syncfs", "written", 20),  # group 2: chunks being written
    ("syncfs", "link", 6),  # group 2: maps being named
    ("fsync", "fsync", 5),  # group 1: chunk content being fsynced
    ("fsync", "replace", 12),  # group 1: every chunk durable, the last named
    ("fsync", "dir-fsync", 3),  # group 1: chunk folders being fsynced
    ("fsync", "link", 3),  # group 1: maps being named
    ("fsync", "replace", 20),  # group 2: chunks being named
]


class Disk:
    """What a power cut right at the kill would leave, replayed from the child's event log:
    a name survives if its content was made durable before it was given (an fsync of the
    file, or a syncfs that ended after it was written) and its folder was made durable after
    (an fsync of the folder, or a syncfs)."""

    def __init__(self, log: list[list[str]], point: str) -> None:
        if point in ("replace", "link"):
            log = log[:-1]  # logged before the call: the kill stopped that one
        self.log = log
        self.written = {e[1]: i for i, e in enumerate(log) if e[0] == "written"}

    def given(self, final: str) -> int:
        """Where ``final`` got its name, checking its content was durable by then."""
        i = next(i for i, e in enumerate(self.log) if e[0] in ("replace", "link") and e[2] == final)
        temp, written = self.log[i][1], self.written.get(self.log[i][1], -1)
        durable = any((e[0] == "syncfs" and written < j) or (e[0] == "fsync" and e[1] == temp)
                      for j, e in enumerate(self.log[:i]))  # fmt: skip
        assert durable, f"{final} named before its content was durable"
        return i

    def synced(self, folder: str, start: int, end: int) -> bool:
        """Whether ``folder`` was made durable between events ``start`` and ``end``."""
        return any(e[0] == "syncfs" or (e[0] == "dir-fsync" and e[1] == folder)
                   for e in self.log[start + 1 : end])  # fmt: skip


@pytest.mark.parametrize(("mode", "point", "n"), KILL_POINTS)
def test_sigkill_at_any_step_never_leaves_a_map_over_chunks_that_are_not_durable(
    tmp_path: Path, mode: str, point: str, n: int
) -> None:
    if mode == "syncfs" and not _syncfs.trusted(os.open(tmp_path, os.O_RDONLY)):
        pytest.skip("syncfs is not trusted on this filesystem")
    paths = inputs(tmp_path / "in", [1000 + 300 * i for i in range(FILES)])
    (tmp_path / "maps").mkdir()
    log, store = tmp_path / "events", tmp_path / "store"
    argv = ["encrypt", *map(str, paths), "--store", str(store), "--out", str(tmp_path / "maps"),
            "--home", str(tmp_path / "home"), "-q"]  # fmt: skip
    env = clean_env(tmp_path / "home")
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(CHILD), mode, point, str(n), str(log), str(GROUP),
         *argv],
        capture_output=True, text=True, timeout=300, check=False, env=env,
    )  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    disk = Disk([line.split() for line in log.read_text().splitlines()], point)
    chunks = DirectoryChunkStore(store)
    maps = sorted((tmp_path / "maps").glob("*.map"))
    for map_path in maps:  # each map names only chunks durable (and whole) before it was named
        mapped = disk.given(str(map_path))
        for info in DataMap.from_bytes(map_path.read_bytes()).chunks:
            chunks.retrieve(info)  # there and whole
            chunk = str(chunks.path_of(info))
            named = disk.given(chunk)
            assert named < mapped, f"{map_path.name} was named before its chunk {chunk}"
            assert disk.synced(os.path.dirname(chunk), named, mapped), "shard folder not durable"
            assert disk.synced(str(store), named, mapped), "store root not durable"
    assert len(maps) <= FILES
    rerun = subprocess.run([sys.executable, "-m", "pqselfenc.cli", *argv, "--force"],
                           capture_output=True, text=True, timeout=300, check=False,
                           env=env)  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    for path in paths:  # the rerun completes every map
        data_map = DataMap.from_bytes((tmp_path / "maps" / (path.name + ".map")).read_bytes())
        assert data_map.total_size == path.stat().st_size


def test_maps_published_before_a_failure_in_their_wave_are_durable_in_their_folder(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second map's name appears (someone else's file) after the checks: the first map is
    published and reported, so its folder is made durable before the error is raised."""
    from pqselfenc.core import _durable

    monkeypatch.chdir(tmp_path)
    paths = inputs(tmp_path / "in", [5000, 5000])
    (tmp_path / "maps").mkdir()
    real_publish, real_sync = _durable._publish_temp, _durable.sync_dirs
    published: list[str] = []
    synced_after: list[list[str]] = []

    def publish(item: tuple[int, str, str], **kw: bool) -> None:
        if item[2].endswith(".map") and published:
            (tmp_path / "maps" / item[2]).write_bytes(b"someone else's")
        real_publish(item, **kw)
        if item[2].endswith(".map"):
            published.append(item[2])

    def sync_dirs(fds: object) -> None:
        fds = list(fds)  # type: ignore[call-overload]
        synced_after.append([os.readlink(f"/proc/self/fd/{fd}") for fd in fds])
        real_sync(fds)

    monkeypatch.setattr(_durable, "_publish_temp", publish)
    monkeypatch.setattr(_durable, "sync_dirs", sync_dirs)
    result = run(capsys, "encrypt", *paths, "--store", "store", "--out", "maps", "--home", "home")
    assert result.code == 1 and "already exists" in result.err, result.err
    assert len(published) == 1  # the first map is out, the second refused
    assert any(str(tmp_path / "maps") in folders for folders in synced_after)
