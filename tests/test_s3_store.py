"""S3ChunkStore against a real SeaweedFS server: what the conformance suite cannot see.

Conditional put (412 instead of an overwrite), the SHA-256 upload checksum the server enforces,
bounded concurrency, retries with injected sleep through a loopback proxy that drops, throttles
or goes away, clear permanent errors (auth, missing bucket), URLs, and full round trips.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import random
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _s3server import S3Server, s3_server  # noqa: F401  (s3_server is a fixture)

from pqselfenc import ChunkInfo, EncryptionConfig, SelfEncryptor
from pqselfenc.core.stores import S3ChunkStore
from pqselfenc.core.stores.s3 import RetryPolicy
from pqselfenc.error import ChunkNotFound, ChunkStoreError, IntegrityError
from pqselfenc.streaming import StreamDecryptor, StreamEncryptor, decrypt_file, encrypt_file

pytestmark = pytest.mark.s3


class Sleeps(list[float]):
    """The injected sleep: records the delays, never waits."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def prefix() -> str:
    return f"s3tests/{uuid.uuid4().hex}"


@pytest.fixture
def raw(s3_server: S3Server) -> Iterator[Any]:  # noqa: F811
    client = s3_server.client()
    yield client
    client.close()


def make_store(server: S3Server, **options: Any) -> S3ChunkStore:
    options.setdefault("sleep", Sleeps())
    options.setdefault("rng", random.Random(7))
    if "client" not in options:
        options.update(server.credentials())
    return S3ChunkStore(server.bucket, prefix(), **options)


def record_calls(client: Any) -> list[tuple[str, int]]:
    """(operation, HTTP status) of every response the client receives."""
    seen: list[tuple[str, int]] = []

    def on_response(response: Any, operation: Any, **_: Any) -> None:
        if response is not None:
            seen.append((operation.name, response[0].status_code))

    client.meta.events.register("needs-retry.s3", on_response)
    return seen


def flip_body(request: Any) -> None:
    """Change one byte of a request body after the checksum header was computed."""
    body = request.data.getvalue() if hasattr(request.data, "getvalue") else request.data
    request.data = bytes([body[0] ^ 1]) + body[1:]


# -- conditional put -------------------------------------------------------------------------


def test_conditional_put_answers_412_and_never_overwrites(s3_server: S3Server, raw: Any) -> None:  # noqa: F811
    store = make_store(s3_server, client=raw)
    calls = record_calls(raw)
    chunk = os.urandom(5000)
    info = store.store(chunk)
    assert store.store(chunk) == info
    # 412: not uploaded again; the object is checked (its SHA-256 is the name) and, outside a
    # writer session, given a new stamp for gc by a copy onto itself (tests/test_gc.py)
    assert calls == [("PutObject", 200), ("PutObject", 412), ("HeadObject", 200),
                     ("CopyObject", 200)]  # fmt: skip
    # A damaged object under the name is never trusted: the next store of the chunk checks
    # what is there, finds other bytes and uploads the chunk over it.
    raw.put_object(Bucket=store.bucket, Key=store.key_of(info), Body=b"damaged")
    with pytest.raises(IntegrityError):
        store.retrieve(info)
    store.store(chunk)
    assert raw.get_object(Bucket=store.bucket, Key=store.key_of(info))["Body"].read() == chunk
    assert store.retrieve(info) == chunk


def test_head_then_put_fallback_for_servers_without_conditional_writes(
    s3_server: S3Server,  # noqa: F811
    raw: Any,
) -> None:
    store = make_store(s3_server, client=raw, conditional_put=False)
    calls = record_calls(raw)
    chunk = os.urandom(3000)
    info = store.store(chunk)
    store.store(chunk)
    assert calls == [("HeadObject", 404), ("PutObject", 200), ("HeadObject", 200),
                     ("CopyObject", 200)]  # fmt: skip
    assert store.retrieve(info) == chunk


# -- integrity on upload and download --------------------------------------------------------


def test_upload_carries_the_name_as_sha256_checksum(s3_server: S3Server, raw: Any) -> None:  # noqa: F811
    store = make_store(s3_server, client=raw)
    sent: list[str] = []
    raw.meta.events.register(
        "before-send.s3.PutObject",
        lambda request, **_: sent.append(request.headers["x-amz-checksum-sha256"].decode()),
    )
    info = store.store(b"checked on arrival")
    expected = base64.b64encode(info.name).decode()
    assert sent == [expected]
    head = raw.head_object(Bucket=store.bucket, Key=store.key_of(info), ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == expected


def test_body_damaged_in_transit_is_refused_and_retried(s3_server: S3Server, raw: Any) -> None:  # noqa: F811
    sleeps = Sleeps()
    store = make_store(s3_server, client=raw, sleep=sleeps)
    calls = record_calls(raw)
    damaged = iter([True])  # only the first attempt
    raw.meta.events.register(
        "before-sign.s3.PutObject",
        lambda request, **_: flip_body(request) if next(damaged, False) else None,
    )
    chunk = os.urandom(10_000)
    info = store.store(chunk)
    assert calls == [("PutObject", 400), ("PutObject", 200)]
    assert len(sleeps) == 1
    assert store.retrieve(info) == chunk


def test_body_always_damaged_fails_after_bounded_attempts(s3_server: S3Server, raw: Any) -> None:  # noqa: F811
    sleeps = Sleeps()
    store = make_store(s3_server, client=raw, sleep=sleeps, retry=RetryPolicy(attempts=3))
    raw.meta.events.register("before-sign.s3.PutObject", lambda request, **_: flip_body(request))
    chunk = os.urandom(10_000)
    with pytest.raises(
        ChunkStoreError, match=r"arrived corrupted.*BadDigest.*3 attempts"
    ) as caught:
        store.store(chunk)
    assert type(caught.value.__cause__).__name__ == "ClientError"
    assert len(sleeps) == 2
    assert not store.has(ChunkInfo.for_chunk(chunk))  # nothing half-written under the name


# -- concurrency -----------------------------------------------------------------------------


def test_at_most_max_concurrency_requests_in_flight(s3_server: S3Server, raw: Any) -> None:  # noqa: F811
    store = make_store(s3_server, client=raw, max_concurrency=2)
    lock, state = threading.Lock(), {"now": 0, "max": 0, "started": 0}
    both = threading.Barrier(2, timeout=20)  # proves two really run at once

    def before(**_: Any) -> None:
        with lock:
            state["now"] += 1
            state["max"] = max(state["max"], state["now"])
            state["started"] += 1
            first_two = state["started"] <= 2
        if first_two:
            both.wait()

    def after(**_: Any) -> None:
        with lock:
            state["now"] -= 1

    raw.meta.events.register("before-call.s3.PutObject", before)
    raw.meta.events.register("after-call.s3.PutObject", after)
    chunks = [os.urandom(2000) for _ in range(30)]
    threads = [
        threading.Thread(target=lambda part=chunks[i::10]: [store.store(c) for c in part])
        for i in range(10)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert state["max"] == 2
    assert {i.name for i in store} == {ChunkInfo.for_chunk(c).name for c in chunks}


# -- retries through a loopback proxy ---------------------------------------------------------


class Proxy:
    """A TCP proxy on 127.0.0.1 in front of the real server.

    ``drop`` next connections are closed at once; ``throttle`` next connections get a real HTTP
    ``503 SlowDown``; ``stop()`` takes the port away as a stopped server does.
    """

    SLOW_DOWN = (
        b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\n"
        b"Content-Length: 70\r\nConnection: close\r\n\r\n"
        b"<Error><Code>SlowDown</Code><Message>Please slow down</Message></Error>"
    )

    def __init__(self, upstream: str) -> None:
        self.upstream = ("127.0.0.1", int(upstream.rsplit(":", 1)[1]))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.drop = 0
        self.throttle = 0
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        self.threads = [threading.Thread(target=self._accept)]
        self.threads[0].start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.sockets.append(conn)
                action = "drop" if self.drop else "throttle" if self.throttle else "forward"
                self.drop -= action == "drop"
                self.throttle -= action == "throttle"
                thread = threading.Thread(target=self._serve, args=(conn, action))
                self.threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket, action: str) -> None:
        try:
            if action == "throttle":
                head = b""
                while b"\r\n\r\n" not in head:
                    head += conn.recv(65536) or b"\r\n\r\n"
                conn.sendall(self.SLOW_DOWN)
            elif action == "forward":
                self._forward(conn)
        except OSError:
            pass
        finally:
            conn.close()

    def _forward(self, conn: socket.socket) -> None:
        with socket.create_connection(self.upstream) as up:
            with self.lock:
                self.sockets.append(up)
            back = threading.Thread(target=self._pump, args=(up, conn))
            back.start()
            self._pump(conn, up)
            back.join()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self.listener.close()
        with self.lock:
            for s in self.sockets:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
        for t in list(self.threads):
            t.join(timeout=10)
        for s in self.sockets:
            s.close()


@pytest.fixture
def proxy(s3_server: S3Server) -> Iterator[Proxy]:  # noqa: F811
    p = Proxy(s3_server.endpoint)
    yield p
    p.stop()


def proxied_store(server: S3Server, proxy: Proxy, sleeps: Sleeps, **options: Any) -> S3ChunkStore:
    options = {**server.credentials(), "endpoint_url": proxy.endpoint, **options}
    return S3ChunkStore(server.bucket, prefix(), sleep=sleeps, rng=random.Random(1), **options)


def test_dropped_connections_are_retried(s3_server: S3Server, proxy: Proxy) -> None:  # noqa: F811
    sleeps = Sleeps()
    with proxied_store(s3_server, proxy, sleeps) as store:
        proxy.drop = 2
        info = store.store(b"after two dropped connections")
        assert len(sleeps) == 2
        assert store.retrieve(info) == b"after two dropped connections"


def test_throttling_is_retried_with_growing_backoff(
    s3_server: S3Server,  # noqa: F811
    proxy: Proxy,
    raw: Any,
) -> None:
    sleeps = Sleeps()
    policy = RetryPolicy(attempts=5, base_delay=0.5, max_delay=1.5)
    proxy.throttle = 3  # the first three connections (each answer closes its connection)
    with proxied_store(s3_server, proxy, sleeps, retry=policy) as store:
        info = ChunkInfo.for_chunk(b"throttled read")
        raw.put_object(Bucket=store.bucket, Key=store.key_of(info), Body=b"throttled read")
        assert store.retrieve(info) == b"throttled read"
    assert len(sleeps) == 3
    for retry, delay in enumerate(sleeps):
        cap = min(1.5, 0.5 * 2**retry)
        assert cap / 2 <= delay <= cap


def test_stopped_server_ends_in_a_clear_error_after_bounded_retries(
    s3_server: S3Server,  # noqa: F811
    proxy: Proxy,
) -> None:
    sleeps = Sleeps()
    with proxied_store(s3_server, proxy, sleeps, retry=RetryPolicy(attempts=4)) as store:
        info = store.store(b"before the server stopped")
        proxy.stop()
        for call in (lambda: store.retrieve(info), lambda: store.store(b"x"), store.check):
            sleeps.clear()
            with pytest.raises(ChunkStoreError, match=r"connection failed.*4 attempts") as caught:
                call()
            assert type(caught.value.__cause__).__module__ == "botocore.exceptions"
            assert len(sleeps) == 3
        with pytest.raises(ChunkStoreError, match="connection failed"):
            list(store)


# -- permanent failures ----------------------------------------------------------------------


@pytest.mark.parametrize("wrong", ["secret", "key"])
def test_bad_credentials_fail_at_once_and_say_so(s3_server: S3Server, wrong: str) -> None:  # noqa: F811
    sleeps = Sleeps()
    creds = s3_server.credentials()
    bad_secret = "not-the-secret-" + uuid.uuid4().hex
    if wrong == "secret":
        creds["secret_access_key"] = bad_secret
    else:
        creds["access_key_id"] = "AKUNKNOWN0000000"
    info = ChunkInfo.for_chunk(b"y")
    with S3ChunkStore(s3_server.bucket, prefix(), sleep=sleeps, **creds) as store:
        calls = [lambda: store.store(b"y"), lambda: store.retrieve(info), lambda: store.has(info)]
        calls += [lambda: store.delete(info), lambda: list(store), store.check]
        for call in calls:
            with pytest.raises(ChunkStoreError, match="access denied") as caught:
                call()
            message = str(caught.value)
            assert "\n" not in message and bad_secret not in message
            assert s3_server.secret_key not in message and info.hex_name not in message
        assert bad_secret not in repr(store)
    assert sleeps == []


def test_missing_bucket_fails_at_once_and_says_so(s3_server: S3Server) -> None:  # noqa: F811
    sleeps = Sleeps()
    info = ChunkInfo.for_chunk(b"z")
    with S3ChunkStore("no-such-bucket", "p", sleep=sleeps, **s3_server.credentials()) as store:
        calls = [lambda: store.store(b"z"), lambda: store.retrieve(info), lambda: store.has(info)]
        calls += [lambda: store.delete(info), lambda: list(store), store.check]
        for call in calls:
            with pytest.raises(ChunkStoreError, match="'no-such-bucket' does not exist"):
                call()
    assert sleeps == []


def test_missing_chunk_is_not_retried(s3_server: S3Server) -> None:  # noqa: F811
    sleeps = Sleeps()
    with make_store(s3_server, sleep=sleeps) as store:
        with pytest.raises(ChunkNotFound):
            store.retrieve(ChunkInfo.for_chunk(b"never"))
        assert not store.has(ChunkInfo.for_chunk(b"never"))
    assert sleeps == []


# -- listing ---------------------------------------------------------------------------------


def test_listing_pages_and_ignores_foreign_objects(s3_server: S3Server, raw: Any) -> None:  # noqa: F811
    with make_store(s3_server) as store:
        store.list_page_size = 3
        infos = {store.store(os.urandom(100)) for _ in range(8)}
        some = next(iter(infos)).hex_name
        for key in ("README.txt", f"sub/{some}", some.upper(), some[:-1], f"{some}.tmp"):
            raw.put_object(Bucket=store.bucket, Key=store.prefix + key, Body=b"foreign")
        raw.put_object(Bucket=store.bucket, Key=store.prefix.rstrip("/") + "x/" + some, Body=b"")
        assert sorted(i.name for i in store) == sorted(i.name for i in infos)


# -- construction and URLs -------------------------------------------------------------------


def test_from_url_reads_endpoint_and_credentials_from_the_environment(
    s3_server: S3Server,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.setenv("PQSELFENC_S3_ENDPOINT", s3_server.endpoint)
    where = prefix()
    with S3ChunkStore.from_url(f"s3://{s3_server.bucket}/{where}/") as store:
        assert (store.bucket, store.prefix) == (s3_server.bucket, where + "/")
        info = store.store(b"via the environment")
    monkeypatch.setenv("PQSELFENC_S3_ENDPOINT", "http://127.0.0.1:9")  # the query wins
    url = f"s3://{s3_server.bucket}/{where}?endpoint={s3_server.endpoint}&region=us-east-1"
    with S3ChunkStore.from_url(url, max_concurrency=4) as store:
        assert store.retrieve(info) == b"via the environment"


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("s3://AKIA:hunter2@bucket/x", "credentials do not belong"),
        ("http://bucket/x", "s3://BUCKET/PREFIX"),
        ("s3:///x", "s3://BUCKET/PREFIX"),
        ("s3://bucket/x?colour=red", "unknown S3 store URL option 'colour'"),
        ("s3://bucket/x?region=a&region=b", "appears twice"),
        ("s3://bucket/x?region", "has no value"),
    ],
)
def test_bad_urls_are_refused(url: str, match: str) -> None:
    with pytest.raises(ValueError, match=match) as caught:
        S3ChunkStore.from_url(url)
    assert "hunter2" not in str(caught.value)


def test_misuse_is_refused_at_construction(raw: Any) -> None:
    with pytest.raises(ValueError, match="bucket"):
        S3ChunkStore("a/b")
    with pytest.raises(TypeError):
        S3ChunkStore(b"bucket")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_concurrency"):
        S3ChunkStore("bucket", max_concurrency=0)
    with pytest.raises(ValueError, match="both"):
        S3ChunkStore("bucket", access_key_id="AK")
    with pytest.raises(ValueError, match="client="):
        S3ChunkStore("bucket", client=raw, endpoint_url="http://127.0.0.1:1")
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(base_delay=2, max_delay=1)


def test_repr_shows_where_not_who(s3_server: S3Server) -> None:  # noqa: F811
    with S3ChunkStore("chunks", "/a/b/", **s3_server.credentials()) as store:
        assert store.prefix == "a/b/"
        host = s3_server.endpoint.removeprefix("http://")
        assert repr(store) == f"S3ChunkStore('s3://chunks/a/b/', endpoint='{host}')"
        assert s3_server.secret_key not in repr(store)


def test_backoff_is_exponential_with_jitter_and_capped() -> None:
    policy = RetryPolicy(attempts=10, base_delay=0.1, max_delay=1.0)
    rng = random.Random(3)
    delays = [policy.delay(n, rng) for n in range(8)]
    for n, delay in enumerate(delays):
        cap = min(1.0, 0.1 * 2**n)
        assert cap / 2 <= delay <= cap
    assert len(set(delays)) == len(delays)  # jittered


def test_works_without_boto3_until_a_store_is_made(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "sys.modules['boto3'] = None\n"
        "sys.modules['botocore'] = None\n"
        "import pqselfenc, pqselfenc.core.stores as stores\n"
        "from pqselfenc.error import ChunkStoreError\n"
        "try:\n"
        "    stores.S3ChunkStore('bucket')\n"
        "except ChunkStoreError as exc:\n"
        "    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "S3 chunk stores need boto3: pip install 'pqselfenc[s3]'"


# -- full round trips ------------------------------------------------------------------------


def test_encrypt_into_s3_and_decrypt_back_a_multi_chunk_file(s3_server: S3Server) -> None:  # noqa: F811
    data = os.urandom(6 * 1024 * 1024 + 12345)
    with make_store(s3_server) as store:
        data_map, chunks = SelfEncryptor(data, chunk_store=store).encrypt()
        assert chunks == [] and len(data_map.chunks) == 7
        assert {i.name for i in store} == {i.name for i in data_map.chunks}
        with make_store(s3_server) as elsewhere:  # a fresh reader, as on another machine
            reader = S3ChunkStore(store.bucket, store.prefix, **s3_server.credentials())
            with reader:
                assert SelfEncryptor.from_data_map(data_map, reader).decrypt() == data
                part = SelfEncryptor.from_data_map(data_map, reader).read_range(3_000_000, 10)
                assert part == data[3_000_000:3_000_010]
            with pytest.raises(ChunkNotFound):
                SelfEncryptor.from_data_map(data_map, elsewhere).decrypt()


def test_streaming_round_trip_through_s3(s3_server: S3Server, tmp_path: Path) -> None:  # noqa: F811
    config = EncryptionConfig(chunk_size=256 * 1024)
    data = os.urandom(3 * 1024 * 1024 + 777)

    async def stream() -> bytes:
        with make_store(s3_server) as store:
            encryptor = StreamEncryptor(config, chunk_store=store)
            for start in range(0, len(data), 100_000):
                await encryptor.write(data[start : start + 100_000])
            data_map = await encryptor.finalize()
            assert data_map == SelfEncryptor(data, config).encrypt()[0]  # identical output
            decryptor = StreamDecryptor.from_data_map(data_map, store, config)
            assert decryptor.read_range(1_000_000, 5) == data[1_000_000:1_000_005]
            return b"".join([piece async for piece in decryptor])

    assert asyncio.run(stream()) == data

    source, back = tmp_path / "in.bin", tmp_path / "out.bin"
    source.write_bytes(data)
    with make_store(s3_server) as store:
        data_map = encrypt_file(source, store, config)
        decrypt_file(data_map, store, back, config)
    assert back.read_bytes() == data
