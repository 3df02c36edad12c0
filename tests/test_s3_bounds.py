"""Every S3 read is bounded in time and size (issue 18.4): a loopback HTTP server that trickles
bytes, stays silent or sends endless bodies, and SeaweedFS for the size bound on a real server.

The hostile server (``_hostile_http.py``) speaks just enough HTTP for botocore; it listens on
127.0.0.1 only and stops with the test."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from _hostile_http import INFO, Hostile
from _s3server import S3Server, s3_server  # noqa: F401  (s3_server is a fixture)

from pqselfenc import ChunkInfo
from pqselfenc.core.stores import S3ChunkStore
from pqselfenc.core.stores.s3 import RetryPolicy
from pqselfenc.error import ChunkStoreError, IntegrityError


@pytest.fixture
def hostile(request: pytest.FixtureRequest) -> Iterator[Hostile]:
    server = Hostile(request.param)
    server.start()
    yield server
    server.stop()


def store_at(endpoint: str, **options: Any) -> S3ChunkStore:
    options.setdefault("retry", RetryPolicy(attempts=1))
    return S3ChunkStore("chunks", "p", endpoint_url=endpoint, region="us-east-1",
                        access_key_id="AKTEST", secret_access_key="not-a-secret",
                        **options)  # fmt: skip


@pytest.mark.parametrize("hostile", ["trickle-body", "trickle-headers", "silent"], indirect=True)
def test_a_server_that_trickles_or_stalls_cannot_outlast_the_deadline(hostile: Hostile) -> None:
    """One byte every 0.3 s never trips a per-read timeout; the call's deadline ends it."""
    with store_at(hostile.endpoint, timeout=1.5) as store:
        started = time.monotonic()
        with pytest.raises(ChunkStoreError, match=r"no answer within the 1.5 s deadline"):
            store.retrieve(INFO)
        elapsed = time.monotonic() - started
    assert 1.4 <= elapsed < 2.5, elapsed


@pytest.mark.parametrize("hostile", ["trickle-body"], indirect=True)
def test_the_deadline_covers_every_attempt(hostile: Hostile) -> None:
    sleeps: list[float] = []
    with store_at(hostile.endpoint, timeout=1.0, retry=RetryPolicy(attempts=5),
                  sleep=sleeps.append) as store:  # fmt: skip
        started = time.monotonic()
        with pytest.raises(ChunkStoreError, match="deadline"):
            store.retrieve(INFO)
        assert time.monotonic() - started < 2.0
    assert sleeps == []  # no time was left for another attempt


@pytest.mark.parametrize("hostile", ["huge"], indirect=True)
def test_a_body_larger_than_any_chunk_is_refused_on_its_length(hostile: Hostile) -> None:
    """A 3 GiB body ended in MemoryError; now its Content-Length refuses it unread."""
    too_large = pytest.raises(IntegrityError, match=f"is {3 << 30} bytes, more than any chunk")
    with store_at(hostile.endpoint, timeout=10) as store, too_large:
        store.retrieve(INFO)
    assert hostile.sent < 64 << 20  # what the socket buffers took before the close


@pytest.mark.parametrize("hostile", ["chunked"], indirect=True)
def test_a_body_without_length_is_read_only_up_to_the_bound(hostile: Hostile) -> None:
    with store_at(hostile.endpoint, timeout=10) as store:
        store.max_body_size = 1 << 20
        with pytest.raises(IntegrityError, match="more than 1048576 bytes, more than any"):
            store.retrieve(INFO)
    assert hostile.sent < 64 << 20


@pytest.mark.parametrize("hostile", ["silent"], indirect=True)
def test_stalled_requests_hold_at_most_max_concurrency_connections(hostile: Hostile) -> None:
    """Abandoned requests keep their slot until the server lets go: a later call waits for a
    slot only until its own deadline, so nothing piles up and nothing hangs."""
    with store_at(hostile.endpoint, timeout=0.5, max_concurrency=2) as store:
        for _ in range(4):
            started = time.monotonic()
            with pytest.raises(ChunkStoreError, match="deadline"):
                store.retrieve(INFO)
            assert time.monotonic() - started < 1.5
        stalled = [t for t in threading.enumerate() if t.name == "pqselfenc-s3-request"]
        assert len(stalled) <= 2 and all(t.daemon for t in stalled)


@pytest.mark.s3
def test_a_real_object_larger_than_the_bound_is_not_read(s3_server: S3Server) -> None:  # noqa: F811
    """On SeaweedFS: an object under a chunk's name that is larger than any chunk a writer
    stores is refused from its Content-Length, before its body is read."""
    content = b"x" * 5000
    info = ChunkInfo.for_chunk(content)  # named by its own hash: only its size is wrong
    client = s3_server.client()
    with S3ChunkStore(s3_server.bucket, "bounds", **s3_server.credentials()) as store:
        client.put_object(Bucket=store.bucket, Key=store.key_of(info), Body=content)
        assert store.retrieve(info) == content
        store.max_body_size = 4096
        with pytest.raises(IntegrityError, match="is 5000 bytes, more than any chunk"):
            store.retrieve(info)
        store.delete(info)
    client.close()
