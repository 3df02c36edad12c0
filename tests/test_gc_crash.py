"""A gc killed (SIGKILL) at every step loses nothing a live map references, leaves its lock
behind as a stale lock the next run reports, and the next run (told to remove it) completes.

Steps are what ``collect_garbage`` reports through ``on_step`` (locked, walked, listed,
planned, one per delete, swept, pruned), plus the moment between creating its lock object and
listing the others. The gc runs in a child process that kills itself there."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from _gc_support import content, decrypts, encrypt, names, segments, stored
from _s3server import S3Server, s3_server  # noqa: F401  (s3_server is a fixture)

from pqselfenc import ChunkStore, DataMap, DirectoryChunkStore
from pqselfenc.core.gc import collect_garbage
from pqselfenc.error import StoreLockedError

GC = """
import os, signal, sys
from pathlib import Path
from pqselfenc import DataMap, DirectoryChunkStore
from pqselfenc.core.gc import GcMap, collect_garbage
kind, where, maps_dir, kill_at, grace = sys.argv[1:6]
if kind == "dir":
    store = DirectoryChunkStore(where)
else:
    from pqselfenc.core.stores import S3ChunkStore
    store = S3ChunkStore.from_url(where)
paths = sorted(Path(maps_dir).glob("*.map"))
maps = [GcMap(DataMap.from_bytes(p.read_bytes()), p.name) for p in paths]
steps = []

def die(step):
    if step == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)

space = store.locks().space
real_create = space.create
def create(name, body):
    start = real_create(name, body)
    die("created")
    return start
space.create = create

def on_step(name, done, total):
    label = name if name != "delete" else f"delete {done}"
    steps.append(label)
    die(label)

collect_garbage(store, maps, delete=True, grace=float(grace), on_step=on_step)
print("\\n".join(steps))
"""


def run_gc(kind: str, where: str, maps: Path, kill_at: str, grace: float,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return subprocess.run(
        [sys.executable, "-c", GC, kind, where, str(maps), kill_at, str(grace)],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )  # fmt: skip


def prepare(store: ChunkStore, maps: Path) -> dict[str, tuple[DataMap, bytes]]:
    """Two live maps (sharing chunks) written to ``maps``, and two abandoned files."""
    maps.mkdir()
    shared = segments(3, seed=3)
    live = {}
    for name, picks in (("a.map", [0, 1]), ("b.map", [1, 2])):
        data = content(shared, picks)
        live[name] = (encrypt(store, data), data)
        (maps / name).write_bytes(live[name][0].to_bytes())
    for picks in ([0, 2], [2]):
        encrypt(store, content(shared, picks))  # abandoned: their own chunks are garbage
    return live


def check_after_kill(
    store: ChunkStore, live: dict[str, tuple[DataMap, bytes]], step: str, grace: float
) -> None:
    for data_map, data in live.values():
        assert decrypts(store, data_map, data), step
    locks = store.locks()
    assert locks is not None
    found = locks.inspect()
    if step == "finished":
        assert found == []
        return
    [info] = found
    assert info.kind == "exclusive" and info.dead and info.stale, step
    maps = [m for m, _ in live.values()]
    with pytest.raises(StoreLockedError, match=info.lock_id):
        collect_garbage(store, maps, delete=True, grace=grace)
    plan = collect_garbage(store, maps, delete=True, grace=grace, remove_stale_locks=[info.lock_id])
    assert plan.removed_locks[0].lock_id == info.lock_id
    assert stored(store) == names(*maps), step  # the rerun completed the work
    assert locks.inspect() == []


def test_a_gc_killed_at_every_step_loses_nothing_and_the_next_run_completes(
    tmp_path: Path,
) -> None:
    template = tmp_path / "template"
    store = DirectoryChunkStore(template / "store")
    live = prepare(store, template / "maps")
    old = time.time() - 7200
    for path in (template / "store").rglob("*"):
        os.utime(path, (old, old), follow_symlinks=False)  # chunks and session records: old
    garbage = stored(store) - names(*(m for m, _ in live.values()))
    assert len(garbage) >= 3
    reference = tmp_path / "reference"
    shutil.copytree(template, reference)
    done = run_gc("dir", str(reference / "store"), reference / "maps", "never", 3600)
    assert done.returncode == 0, done.stderr
    steps = ["created", *done.stdout.splitlines()]
    assert steps[1:5] == ["locked", "walked", "listed", "planned"]
    assert steps[-2:] == ["swept", "pruned"] and len(steps) == 7 + len(garbage)
    for k, step in enumerate([*steps, "finished"]):
        copy = tmp_path / f"killed-at-{k}"
        shutil.copytree(template, copy)
        killed = run_gc("dir", str(copy / "store"), copy / "maps", step, 3600)
        assert killed.returncode == (0 if step == "finished" else -9), (step, killed.stderr)
        check_after_kill(DirectoryChunkStore(copy / "store"), live, step, 3600)


@pytest.mark.s3
@pytest.mark.parametrize("step", ["created", "planned", "delete 2", "pruned"])
def test_a_gc_killed_on_s3_loses_nothing_and_the_next_run_completes(
    tmp_path: Path,
    s3_server: S3Server,  # noqa: F811
    step: str,
) -> None:
    from pqselfenc.core.stores import S3ChunkStore

    url = f"s3://{s3_server.bucket}/crash-{uuid.uuid4().hex}"
    env: dict[str, Any] = {**os.environ, "AWS_ACCESS_KEY_ID": s3_server.access_key,
                           "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
                           "AWS_DEFAULT_REGION": "us-east-1",
                           "PQSELFENC_S3_ENDPOINT": s3_server.endpoint}  # fmt: skip
    with S3ChunkStore(s3_server.bucket, url.split("/", 3)[3], **s3_server.credentials()) as store:
        live = prepare(store, tmp_path / "maps")
        time.sleep(1.1)  # whole-second stamps: the chunks are older than the gc's lock
        killed = run_gc("s3", url, tmp_path / "maps", step, 0, env)
        assert killed.returncode == -9, killed.stderr
        check_after_kill(store, live, step, 0)
