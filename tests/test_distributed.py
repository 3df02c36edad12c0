"""pqselfenc.distributed on a real LocalCluster (two worker processes) and a real SeaweedFS.

What one machine makes, the cluster makes: the DataMap and the chunk set are compared with
``encrypt_file`` on the same bytes and config, around chunk and task boundaries, for the
small-input policy, compression, a convergence secret and hierarchical maps. Then what a
cluster adds: a worker killed mid-task, a source that changes or vanishes, a missing store,
credentials that must stay out of the task graph, a decryption that fails half-way (no temp
file, no pending multipart upload, no object), and the ``--scheduler`` CLI.
"""

from __future__ import annotations

import ast
import contextlib
import logging
import os
import pickle
import re
import signal
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from _cli_helpers import clean_env, run
from _hostile_http import Hostile
from _s3server import S3Server, s3_server, weed_binary  # noqa: F401  (s3_server is a fixture)
from distributed import Client, LocalCluster
from distributed.diagnostics.plugin import SchedulerPlugin
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pqselfenc import (
    CompressionConfig,
    DataMap,
    DirectoryChunkStore,
    EncryptionConfig,
    SelfEncryptor,
    __version__,
    distributed,
)
from pqselfenc.core.stores import S3ChunkStore
from pqselfenc.distributed import _cluster, _encrypt, _sources
from pqselfenc.distributed._locations import LocalPath, Location, S3Location, location
from pqselfenc.error import ChunkStoreError, EncryptionError, IntegrityError
from pqselfenc.streaming import encrypt_file

# Functions of this module run on the workers (client.run), which cannot import it by name.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

ROOT = Path(__file__).resolve().parent.parent
C = 4096  # content chunk size of most tests: many chunks and task boundaries in little data
CFG = EncryptionConfig(chunk_size=C)


# -- the cluster -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_env(request: pytest.FixtureRequest) -> Iterator[S3Server | None]:
    """Worker credentials the usual boto3 way: the environment the worker processes inherit."""
    server: S3Server | None = None
    with pytest.MonkeyPatch.context() as mp:
        if weed_binary() is not None:
            server = request.getfixturevalue("s3_server")
            mp.setenv("AWS_ACCESS_KEY_ID", server.access_key)
            mp.setenv("AWS_SECRET_ACCESS_KEY", server.secret_key)
            mp.setenv("AWS_DEFAULT_REGION", server.region)
            mp.setenv("PQSELFENC_S3_ENDPOINT", server.endpoint)
        yield server


@pytest.fixture(scope="module")
def client(s3_env: S3Server | None) -> Iterator[Client]:
    with (
        LocalCluster(
            n_workers=2,
            processes=True,
            threads_per_worker=1,
            dashboard_address=None,
            host="127.0.0.1",
            silence_logs=logging.ERROR,
            # The scheduler's HTTP endpoint on a free loopback port: 8787 may be taken.
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        ) as cluster,
        Client(cluster) as dask_client,
    ):
        yield dask_client


@pytest.fixture
def server(s3_env: S3Server | None) -> S3Server:
    if s3_env is None:
        pytest.skip("weed not on PATH")
    return s3_env


@pytest.fixture
def raw(server: S3Server) -> Iterator[Any]:
    s3 = server.client()
    yield s3
    s3.close()


def reference(data: bytes, config: EncryptionConfig) -> tuple[DataMap, set[bytes]]:
    """What one machine makes of ``data``: the DataMap and the names of all its chunks."""
    data_map, chunks = SelfEncryptor(data, config).encrypt()
    return data_map, {c.name for c in chunks}


def names_in(folder: Path) -> set[bytes]:
    return {info.name for info in DirectoryChunkStore(folder)}


def referenced(data_map: DataMap, store: Any, config: EncryptionConfig) -> set[bytes]:
    levels = SelfEncryptor.from_data_map(data_map, store, config).levels()
    return {c.name for level in levels for c in level.chunks}


def cluster_matches(
    client: Client, data: bytes, config: EncryptionConfig, task_size: int, folder: Path
) -> DataMap:
    """Encrypt ``data`` on the cluster into a fresh folder store; assert it equals one machine."""
    folder.mkdir(parents=True, exist_ok=True)
    source, store = folder / "in.bin", folder / "store"
    source.write_bytes(data)
    store.mkdir()
    data_map = distributed.encrypt(client, source, store, config, task_size=task_size)
    want, chunks = reference(data, config)
    assert data_map.to_bytes() == want.to_bytes()
    assert data_map == want
    assert names_in(store) == chunks
    return data_map


# -- identity with one machine -----------------------------------------------------------------

# (size, chunk size, min_chunks, task size in bytes): around the inline bound, the small-input
# policy (min_chunks near-equal pieces), the fixed-size bound, task boundaries, and rings of one
# and two chunks (where a task's halo is its own chunks).
BOUNDARIES = [
    (0, C, 3, 1),
    (1, C, 3, 1),
    (2, C, 3, 1),
    (3, C, 3, 1),
    (4, C, 3, C),
    (3 * C - 1, C, 3, 1),
    (3 * C - 1, C, 3, 2 * C),
    (3 * C, C, 3, 1),
    (3 * C, C, 3, 2 * C),
    (3 * C + 1, C, 3, 1),
    (3 * C + 1, C, 3, 3 * C),
    (4 * C, C, 3, C + 1),
    (10 * C - 1, C, 3, 4 * C),
    (10 * C + 1, C, 3, 2 * C),
    (10 * C + 1, C, 3, 3 * C),
    (10 * C + 1, C, 3, 1 << 30),
    (5, C, 1, 1),
    (C + 1, C, 1, 1),
    (3, C, 2, 1),
    (2 * C + 5, C, 2, 1),
    (2 * C + 5, C, 2, C),
    (7 * C, C, 5, 3 * C),
]


@pytest.mark.parametrize(("size", "chunk", "min_chunks", "task_size"), BOUNDARIES)
def test_map_and_chunks_equal_one_machine_at_boundaries(
    client: Client, tmp_path: Path, size: int, chunk: int, min_chunks: int, task_size: int
) -> None:
    config = EncryptionConfig(chunk_size=chunk, min_chunks=min_chunks)
    data_map = cluster_matches(client, os.urandom(size), config, task_size, tmp_path)
    ref_store = DirectoryChunkStore(tmp_path / "ref", fsync=False)
    assert encrypt_file(tmp_path / "in.bin", ref_store, config) == data_map  # the file path too


def test_compression_and_convergence_secret(client: Client, tmp_path: Path) -> None:
    config = EncryptionConfig(
        chunk_size=C,
        compression=CompressionConfig("zstd", 5),
        convergence_secret=bytes(range(32)),
    )
    data = (b"compressible " * 4000) + os.urandom(5 * C) + bytes(3 * C)
    data_map = cluster_matches(client, data, config, 3 * C, tmp_path)
    assert data_map.secret_id and data_map.pipeline_name == "zstd:5"


@pytest.mark.slow
def test_hierarchical_map(client: Client, tmp_path: Path) -> None:
    config = EncryptionConfig(chunk_size=64)
    data = os.urandom(64 * 4100 + 13)  # 4101 chunks: one more level
    data_map = cluster_matches(client, data, config, 64 * 900, tmp_path)
    assert data_map.child == 1
    out = tmp_path / "out.bin"
    distributed.decrypt(client, data_map, tmp_path / "store", out, config, task_size=64 * 700)
    assert out.read_bytes() == data


def test_two_phase_hashing_gives_the_same_map(client: Client, tmp_path: Path) -> None:
    data = os.urandom(11 * C + 7)
    source, store = tmp_path / "in.bin", tmp_path / "store"
    source.write_bytes(data)
    store.mkdir()
    places = [location(str(source), "source", object_key=True)]
    where = location(str(store), "store", object_key=False)
    for task_size in (1, 2 * C, 5 * C):
        (data_map,) = _cluster.run_encrypt(client, places, where, CFG, task_size, "two-phase")
        assert data_map == reference(data, CFG)[0]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    size=st.integers(0, 12_000),
    chunk=st.sampled_from([64, 1000, 4096]),
    min_chunks=st.integers(1, 5),
    task_size=st.integers(1, 20_000),
)
def test_any_layout_and_task_size(
    client: Client, size: int, chunk: int, min_chunks: int, task_size: int
) -> None:
    config = EncryptionConfig(chunk_size=chunk, min_chunks=min_chunks)
    with tempfile.TemporaryDirectory() as folder:
        cluster_matches(client, os.urandom(size), config, task_size, Path(folder))


def test_encrypt_many_keeps_the_order(client: Client, tmp_path: Path) -> None:
    datas = [os.urandom(n) for n in (0, 2, 5 * C + 3, 3 * C)]
    paths = []
    for i, data in enumerate(datas):
        paths.append(tmp_path / f"in{i}.bin")
        paths[-1].write_bytes(data)
    (tmp_path / "store").mkdir()
    maps = distributed.encrypt_many(client, paths, tmp_path / "store", CFG, task_size=2 * C)
    for data, data_map in zip(datas, maps, strict=True):
        assert data_map == reference(data, CFG)[0]
    assert distributed.encrypt_many(client, [], tmp_path / "store") == []


# -- decryption into a path --------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 2, 3 * C - 1, 10 * C + 1])
def test_decrypt_into_a_path(client: Client, tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    data_map = cluster_matches(client, data, CFG, 2 * C, tmp_path)
    out = tmp_path / "out" / "restored.bin"
    out.parent.mkdir()
    distributed.decrypt(client, data_map, tmp_path / "store", out, task_size=3 * C, mode=0o640)
    assert out.read_bytes() == data
    assert out.stat().st_mode & 0o777 == 0o640
    assert os.listdir(out.parent) == ["restored.bin"]  # no temp file left
    with pytest.raises(EncryptionError, match="already exists"):
        distributed.decrypt(client, data_map, tmp_path / "store", out, overwrite=False)
    assert os.listdir(out.parent) == ["restored.bin"]


def test_a_corrupted_chunk_leaves_nothing_under_the_name(client: Client, tmp_path: Path) -> None:
    data = os.urandom(12 * C)
    data_map = cluster_matches(client, data, CFG, 2 * C, tmp_path)
    victim = DirectoryChunkStore(tmp_path / "store").path_of(data_map.chunks[7])
    victim.chmod(0o600)
    victim.write_bytes(b"\0" + victim.read_bytes()[1:])
    out = tmp_path / "out" / "restored.bin"
    out.parent.mkdir()
    with pytest.raises(IntegrityError, match=f"chunk {data_map.chunks[7].name[:4].hex()}"):
        distributed.decrypt(client, data_map, tmp_path / "store", out, task_size=2 * C)
    assert os.listdir(out.parent) == []
    logs = repr(client.get_worker_logs())
    assert "Compute Failed" in logs  # Dask logged the failed task and its arguments...
    for c in data_map.chunks:  # ...and no chunk key material with them
        assert c.src_hash is not None and c.src_hash[:8].hex() not in logs


def _commit_twice(store: Location, data_map: DataMap, dest: Location) -> None:
    """Run the decrypt tasks in-process, committing twice: a retried commit (its worker died
    after the rename or the completion) must succeed on what the first one published."""
    from pqselfenc.distributed import _decrypt

    leaf = _decrypt.leaf_of(store, data_map, None)
    target = _decrypt.prepare(dest, data_map.total_size, False)
    part = _decrypt.decrypt_range(store, leaf, None, target, 0, len(leaf.chunks), 1)
    for _ in range(2):
        _decrypt.commit(target, data_map.total_size, 0o600, False, part)


def test_a_retried_commit_finds_its_own_file(tmp_path: Path) -> None:
    data = os.urandom(5 * C + 1)
    data_map, _ = SelfEncryptor(
        data, CFG, chunk_store=DirectoryChunkStore(tmp_path / "s")
    ).encrypt()
    _commit_twice(LocalPath(str(tmp_path / "s")), data_map, LocalPath(str(tmp_path / "out")))
    assert (tmp_path / "out").read_bytes() == data
    assert sorted(os.listdir(tmp_path)) == ["out", "s"]


def test_replacing_a_private_file_keeps_it_private(client: Client, tmp_path: Path) -> None:
    """Review 1 finding 3: with overwrite, a 0600 file came back with the new mode (0644).
    The cluster applies one machine's rule: the stricter of the mode and the old file's."""
    data = os.urandom(3 * C + 1)
    data_map = cluster_matches(client, data, CFG, 2 * C, tmp_path)
    out = tmp_path / "out.bin"
    for old_mode, want in ((0o600, 0o600), (0o640, 0o640), (0o664, 0o644)):
        out.write_bytes(b"old secret")
        out.chmod(old_mode)
        distributed.decrypt(client, data_map, tmp_path / "store", out, mode=0o644)
        assert out.read_bytes() == data
        assert out.stat().st_mode & 0o7777 == want, oct(old_mode)


def _prepared(tmp_path: Path, overwrite: bool) -> tuple[Any, int, Path]:
    """A decryption run in-process up to its commit: (target, bytes written, destination)."""
    from pqselfenc.distributed import _decrypt

    data_map, _ = SelfEncryptor(
        os.urandom(4 * C), CFG, chunk_store=DirectoryChunkStore(tmp_path / "s")
    ).encrypt()
    store, out = LocalPath(str(tmp_path / "s")), tmp_path / "out"
    target = _decrypt.prepare(LocalPath(str(out)), data_map.total_size, overwrite)
    written = _decrypt.decrypt_range(store, data_map, None, target, 0, 4, 1)
    return target, written, out


def test_a_fifo_that_appears_at_the_destination_is_never_replaced(tmp_path: Path) -> None:
    """Review 1 finding 6: the destination is checked before any work and again at publish;
    a FIFO (or a socket, a device) that appears in between stays, even with overwrite."""
    from pqselfenc.distributed import _decrypt

    for overwrite in (True, False):
        target, written, out = _prepared(tmp_path, overwrite)
        os.mkfifo(out)
        with pytest.raises(EncryptionError, match="is a FIFO, refusing to replace it"):
            _decrypt.commit(target, written, 0o600, overwrite, written)
        assert stat.S_ISFIFO(out.lstat().st_mode)
        _decrypt.abort(target)
        assert sorted(os.listdir(tmp_path)) == ["out", "s"]  # the temp file is gone
        with pytest.raises(EncryptionError, match="is a FIFO, refusing to replace it"):
            _decrypt.prepare(LocalPath(str(out)), 1, True)  # and before any work
        out.unlink()


def test_a_swapped_temp_file_is_refused(tmp_path: Path) -> None:
    """Someone who can write the destination's folder swaps the temp file for a link or for
    another file between tasks: no task writes through it, the commit does not publish it."""
    from pqselfenc.distributed import _decrypt

    data = os.urandom(4 * C)
    data_map, _ = SelfEncryptor(
        data, CFG, chunk_store=DirectoryChunkStore(tmp_path / "s")
    ).encrypt()
    store, dest = LocalPath(str(tmp_path / "s")), LocalPath(str(tmp_path / "out"))
    with pytest.raises(EncryptionError, match="is a folder"):
        _decrypt.prepare(LocalPath(str(tmp_path)), 1, True)
    refusals = {"link": r"cannot write .*symbolic links", "file": "replaced by another file"}
    for swap, refusal in refusals.items():
        target = _decrypt.prepare(dest, data_map.total_size, True)
        assert isinstance(target, _decrypt.FileTarget)
        os.unlink(target.temp)
        if swap == "link":
            os.symlink(tmp_path / "victim", target.temp)
        else:
            Path(target.temp).write_bytes(b"planted")
        with pytest.raises(EncryptionError, match=refusal):
            _decrypt.decrypt_range(store, data_map, None, target, 0, 4, 1)
        with pytest.raises(EncryptionError, match=refusal):
            _decrypt.commit(target, data_map.total_size, 0o600, True, data_map.total_size)
        _decrypt.abort(target)  # not ours any more: left alone
        assert os.path.lexists(target.temp) and not (tmp_path / "victim").exists()
        assert not (tmp_path / "out").exists()
        os.unlink(target.temp)


def test_decrypt_needs_the_convergence_secret(client: Client, tmp_path: Path) -> None:
    config = CFG.with_convergence_secret(os.urandom(32))
    data_map = cluster_matches(client, os.urandom(4 * C), config, C, tmp_path)
    with pytest.raises(EncryptionError, match="convergence secret"):
        distributed.decrypt(client, data_map, tmp_path / "store", tmp_path / "out")
    assert not (tmp_path / "out").exists()


# -- a worker killed mid-task ------------------------------------------------------------------


def _arm_kill(marker: str, after: int) -> None:
    """On a worker: the first task to store its ``after``-th chunk while ``marker`` exists
    kills this worker process (once: removing the marker is the claim)."""
    import contextlib as ctx
    import itertools

    from pqselfenc.distributed import _encrypt as module

    original = module.chunk_writer
    count = itertools.count()

    @ctx.contextmanager
    def writer(store: Any) -> Iterator[Any]:
        with original(store) as put:

            def put_then_die(chunk: Any) -> None:
                put(chunk)
                if next(count) >= after:
                    try:
                        os.unlink(marker)
                    except FileNotFoundError:
                        return
                    os._exit(17)

            yield put_then_die

    module._original_writer = original  # type: ignore[attr-defined]
    module.chunk_writer = writer


def _disarm() -> None:
    from pqselfenc.distributed import _encrypt as module

    module.chunk_writer = getattr(module, "_original_writer", module.chunk_writer)


def test_a_worker_killed_mid_task_changes_nothing(client: Client, tmp_path: Path) -> None:
    data = os.urandom(40 * C + 99)
    source, store = tmp_path / "in.bin", tmp_path / "store"
    source.write_bytes(data)
    store.mkdir()
    marker = tmp_path / "kill-once"
    marker.touch()
    pids = set(client.run(os.getpid).values())
    client.run(_arm_kill, str(marker), 3)
    try:
        data_map = distributed.encrypt(client, source, store, CFG, task_size=8 * C)
    finally:
        client.run(_disarm)
    assert not marker.exists()  # a worker claimed it and died
    client.wait_for_workers(2, timeout=60)
    assert set(client.run(os.getpid).values()) != pids
    want, chunks = reference(data, CFG)
    assert data_map == want
    # The killed attempt's chunks are the retry's (content addressed): nothing unreferenced.
    assert names_in(store) == chunks == referenced(data_map, DirectoryChunkStore(store), CFG)


# -- bad sources, missing stores ---------------------------------------------------------------


def test_missing_source_and_missing_store(client: Client, tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    (tmp_path / "in.bin").write_bytes(b"x" * 100)
    with pytest.raises(EncryptionError, match=r"cannot read source .*missing\.bin"):
        distributed.encrypt(client, tmp_path / "missing.bin", tmp_path / "store")
    with pytest.raises(EncryptionError, match="not a regular file"):
        distributed.encrypt(client, tmp_path, tmp_path / "store")
    with pytest.raises(ChunkStoreError, match="no chunk store folder"):
        distributed.encrypt(client, tmp_path / "in.bin", tmp_path / "no-store")
    assert not (tmp_path / "no-store").exists()  # a worker never makes a private store


def test_an_input_too_large_for_one_map_is_refused_before_any_work(
    client: Client, tmp_path: Path
) -> None:
    (tmp_path / "in.bin").write_bytes(bytes((1 << 20) + 1))  # 2^20 + 1 one-byte chunks
    (tmp_path / "store").mkdir()
    config = EncryptionConfig(chunk_size=1)
    with pytest.raises(EncryptionError, match="use a chunk size of at least 2 bytes"):
        distributed.encrypt(client, tmp_path / "in.bin", tmp_path / "store", config)
    assert os.listdir(tmp_path / "store") == []


def test_a_file_that_changes_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "in.bin"
    source.write_bytes(os.urandom(6 * C))
    (tmp_path / "store").mkdir()
    where = LocalPath(str(source))
    job = _encrypt.Job(where, _sources.snapshot(where), LocalPath(str(tmp_path / "store")), CFG)
    with source.open("ab") as f:
        f.write(b"more")
    with pytest.raises(EncryptionError, match="changed while it was being encrypted"):
        _encrypt.encrypt_range(job, 0, 2)
    source.write_bytes(os.urandom(3 * C))  # shorter, and rewritten
    with pytest.raises(EncryptionError, match="changed while it was being encrypted"):
        _encrypt.encrypt_range(job, 3, 6)


def test_halo_hashes_that_disagree_are_refused(tmp_path: Path) -> None:
    source = tmp_path / "in.bin"
    source.write_bytes(os.urandom(6 * C))
    (tmp_path / "store").mkdir()
    where = LocalPath(str(source))
    job = _encrypt.Job(where, _sources.snapshot(where), LocalPath(str(tmp_path / "store")), CFG)
    parts = [_encrypt.encrypt_range(job, a, a + 2) for a in (0, 2, 4)]
    assert _encrypt.finish(job, *parts) == reference(source.read_bytes(), CFG)[0]
    index = parts[1].halo[0][0]
    forged = _encrypt.RangeResult(
        parts[1].first, parts[1].packed, ((index, bytes(32)), *parts[1].halo[1:])
    )
    with pytest.raises(EncryptionError, match=f"chunk {index} read differently by two tasks"):
        _encrypt.finish(job, parts[0], forged, parts[2])
    with pytest.raises(EncryptionError, match="came back from no task"):
        _encrypt.finish(job, parts[0], parts[2])


# -- S3 ----------------------------------------------------------------------------------------


def s3_url(server: S3Server, what: str) -> str:
    return f"s3://{server.bucket}/dist-{what}-{uuid.uuid4().hex}"


@pytest.mark.s3
def test_s3_source_into_s3_store_equals_one_machine(
    client: Client, server: S3Server, raw: Any, tmp_path: Path
) -> None:
    data = os.urandom(17 * C + 5)
    source = s3_url(server, "src")
    raw.put_object(Bucket=server.bucket, Key=source.split("/", 3)[3], Body=data)
    store = s3_url(server, "store")
    data_map = distributed.encrypt(client, source, store, CFG, task_size=3 * C)
    want, chunks = reference(data, CFG)
    assert data_map == want
    with S3ChunkStore.from_url(store) as opened:
        assert {info.name for info in opened} == chunks
        assert SelfEncryptor.from_data_map(data_map, opened, CFG).decrypt() == data


@pytest.mark.s3
def test_decrypt_into_s3_multipart(client: Client, server: S3Server, raw: Any) -> None:
    config = EncryptionConfig(chunk_size=1 << 20)
    data = os.urandom((11 << 20) + 12345)  # three parts: S3 parts are 5 MiB at least
    store = s3_url(server, "store")
    with S3ChunkStore.from_url(store) as opened:
        data_map, _ = SelfEncryptor(data, config, chunk_store=opened).encrypt()
    dest = s3_url(server, "dest")
    key = dest.split("/", 3)[3]
    distributed.decrypt(client, data_map, store, dest, task_size=1 << 20)
    got = raw.get_object(Bucket=server.bucket, Key=key)
    assert got["Body"].read() == data
    assert got["ETag"].endswith('-3"')
    empty = s3_url(server, "empty")
    distributed.decrypt(client, SelfEncryptor(b"").encrypt()[0], store, empty)
    assert raw.get_object(Bucket=server.bucket, Key=empty.split("/", 3)[3])["Body"].read() == b""


@pytest.mark.s3
def test_a_retried_s3_commit_finds_its_own_object(server: S3Server, raw: Any) -> None:
    data = os.urandom(3 * C)
    store = s3_url(server, "store")
    with S3ChunkStore.from_url(store) as opened:
        data_map, _ = SelfEncryptor(data, CFG, chunk_store=opened).encrypt()
    dest = s3_url(server, "dest")
    key = dest.split("/", 3)[3]
    _commit_twice(location(store, "s", object_key=False), data_map, S3Location(server.bucket, key))
    assert raw.get_object(Bucket=server.bucket, Key=key)["Body"].read() == data


@pytest.mark.s3
def test_failed_decrypt_into_s3_leaves_no_upload_and_no_object(
    client: Client, server: S3Server, raw: Any
) -> None:
    config = EncryptionConfig(chunk_size=1 << 20)
    data = os.urandom(11 << 20)
    store = s3_url(server, "store")
    with S3ChunkStore.from_url(store) as opened:
        data_map, _ = SelfEncryptor(data, config, chunk_store=opened).encrypt()
        victim = opened.key_of(data_map.chunks[6])  # in the second part (chunks 5..9)
    raw.put_object(Bucket=server.bucket, Key=victim, Body=b"damaged")
    dest = s3_url(server, "dest")
    key = dest.split("/", 3)[3]
    with pytest.raises(IntegrityError, match=f"chunk {data_map.chunks[6].name[:4].hex()}"):
        distributed.decrypt(client, data_map, store, dest)
    uploads = raw.list_multipart_uploads(Bucket=server.bucket, Prefix=key).get("Uploads", [])
    assert uploads == []
    assert raw.list_objects_v2(Bucket=server.bucket, Prefix=key).get("KeyCount") == 0


@pytest.mark.s3
def test_s3_bad_sources_and_missing_bucket(
    client: Client, server: S3Server, raw: Any, tmp_path: Path
) -> None:
    store = s3_url(server, "store")
    with pytest.raises(EncryptionError, match=r"cannot read source s3://.*does not exist"):
        distributed.encrypt(client, s3_url(server, "nothing"), store)
    source = s3_url(server, "src")
    raw.put_object(Bucket=server.bucket, Key=source.split("/", 3)[3], Body=b"x" * 100)
    with pytest.raises(ChunkStoreError, match="does not exist"):
        distributed.encrypt(client, source, "s3://no-such-bucket-here/p")
    with pytest.raises(EncryptionError, match=r"cannot read source s3://no-such-bucket"):
        distributed.encrypt(client, "s3://no-such-bucket-here/x", store)


@pytest.mark.s3
def test_an_s3_object_that_changes_is_refused(server: S3Server, raw: Any, tmp_path: Path) -> None:
    key = f"dist-src-{uuid.uuid4().hex}"
    raw.put_object(Bucket=server.bucket, Key=key, Body=os.urandom(6 * C))
    where = S3Location(server.bucket, key)
    snap = _sources.snapshot(where)
    (tmp_path / "store").mkdir()
    job = _encrypt.Job(where, snap, LocalPath(str(tmp_path / "store")), CFG)
    assert _encrypt.encrypt_range(job, 2, 4).first == 2
    raw.put_object(Bucket=server.bucket, Key=key, Body=os.urandom(6 * C))  # same size, new ETag
    with pytest.raises(EncryptionError, match="changed while it was being encrypted"):
        _encrypt.encrypt_range(job, 0, 2)
    # A server that ignored If-Match still answers the size of what it has: a short read.
    lying = _encrypt.Job(
        where, _sources.Snapshot(7 * C, _sources.snapshot(where).tag), job.store, CFG
    )
    with pytest.raises(EncryptionError, match="another range or size"):
        _encrypt.encrypt_range(lying, 0, 2)


# -- credentials stay on the workers -----------------------------------------------------------


class RecordGraph(SchedulerPlugin):
    """On the scheduler: every task's key and pickled run spec, as submitted."""

    name = "pqselfenc-test-record-graph"

    def __init__(self) -> None:
        self.seen: list[bytes] = []

    def update_graph(self, scheduler: Any, *, tasks: list[Any], **kwargs: Any) -> None:
        for key in tasks:
            ts = scheduler.tasks.get(key)
            spec = None if ts is None else ts.run_spec
            self.seen.append(pickle.dumps(str(key)) + cloudpickle.dumps(spec))


def _recorded(dask_scheduler: Any) -> list[bytes]:
    seen: list[bytes] = dask_scheduler.plugins[RecordGraph.name].seen
    return seen


@pytest.mark.s3
def test_credentials_never_enter_the_task_graph_or_logs(
    client: Client, server: S3Server, raw: Any
) -> None:
    client.register_plugin(RecordGraph())
    data = os.urandom(6 * C)
    source, store, dest = (s3_url(server, w) for w in ("src", "store", "dest"))
    raw.put_object(Bucket=server.bucket, Key=source.split("/", 3)[3], Body=data)
    data_map = distributed.encrypt(client, source, store, CFG, task_size=C)
    distributed.decrypt(client, data_map, store, dest)
    with contextlib.suppress(ChunkStoreError, EncryptionError):
        distributed.encrypt(client, s3_url(server, "missing"), store)
    graph = client.run_on_scheduler(_recorded)
    assert any(source.split("/", 3)[3].encode() in blob for blob in graph)  # args are in there
    logs = repr(client.get_worker_logs()) + repr(client.get_scheduler_logs())
    for secret in (server.access_key, server.secret_key):
        assert not any(secret.encode() in blob for blob in graph)
        assert secret not in logs


_CREDENTIALS = "credentials do not belong in a URL"
_NO_QUERY = "no path, query or fragment"  # an endpoint carrying a token in its query


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("s3://AKIAEXAMPLE:secret@bucket/key", _CREDENTIALS),
        ("s3://AKIAEXAMPLE@bucket/key", _CREDENTIALS),
        ("s3://bucket/key?endpoint=http://user:pass@127.0.0.1:9000", _CREDENTIALS),
        ("s3://bucket/key?endpoint=http://127.0.0.1:9000/?token=abc", _NO_QUERY),
    ],
)
def test_urls_with_credentials_are_refused(
    client: Client, tmp_path: Path, bad: str, message: str
) -> None:
    (tmp_path / "in.bin").write_bytes(b"abc" * 10)
    with pytest.raises(ValueError, match=message):
        distributed.encrypt(client, tmp_path / "in.bin", bad)
    with pytest.raises(ValueError, match=message):
        distributed.encrypt(client, bad, tmp_path)
    data_map = SelfEncryptor(b"abc").encrypt()[0]
    with pytest.raises(ValueError, match=message):
        distributed.decrypt(client, data_map, tmp_path, bad)


def test_nothing_that_travels_prints_a_secret(tmp_path: Path) -> None:
    """Dask logs ``repr`` of a failed task's arguments: none may show key material."""
    secret = bytes(range(100, 132))
    config = CFG.with_convergence_secret(secret)
    data = os.urandom(4 * C)
    data_map, _ = SelfEncryptor(data, config).encrypt()
    where = LocalPath(str(tmp_path))
    job = _encrypt.Job(where, _sources.Snapshot(len(data), "tag"), where, config)
    packed = b"".join(c.name + (c.src_hash or b"") + bytes(8) for c in data_map.chunks)
    result = _encrypt.RangeResult(0, packed, ((3, data_map.chunks[3].src_hash or b""),))
    shown = " ".join(repr(v) for v in (job, config, data_map, result, *data_map.chunks))
    for h in [secret, *(c.src_hash for c in data_map.chunks)]:
        assert h is not None
        assert h.hex() not in shown and repr(h) not in shown and h[:8].hex() not in shown


def test_misuse_is_refused_before_any_work(client: Client, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"dask\.distributed\.Client"):
        distributed.encrypt(object(), tmp_path / "x", tmp_path)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="s3:// URL or a path"):
        distributed.encrypt(client, tmp_path / "x", DirectoryChunkStore(tmp_path / "s"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unsupported URL scheme"):
        distributed.encrypt(client, "gs://bucket/key", tmp_path)
    with pytest.raises(ValueError, match="names no object"):
        distributed.encrypt(client, "s3://bucket/prefix/", tmp_path)
    with pytest.raises(ValueError, match="task_size"):
        distributed.encrypt(client, tmp_path / "x", tmp_path, task_size=0)
    with pytest.raises(TypeError, match="sequence of sources"):
        distributed.encrypt_many(client, "one.bin", tmp_path)  # type: ignore[arg-type]


def _slow_then_mark(path: str, seconds: float) -> None:
    time.sleep(seconds)  # a task that is long enough to be caught running
    Path(path).write_text("done")


def test_after_a_failure_the_client_waits_for_running_tasks(client: Client, tmp_path: Path) -> None:
    """A running task cannot be interrupted: cleanup must not start before it ends."""
    session = _cluster.Session(client)
    marks = [tmp_path / f"mark{i}" for i in range(2)]
    futures = [session.submit("probe", _slow_then_mark, str(m), 1.0) for m in marks]
    keys = [f.key for f in futures]
    deadline = time.monotonic() + 30
    while not any(client.run(_cluster._executing, keys).values()):  # until a worker runs one
        assert time.monotonic() < deadline, "no worker ever reported the task running"
    session.settle()
    assert all(f.cancelled() for f in futures)
    assert any(m.exists() for m in marks)  # the running one finished before settle returned
    assert client.run(_cluster._executing, keys) == {
        address: [] for address in client.scheduler_info()["workers"]
    }


def test_error_answers_to_the_workers_s3_client_are_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sibling of review 1 finding 7: the workers' client for S3 sources and destinations
    read error documents whole too; it now refuses one past ANSWER_LIMIT, unread."""
    from pqselfenc.core.stores._s3io import ANSWER_LIMIT, BodyTooLarge, BoundedSession
    from pqselfenc.distributed._locations import s3_client

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKTEST")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-a-secret")
    hostile = Hostile("error-huge")  # a 500 claiming (and sending) 3 GiB
    hostile.start()
    try:
        client = s3_client(hostile.endpoint, "us-east-1")
        assert isinstance(client._endpoint.http_session, BoundedSession)
        with pytest.raises(BodyTooLarge) as refused:
            client.get_object(Bucket="bucket", Key="key", Range="bytes=0-9")
        assert refused.value.limit == ANSWER_LIMIT and refused.value.size == 3 << 30
        time.sleep(0.5)
        assert hostile.sent < 64 << 20  # what the socket buffers took before the close
    finally:
        hostile.stop()


def test_s3_parts_are_at_least_5_mib_and_at_most_10000() -> None:
    dest = S3Location("bucket", "key")
    assert _cluster.chunks_per_task(1 << 20, 1, 100, None) == 1
    assert _cluster.chunks_per_task(1 << 20, 1, 100, dest) == 5
    assert _cluster.chunks_per_task(64 << 10, 64 << 20, 10**6, dest) == 1024
    assert _cluster.chunks_per_task(1 << 10, 1, 10**8, dest) == 10**4
    assert _cluster.chunk_ranges(0, 3) == [(0, 0)]
    assert _cluster.chunk_ranges(7, 3) == [(0, 3), (3, 6), (6, 7)]


# -- the command line --------------------------------------------------------------------------


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PQSELFENC_HOME", str(tmp_path / "home"))
    return tmp_path


@pytest.mark.s3
def test_cli_encrypt_and_decrypt_with_scheduler(
    client: Client,
    server: S3Server,
    raw: Any,
    cli_env: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    address = client.scheduler.address
    data = os.urandom(9 * C + 1)
    source = s3_url(server, "src")
    raw.put_object(Bucket=server.bucket, Key=source.split("/", 3)[3], Body=data)
    store = s3_url(server, "store")
    done = run(capsys, "encrypt", "--scheduler", address, source, "--store", store,
               "--chunk-size", "4K", "--out", "in.map")  # fmt: skip
    assert done.code == 0, done.err
    assert DataMap.from_bytes(Path("in.map").read_bytes()) == reference(data, CFG)[0]
    done = run(capsys, "decrypt", "in.map", "--scheduler", address, "--store", store,
               "--out", "out.bin")  # fmt: skip
    assert done.code == 0, done.err
    assert Path("out.bin").read_bytes() == data
    again = run(
        capsys, "decrypt", "in.map", "--scheduler", address, "--store", store, "--out", "out.bin"
    )
    assert "already exists" in again.error_line()


def test_cli_errors_are_one_line(
    client: Client, cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    address = client.scheduler.address
    missing = run(capsys, "encrypt", "--scheduler", address, "nope.bin", "--store", "st")
    assert "input file nope.bin does not exist" in missing.error_line() and missing.code == 1
    assert not Path("nope.bin.map").exists()
    Path("x").write_bytes(b"x")
    creds = run(capsys, "encrypt", "--scheduler", address, "x", "--store", "s3://k:s@bucket/p")
    assert "credentials do not belong" in creds.error_line()
    data = os.urandom(5 * C)
    Path("in.bin").write_bytes(data)
    done = run(capsys, "encrypt", "--scheduler", address, "in.bin", "--store", "st", "-q",
               "--chunk-size", "4K")  # fmt: skip
    assert done.code == 0, done.err
    assert DataMap.from_bytes(Path("in.bin.map").read_bytes()) == reference(data, CFG)[0]
    done = run(capsys, "decrypt", "in.bin.map", "--scheduler", address, "--store", "st",
               "--out", "back.bin")  # fmt: skip
    assert done.code == 0 and Path("back.bin").read_bytes() == data
    stdout = run(capsys, "decrypt", "in.bin.map", "--scheduler", address, "--store", "st")
    assert "--scheduler writes to a file" in stdout.error_line()
    nowhere = run(capsys, "decrypt", "in.bin.map", "--scheduler", address, "--store", "nowhere",
                  "--out", "o")  # fmt: skip
    assert "no chunk store" in nowhere.error_line()


def test_cli_encrypt_with_scheduler_makes_the_checks_of_one_machine(
    client: Client, cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Review 1 finding 5: --scheduler replaced an input that was another input's map path
    (--force) and encrypted one file given twice; both are refused before any work, as on one
    machine (the same function makes the checks)."""
    address = client.scheduler.address
    Path("report").write_bytes(b"report body" * 100)
    Path("report.map").write_bytes(b"precious notes, not a map")
    Path("sub").mkdir()
    (Path("sub") / "link").symlink_to(cli_env)
    refusals = {
        ("report", "report.map", "--force"): "report.map would overwrite the input report.map",
        ("report", "sub/link/report"): "sub/link/report is the same file as report",
        ("report", "report"): "report is the same file as report",
        ("nope.bin",): "input file nope.bin does not exist",
        ("sub",): "input file sub is not a regular file",
    }
    for argv, refusal in refusals.items():
        for scheduler in ((), ("--scheduler", address)):
            done = run(capsys, "encrypt", *argv, "--store", "st", "-q", *scheduler)
            assert done.code == 1 and refusal in done.error_line(), (argv, scheduler, done.err)
    assert Path("report.map").read_bytes() == b"precious notes, not a map"
    assert not Path("report.map.map").exists() and not Path("st").exists()


def test_cli_decrypt_with_scheduler_force_keeps_a_private_file_private(
    client: Client, cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Review 1 finding 3 through the command line (the umask allows 0644)."""
    address = client.scheduler.address
    data = os.urandom(3 * C)
    Path("in.bin").write_bytes(data)
    done = run(capsys, "encrypt", "--scheduler", address, "in.bin", "--store", "st", "-q")
    assert done.code == 0, done.err
    Path("out.bin").write_bytes(b"old secret")
    Path("out.bin").chmod(0o600)
    old_mask = os.umask(0o022)
    try:
        done = run(capsys, "decrypt", "in.bin.map", "--scheduler", address, "--store", "st",
                   "--out", "out.bin", "--force", "-q")  # fmt: skip
    finally:
        os.umask(old_mask)
    assert done.code == 0, done.err
    assert Path("out.bin").read_bytes() == data
    assert Path("out.bin").stat().st_mode & 0o777 == 0o600


@pytest.mark.s3
@pytest.mark.parametrize(("signum", "code", "what"),
                         [(signal.SIGINT, 130, "interrupted"),
                          (signal.SIGTERM, 143, "terminated (SIGTERM)")])  # fmt: skip
def test_an_interrupted_decrypt_with_scheduler_ends_at_once(
    client: Client, server: S3Server, tmp_path: Path, signum: int, code: int, what: str
) -> None:
    """Review 1 finding 8: SIGTERM while the workers wait on a stalled store took 37 s (the
    client waited for the running tasks), exited 1 and printed a traceback. Now the command
    ends within about a second with 130/143 and one line; the cluster removes the temp file
    once the stalled task has given up (the store's deadline)."""
    data_map, _ = SelfEncryptor(os.urandom(5 * C), CFG).encrypt()  # the chunks are nowhere
    (tmp_path / "in.map").write_bytes(data_map.to_bytes())
    (tmp_path / "in.map").chmod(0o600)
    stalled = Hostile("silent")
    stalled.start()
    try:
        store = f"s3://chunks/p?endpoint={stalled.endpoint}&timeout=6"
        proc = subprocess.Popen(
            [sys.executable, "-m", "pqselfenc.cli", "decrypt", "in.map", "--out", "out.bin",
             "--scheduler", client.scheduler.address, "--store", store, "-q"],
            env=clean_env(tmp_path), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while not (stalled.conns and _temp_files(tmp_path)):  # stuck in a task's fetch
                assert time.monotonic() < deadline and proc.poll() is None, proc.stderr
                time.sleep(0.05)
            sent = time.monotonic()
            proc.send_signal(signum)
            _, err = proc.communicate(timeout=30)
            elapsed = time.monotonic() - sent
        finally:
            if proc.poll() is None:
                proc.kill()
        assert proc.returncode == code, err
        said = (f"pqselfenc: error: {what}; the cluster may still publish out.bin (whole if it "
                "does: the rename is atomic, never a partial file)\n")  # fmt: skip
        assert err.decode() == said  # one line: no traceback (asyncio's "never retrieved")
        assert elapsed < 2.0, elapsed
        deadline = time.monotonic() + 60
        while _temp_files(tmp_path):  # the cleanup the cluster runs once the task gave up
            assert time.monotonic() < deadline, "the temp file was never removed"
            time.sleep(0.1)
        assert sorted(os.listdir(tmp_path)) == ["in.map"]
    finally:
        stalled.stop()


def _temp_files(folder: Path) -> list[str]:
    return [n for n in os.listdir(folder) if n.startswith(".pqselfenc-")]


def test_cli_unreachable_scheduler(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import dask

    Path("in.bin").write_bytes(b"abc" * 100)
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        result = run(
            capsys, "encrypt", "--scheduler", "tcp://127.0.0.1:9", "in.bin", "--store", "s"
        )
    assert "cannot reach the Dask scheduler" in result.error_line()


# -- dask stays optional -----------------------------------------------------------------------


def test_importing_pqselfenc_and_the_cli_does_not_import_dask() -> None:
    code = (
        "import sys, contextlib\n"
        "import pqselfenc, pqselfenc.distributed, pqselfenc.cli\n"
        "with contextlib.suppress(SystemExit):\n"
        "    pqselfenc.cli.main(['--version'])\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=60, check=True)  # fmt: skip
    assert done.stdout.splitlines() == [f"pqselfenc {__version__}", "[]"]


def test_distributed_imports_only_core() -> None:
    package = ROOT / "pqselfenc" / "distributed"
    for path in package.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                assert not name.startswith(("pqselfenc.kem", "pqselfenc.keys", "pqselfenc.cli"))
        top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
        for node in top:
            module = node.module if isinstance(node, ast.ImportFrom) else node.names[0].name
            assert not (module or "").startswith(("dask", "distributed")), path.name


def test_every_test_docs_distributed_names_exists() -> None:
    text = (ROOT / "docs" / "distributed.md").read_text()
    named = re.findall(r"tests/test_distributed\.py::(\w+)", text)
    tree = ast.parse(Path(__file__).read_text())
    defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert len(named) >= 8
    assert sorted(set(named) - defined) == []


@pytest.mark.parametrize(
    "bad", ["s3://bucket/team#2", "s3://bucket/te\tam", "s3://bucket/team?", "s3://bucket//k"]
)
def test_locations_read_s3_urls_with_the_stores_one_strict_grammar(bad: str) -> None:
    """A character the URL grammar does not understand is refused, never dropped: the S3 URL
    parser of the stores (core/stores/_s3url.py) reads every source, store and destination."""
    for object_key in (True, False):
        with pytest.raises(ValueError):
            location(bad, "source", object_key=object_key)


def test_cli_decrypt_with_scheduler_applies_the_map_policy(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--signer refuses an unsealed map on the --scheduler path too, before any cluster is
    contacted (the address is unreachable on purpose)."""
    data_map, _ = SelfEncryptor(b"abc" * 100).encrypt()
    Path("in.map").write_bytes(data_map.to_bytes())
    Path("in.map").chmod(0o600)
    Path("st").mkdir()
    refused = run(capsys, "decrypt", "in.map", "--scheduler", "tcp://127.0.0.1:9", "--store", "st",
                  "--signer", "alice", "--out", "out.bin")  # fmt: skip
    assert refused.code == 1
    assert "signed" in refused.error_line() or "sealed" in refused.error_line()
    assert not Path("out.bin").exists()
