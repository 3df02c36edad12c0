"""The S3 store shared with gc, on a real SeaweedFS: lock objects (created only if absent, never
recreated once removed, retried through a throttling proxy), checked deduplication and
refreshed ``LastModified``, gc with a grace period, a writer killed holding its lock, and the
create-then-list interleaving of a writer and a gc."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from _gc_support import CFG, both_create_before_either_lists, decrypts, encrypt, names, stored
from _s3server import S3Server, s3_server  # noqa: F401  (s3_server is a fixture)
from test_s3_store import Proxy, Sleeps, record_calls

from pqselfenc import ChunkInfo, SelfEncryptor
from pqselfenc.core._locks import LockPolicy
from pqselfenc.core.gc import collect_garbage
from pqselfenc.core.stores import S3ChunkStore
from pqselfenc.core.stores.s3 import RetryPolicy
from pqselfenc.error import StoreLockedError

pytestmark = pytest.mark.s3


@pytest.fixture
def raw(s3_server: S3Server) -> Iterator[Any]:  # noqa: F811
    client = s3_server.client()
    yield client
    client.close()


def make(server: S3Server, prefix: str | None = None, **options: Any) -> S3ChunkStore:
    options.setdefault("sleep", Sleeps())
    options.setdefault("rng", random.Random(5))
    if "client" not in options:
        options.update(server.credentials())
    return S3ChunkStore(server.bucket, prefix or f"gc/{uuid.uuid4().hex}", **options)


def keys(raw: Any, store: S3ChunkStore, under: str = "") -> list[str]:
    listed = raw.list_objects_v2(Bucket=store.bucket, Prefix=store.prefix + under)
    return sorted(o["Key"][len(store.prefix) :] for o in listed.get("Contents", ()))


# -- lock objects -------------------------------------------------------------------------------


def test_a_lock_is_an_object_created_only_if_absent(s3_server: S3Server, raw: Any) -> None:  # noqa: F811
    store = make(s3_server, client=raw)
    sent: list[dict[str, str]] = []
    raw.meta.events.register(
        "before-send.s3.PutObject", lambda request, **_: sent.append(dict(request.headers))
    )
    with store.writing():
        [name] = keys(raw, store, "locks/")
        assert name.startswith("locks/shared-")
        assert [h.get("If-None-Match") for h in sent] == [b"*"]  # one put, only if absent

        def body() -> dict[str, Any]:
            found = raw.get_object(Bucket=store.bucket, Key=store.prefix + name)
            return dict(json.loads(found["Body"].read()))

        assert body()["start"] is None and body()["pid"] == os.getpid()
        # its start is the LastModified the listing showed, written in at the first refresh,
        # which uploads only while the lock still exists
        assert store.locks().space.refresh(name.removeprefix("locks/"))
        assert body()["start"] == store.locks().session_start and "If-Match" in sent[1]
        assert [i.name for i in store] == []  # lock objects are never listed as chunks
        with pytest.raises(StoreLockedError, match="could not be created"):
            store.locks().space.create(name.removeprefix("locks/"), lambda at: b"{}")
    [record] = keys(raw, store, "locks/")
    assert record.startswith("locks/ended/") and len(store.locks().space.ended()) == 1


def test_a_removed_lock_is_never_recreated_by_its_refresher(s3_server: S3Server, raw: Any) -> None:  # noqa: F811
    store = make(s3_server, locks=LockPolicy(refresh=0.2, stale=5.0))
    with pytest.raises(StoreLockedError, match="was removed"), store.writing():
        [name] = keys(raw, store, "locks/")
        raw.delete_object(Bucket=store.bucket, Key=store.prefix + name)
        for _ in range(100):
            time.sleep(0.1)
            with contextlib.suppress(StoreLockedError):
                store.locks().check()
                continue
            break
    assert [k for k in keys(raw, store, "locks/") if not k.startswith("locks/ended/")] == []


def test_lock_requests_are_retried_through_a_throttling_proxy(s3_server: S3Server) -> None:  # noqa: F811
    proxy = Proxy(s3_server.endpoint)
    sleeps = Sleeps()
    try:
        store = make(s3_server, sleep=sleeps, retry=RetryPolicy(attempts=5))
        store_through = S3ChunkStore(
            s3_server.bucket, store.prefix, sleep=sleeps, rng=random.Random(1),
            **{**s3_server.credentials(), "endpoint_url": proxy.endpoint},
        )  # fmt: skip
        proxy.throttle = 2
        with store_through, store_through.writing():
            assert len(store.locks().inspect()) == 1
        assert len(sleeps) == 2 and store.locks().inspect() == []
    finally:
        proxy.stop()
        store.close()


# -- checked deduplication and refreshed stamps -------------------------------------------------


def test_dedup_refreshes_an_old_chunk_once_per_session(s3_server: S3Server, raw: Any) -> None:  # noqa: F811
    store = make(s3_server, client=raw)
    chunk = os.urandom(4000)
    info = store.store(chunk)
    time.sleep(1.1)  # LastModified has whole seconds: the session starts a second later
    calls = record_calls(raw)
    with store.writing():
        start = store.locks().session_start
        assert start is not None
        calls.clear()
        store.store(chunk)
        assert calls == [("PutObject", 412), ("HeadObject", 200), ("CopyObject", 200)]
        head = raw.head_object(Bucket=store.bucket, Key=store.key_of(info))
        assert head["LastModified"].timestamp() >= start
        calls.clear()
        store.store(chunk)  # stamped within this session: checked, not copied again
        assert calls == [("PutObject", 412), ("HeadObject", 200)]


def test_dedup_compares_an_object_without_a_checksum_byte_for_byte(
    s3_server: S3Server,  # noqa: F811
    raw: Any,
) -> None:
    store = make(s3_server, client=raw)
    chunk = os.urandom(4000)
    info = ChunkInfo.for_chunk(chunk)
    raw.put_object(Bucket=store.bucket, Key=store.key_of(info), Body=chunk)  # no checksum kept
    calls = record_calls(raw)
    store.store(chunk)
    assert calls == [("PutObject", 412), ("HeadObject", 200), ("GetObject", 200),
                     ("CopyObject", 200)]  # fmt: skip
    other = bytes([chunk[0] ^ 1]) + chunk[1:]  # the right size, the wrong bytes
    raw.put_object(Bucket=store.bucket, Key=store.key_of(info), Body=other)
    calls.clear()
    store.store(chunk)
    assert calls == [("PutObject", 412), ("HeadObject", 200), ("GetObject", 200),
                     ("PutObject", 200)]  # fmt: skip
    assert store.retrieve(info) == chunk


# -- gc -----------------------------------------------------------------------------------------


def test_gc_on_s3_keeps_the_young_and_deletes_the_old(s3_server: S3Server) -> None:  # noqa: F811
    with make(s3_server) as store:
        keep_data, drop_data = os.urandom(5000), os.urandom(3000)
        keep, drop = encrypt(store, keep_data), encrypt(store, drop_data)
        plan = collect_garbage(store, [keep], delete=True, grace=3600)
        assert (plan.unreferenced, plan.young, plan.deleted) == (3, 3, 0)
        assert plan.stored_bytes > 8000  # sizes come from the listing
        plan = collect_garbage(store, [keep], delete=True, grace=0)
        assert plan.deleted == 3 and stored(store) == names(keep)
        assert decrypts(store, keep, keep_data) and not names(drop) & stored(store)


WRITER = """
import sys, time
from pqselfenc import SelfEncryptor, EncryptionConfig
from pqselfenc.core.stores import S3ChunkStore
store = S3ChunkStore.from_url(sys.argv[1])
with store.writing():
    SelfEncryptor(bytes.fromhex(sys.argv[2]), EncryptionConfig(chunk_size=1024),
                  chunk_store=store).encrypt()
    print("ready", flush=True)
    time.sleep(60)
"""


def test_a_writer_killed_holding_its_lock_on_s3(s3_server: S3Server) -> None:  # noqa: F811
    with make(s3_server) as store:
        keep, data = encrypt(store, os.urandom(2000)), os.urandom(3000)
        env = {**os.environ, "AWS_ACCESS_KEY_ID": s3_server.access_key,
               "AWS_SECRET_ACCESS_KEY": s3_server.secret_key, "AWS_DEFAULT_REGION": "us-east-1",
               "PQSELFENC_S3_ENDPOINT": s3_server.endpoint}  # fmt: skip
        url = f"s3://{store.bucket}/{store.prefix}"
        writer = subprocess.Popen([sys.executable, "-c", WRITER, url, data.hex()], env=env,
                                  stdout=subprocess.PIPE, text=True)  # fmt: skip
        assert writer.stdout is not None and writer.stdout.readline() == "ready\n"
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        writer.stdout.close()
        [info] = store.locks().inspect()
        assert info.dead and info.holder is not None and info.holder["pid"] == writer.pid
        with pytest.raises(StoreLockedError, match=f"{info.lock_id}.*process gone"):
            collect_garbage(store, [keep], delete=True, grace=0)
        plan = collect_garbage(store, [keep], delete=True, grace=600,
                               remove_stale_locks=[info.lock_id])  # fmt: skip
        assert plan.deleted == 0 and plan.sessions == 2  # keep's, and the dead writer's
        assert names(SelfEncryptor(data, CFG).encrypt()[0]) <= stored(store)


@pytest.mark.parametrize("other", ["writer", "gc"])
def test_create_then_list_on_s3_never_lets_gc_share_the_store(
    s3_server: S3Server,  # noqa: F811
    other: str,
) -> None:
    gc_side = make(s3_server)
    rival = make(s3_server, gc_side.prefix, locks=LockPolicy(refresh=1, stale=30, wait=0))
    keep = encrypt(gc_side, os.urandom(2000))
    barrier = threading.Barrier(2)
    both_create_before_either_lists(gc_side, barrier)
    both_create_before_either_lists(rival, barrier)
    held: list[str] = []
    outcomes: dict[str, str] = {}

    def hold(who: str) -> None:
        held.append(who)
        time.sleep(0.3)
        held.remove(who)

    def attempt(who: str, store: S3ChunkStore, as_gc: bool) -> None:
        try:
            if as_gc:
                collect_garbage(store, [keep], grace=0,
                                on_step=lambda n, *_: n == "locked" and hold(who))  # fmt: skip
            else:
                with store.writing():
                    hold(who)
            outcomes[who] = "held"
        except StoreLockedError:
            outcomes[who] = "refused"

    threads = [
        threading.Thread(target=attempt, args=("gc", gc_side, True)),
        threading.Thread(target=attempt, args=(f"rival {other}", rival, other == "gc")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    gc_side.close()
    rival.close()
    assert "refused" in outcomes.values() and len(outcomes) == 2
