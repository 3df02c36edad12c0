"""Three writer processes encrypt overlapping content into one store (shared segments, so
chunks are reused across writers), each writing a map into a folder after each file (and
abandoning some files, and later deleting some maps), while a gc process collects in a loop
with the maps in that folder at that moment, with a 2 s grace period. Then a last gc from the
command line, and every map left in the folder must decrypt to its content. On the directory
store and on SeaweedFS; bounded to well under a minute each.

The roles run as ``python tests/test_gc_stress.py writer|gc|old-gc ...``. ``old-gc`` is gc as
it was before locks and grace periods (glob the maps, list, delete the rest): run
``python tests/test_gc_stress.py demo-old DIR`` to watch it lose maps (issue 14 saw 6 of 9).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

try:
    from _s3server import S3Server, s3_server
except ImportError:  # run as a script from another folder
    sys.path.insert(0, str(Path(__file__).parent))
    from _s3server import S3Server, s3_server  # noqa: F401

from pqselfenc import ChunkStore, DataMap, DirectoryChunkStore, EncryptionConfig, SelfEncryptor
from pqselfenc.core.gc import GcMap, collect_garbage
from pqselfenc.error import StoreLockedError

CFG = EncryptionConfig(chunk_size=4096)
SEGMENTS, SEGMENT = 6, 4 * 4096
WRITERS, FILES, GRACE = 3, 10, 2.0
HERE = Path(__file__)


def open_store(where: str) -> ChunkStore:
    if where.startswith("s3://"):
        from pqselfenc.core.stores import S3ChunkStore

        return S3ChunkStore.from_url(where)
    return DirectoryChunkStore(where)


def file_content(writer: int, index: int) -> bytes:
    """Three of six shared segments (the same for every writer) and a tail of its own."""
    shared = random.Random(42)
    segments = [shared.randbytes(SEGMENT) for _ in range(SEGMENTS)]
    rng = random.Random(f"{writer}-{index}")
    return b"".join(segments[i] for i in rng.sample(range(SEGMENTS), 3)) + rng.randbytes(5000)


# -- the roles (child processes) ----------------------------------------------------------------


def writer(where: str, maps: Path, number: int, files: int) -> None:
    store = open_store(where)
    rng = random.Random(number)
    for index in range(files):
        with store.writing():  # the map is written before gc may run
            data = file_content(number, index)
            data_map = SelfEncryptor(data, CFG, chunk_store=store).encrypt()[0]
            if index % 3 != 2:  # every third file is abandoned: its own chunks are garbage
                temp = maps / f".tmp-{number}-{index}"
                temp.write_bytes(data_map.to_bytes())
                os.replace(temp, maps / f"w{number}-{index}.map")
        if index >= 4 and rng.random() < 0.3:  # an old map deleted: its content is not live
            (maps / f"w{number}-{index - 4}.map").unlink(missing_ok=True)
        time.sleep(rng.uniform(0, 0.1))


def maps_now(maps: Path) -> list[GcMap]:
    found = []
    for path in sorted(maps.glob("*.map")):
        try:
            found.append(GcMap(DataMap.from_bytes(path.read_bytes()), path.name))
        except FileNotFoundError:
            continue  # deleted since the glob: not live
    return found


def gc_loop(where: str, maps: Path, stop: Path) -> None:
    store = open_store(where)
    report = {"runs": 0, "deleted": 0, "busy": 0}
    while True:
        last = stop.exists()  # one more pass once the writers are done, so there is one
        try:
            plan = collect_garbage(store, lambda: maps_now(maps), delete=True, grace=GRACE, wait=30)
        except ValueError:
            pass  # no map yet
        except StoreLockedError:
            report["busy"] += 1
        else:
            report["runs"] += 1
            report["deleted"] += plan.deleted
        if last:
            break
        time.sleep(0.5)
    print(json.dumps(report))


def old_gc_loop(where: str, maps: Path, stop: Path) -> None:
    store = open_store(where)
    report = {"runs": 0, "deleted": 0}
    while not stop.exists():
        given = maps_now(maps)
        keep = {c.name for m in given for c in m.data_map.chunks}
        if given:
            gone = [i for i in store if i.name not in keep]
            for info in gone:
                store.delete(info)
            report["runs"] += 1
            report["deleted"] += len(gone)
        time.sleep(0.5)
    print(json.dumps(report))


# -- the harness --------------------------------------------------------------------------------


def spawn(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, str(HERE), *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def stress(
    where: str, work: Path, env: dict[str, str], files: int, gc_role: str = "gc"
) -> dict[str, Any]:
    """Run the writers (``files`` each) and the gc loop; the loop's report and the maps left."""
    maps, stop = work / "maps", work / "stop"
    maps.mkdir()
    gc = spawn(gc_role, where, str(maps), str(stop), env=env)
    writers = [spawn("writer", where, str(maps), str(n), str(files), env=env)
               for n in range(WRITERS)]  # fmt: skip
    for w in writers:
        out, err = w.communicate(timeout=120)
        assert w.returncode == 0, err
    stop.touch()
    out, err = gc.communicate(timeout=120)
    assert gc.returncode == 0, err
    return {**json.loads(out), "maps": sorted(maps.glob("*.map"))}


def live_content(path: Path) -> bytes:
    writer_number, index = path.stem.removeprefix("w").split("-")
    return file_content(int(writer_number), int(index))


def check_every_live_map(store: ChunkStore, maps: list[Path]) -> None:
    for path in maps:
        data_map = DataMap.from_bytes(path.read_bytes())
        plain = SelfEncryptor.from_data_map(data_map, store, CFG).decrypt()
        assert hashlib.sha256(plain).digest() == hashlib.sha256(live_content(path)).digest(), path


def final_gc(where: str, work: Path, maps: list[Path], env: dict[str, str]) -> dict[str, Any]:
    """Once the writers are done and the grace period has passed: gc from the command line,
    with every map, must leave exactly what the maps reference."""
    time.sleep(GRACE + 2.5)  # + the S3 store's clock slack
    done = subprocess.run(
        [sys.executable, "-m", "pqselfenc.cli", "store", "gc", *map(str, maps), "--store", where,
         "--delete", "--grace", f"{GRACE}s", "--json"],
        env={**env, "PQSELFENC_HOME": str(work / "home")}, cwd=work,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def run_and_check(
    store: ChunkStore, where: str, work: Path, env: dict[str, str], files: int
) -> None:
    result = stress(where, work, env, files)
    maps = result["maps"]
    assert len(maps) >= WRITERS * 3  # most maps stay: at least these are live at the end
    assert result["runs"] >= 1  # at least the pass after the writers (here ~12, most during)
    check_every_live_map(store, maps)
    final = final_gc(where, work, maps, env)
    assert result["deleted"] + final["deleted"] > 0  # abandoned chunks really went
    referenced = {c.name for p in maps for c in DataMap.from_bytes(p.read_bytes()).chunks}
    assert {i.name for i in store} == referenced
    check_every_live_map(store, maps)
    locks = store.locks()
    assert locks is not None and locks.inspect() == []


def child_env() -> dict[str, str]:
    root = str(HERE.parent.parent)
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else "")}


def test_writers_and_a_gc_loop_on_a_directory_store(tmp_path: Path) -> None:
    where = str(tmp_path / "store")
    run_and_check(DirectoryChunkStore(where), where, tmp_path, child_env(), FILES)


@pytest.mark.s3
def test_writers_and_a_gc_loop_on_seaweedfs(tmp_path: Path, s3_server: S3Server) -> None:
    from pqselfenc.core.stores import S3ChunkStore

    env = {**child_env(), "AWS_ACCESS_KEY_ID": s3_server.access_key,
           "AWS_SECRET_ACCESS_KEY": s3_server.secret_key, "AWS_DEFAULT_REGION": s3_server.region,
           "PQSELFENC_S3_ENDPOINT": s3_server.endpoint}  # fmt: skip
    prefix = f"stress-{uuid.uuid4().hex}"
    with S3ChunkStore(s3_server.bucket, prefix, **s3_server.credentials()) as store:
        run_and_check(store, f"s3://{s3_server.bucket}/{prefix}", tmp_path, env, files=5)


def demo_old(work: Path) -> None:
    """The same run with the old gc: how many maps are left broken."""
    work.mkdir(parents=True)
    where = str(work / "store")
    result = stress(where, work, child_env(), FILES, gc_role="old-gc")
    store, broken = open_store(where), 0
    for path in result["maps"]:
        try:
            check_every_live_map(store, [path])
        except Exception:  # any failure to decrypt is a lost map
            broken += 1
    print(f"old gc: {broken} of {len(result['maps'])} live maps lost chunks "
          f"({result['runs']} gc runs deleted {result['deleted']} chunks)")  # fmt: skip


if __name__ == "__main__":
    role, *rest = sys.argv[1:]
    if role == "writer":
        writer(rest[0], Path(rest[1]), int(rest[2]), int(rest[3]))
    elif role in ("gc", "old-gc"):
        (gc_loop if role == "gc" else old_gc_loop)(rest[0], Path(rest[1]), Path(rest[2]))
    elif role == "demo-old":
        demo_old(Path(rest[0]))
