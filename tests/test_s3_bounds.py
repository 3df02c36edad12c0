"""Every S3 read is bounded in time and size (issue 18.4, review 1 findings 7, 11, 12): a
loopback HTTP server that trickles bytes, stays silent, sends endless bodies (chunks, answers,
error documents), cuts bodies short or lists without end, and SeaweedFS for the size bound on a
real server.

The hostile server (``_hostile_http.py``) speaks just enough HTTP for botocore; it listens on
127.0.0.1 only and stops with the test."""

from __future__ import annotations

import datetime
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from _cli_helpers import clean_env, run_process
from _hostile_http import INFO, PREFIX, Hostile
from _s3server import S3Server, s3_server  # noqa: F401  (s3_server is a fixture)
from botocore.config import Config
from botocore.httpsession import URLLib3Session

from pqselfenc import ChunkInfo, SelfEncryptor
from pqselfenc.core.stores import S3ChunkStore
from pqselfenc.core.stores._s3io import ANSWER_LIMIT, BoundedSession
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


# -- answers botocore reads: error documents, listing pages, PUT/DELETE answers (finding 7) ------

OPERATIONS: dict[str, Callable[[S3ChunkStore], object]] = {
    "retrieve": lambda store: store.retrieve(INFO),  # an error answer to a chunk GET
    "store": lambda store: store.store(b"chunk bytes " * 10),
    "delete": lambda store: store.delete(INFO),
    "list": lambda store: list(store),
    "stored chunks": lambda store: list(store.stored_chunks()),
}
ANSWER_TOO_LARGE = f"more than the {ANSWER_LIMIT} bytes an answer may have: not read"


def sent_settles(hostile: Hostile) -> int:
    """What the server managed to send, once a request abandoned at its deadline would have
    kept reading (before the bound, botocore read on for ever)."""
    time.sleep(0.5)
    return hostile.sent


# A 200 chunk body without a length is read_body's (test_a_body_without_length_...).
ANSWER_CASES = [(mode, operation) for mode in ("error-endless", "error-huge", "chunked")
                for operation in sorted(OPERATIONS)
                if (mode, operation) != ("chunked", "retrieve")]  # fmt: skip


@pytest.mark.parametrize(("hostile", "operation"), ANSWER_CASES, indirect=["hostile"])
def test_answer_bodies_botocore_reads_are_bounded(hostile: Hostile, operation: str) -> None:
    """A 256 MiB error document once cost 2.6 GiB of memory: botocore read every body that is
    not a chunk whole. Now an answer is refused on its length, or read to the bound only."""
    with store_at(hostile.endpoint, timeout=10) as store:
        started = time.monotonic()
        with pytest.raises(ChunkStoreError, match=ANSWER_TOO_LARGE):
            OPERATIONS[operation](store)
        assert time.monotonic() - started < 5
    limit = ANSWER_LIMIT if hostile.mode != "error-huge" else 0
    assert sent_settles(hostile) < limit + (32 << 20)  # what socket buffers took, at most


def test_the_answer_bound_sits_between_every_client_and_its_http_session() -> None:
    """The mechanism the answer bound relies on (pinned: a botocore that moved the session or
    stopped honouring ``stream_output`` fails this test or the hostile ones above)."""
    with store_at("http://127.0.0.1:9") as store:
        session = store._client._endpoint.http_session
        assert isinstance(session, BoundedSession) and session.limit == ANSWER_LIMIT
        assert isinstance(session.inner, URLLib3Session)
    own = boto3.session.Session(aws_access_key_id="AKTEST", aws_secret_access_key="x").client(
        "s3", endpoint_url="http://127.0.0.1:9", region_name="us-east-1",
        config=Config(retries={"total_max_attempts": 1}),
    )  # fmt: skip
    with S3ChunkStore("chunks", "p", client=own), S3ChunkStore("chunks", "q", client=own):
        assert isinstance(own._endpoint.http_session.inner, URLLib3Session)  # wrapped once
    del own._endpoint.http_session
    with pytest.raises(ChunkStoreError, match="keeps its HTTP session elsewhere"):
        S3ChunkStore("chunks", "p", client=own)


# -- bodies cut short are translated and retried (finding 12) ----------------------------------


@pytest.mark.parametrize("hostile", ["cut"], indirect=True)
def test_a_body_cut_short_is_retried_and_reported(hostile: Hostile) -> None:
    """urllib3's ProtocolError (IncompleteRead) escaped the chunk read: exit 70, no retry."""
    sleeps: list[float] = []
    with store_at(hostile.endpoint, timeout=20, retry=RetryPolicy(attempts=3),
                  sleep=sleeps.append) as store:  # fmt: skip
        with pytest.raises(ChunkStoreError, match=r"body was cut short.*after 3 attempts"):
            store.retrieve(INFO)
        with pytest.raises(ChunkStoreError, match=r"connection failed.*after 3 attempts"):
            list(store)  # a listing page cut short: botocore's own error, retried alike
    assert len(sleeps) == 4 and len(hostile.conns) == 6


@pytest.mark.parametrize("hostile", ["listed-cut"], indirect=True)
def test_decrypt_and_verify_of_bodies_cut_short_end_in_one_line(
    hostile: Hostile, tmp_path: Path
) -> None:
    data_map, _ = SelfEncryptor(os.urandom(3000)).encrypt()
    (tmp_path / "in.map").write_bytes(data_map.to_bytes())
    (tmp_path / "in.map").chmod(0o600)
    env = clean_env(tmp_path, AWS_ACCESS_KEY_ID="AKTEST", AWS_SECRET_ACCESS_KEY="not-a-secret",
                    AWS_DEFAULT_REGION="us-east-1")  # fmt: skip
    store = f"s3://chunks/p?endpoint={hostile.endpoint}&timeout=20"
    for argv in (["store", "verify", "--store", store],
                 ["decrypt", "in.map", "--store", store, "--out", "out.bin"]):  # fmt: skip
        done = run_process(*argv, env=env, cwd=tmp_path)
        err = done.stderr.decode()
        assert done.returncode == 1, err
        assert "Traceback" not in err and "internal error" not in err
        assert err.startswith("pqselfenc: error: ") and len(err.splitlines()) <= 2  # + a hint
        assert "body was cut short" in done.stdout.decode() + err  # verify lists it on stdout
    assert not (tmp_path / "out.bin").exists()


# -- listings must advance (finding 11) ----------------------------------------------------------


@pytest.mark.parametrize("hostile", ["list-fresh"], indirect=True)
def test_a_listing_of_fresh_tokens_without_keys_ends(hostile: Hostile) -> None:
    """A server answering truncated pages without keys and a new token each time kept
    ``store verify`` listing for ever."""
    with store_at(hostile.endpoint, timeout=10) as store:
        started = time.monotonic()
        with pytest.raises(ChunkStoreError, match=r"does not advance \(100 pages in a row"):
            list(store)
        assert time.monotonic() - started < 30
    assert len(hostile.conns) <= 100


@pytest.mark.parametrize("hostile", ["list-stuck"], indirect=True)
def test_a_listing_that_repeats_its_keys_ends(hostile: Hostile) -> None:
    refused = pytest.raises(ChunkStoreError, match="repeats or goes back to keys already listed")
    with store_at(hostile.endpoint, timeout=10) as store, refused:
        list(store.stored_chunks())
    assert len(hostile.conns) == 2


class _Pages:
    """A stand-in client (``client=`` takes any object) answering the given listing pages in
    turn, the last one for ever."""

    def __init__(self, *pages: dict[str, Any]) -> None:
        self.pages, self.asked = list(pages), 0

    def list_objects_v2(self, **request: Any) -> dict[str, Any]:
        self.asked += 1
        return self.pages[min(self.asked, len(self.pages)) - 1]

    def close(self) -> None:
        return None


def _page(*keys: str, token: str | None = None, prefixes: tuple[str, ...] = ()) -> dict[str, Any]:
    stamp = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    contents = [{"Key": PREFIX + k, "Size": 3, "LastModified": stamp} for k in keys]
    page: dict[str, Any] = {"Contents": contents, "IsTruncated": token is not None}
    page["CommonPrefixes"] = [{"Prefix": PREFIX + p} for p in prefixes]
    if token:
        page["NextContinuationToken"] = token
    return page


def _listed(client: _Pages) -> list[str]:
    with S3ChunkStore("chunks", "p", client=client) as store:
        return [info.hex_name for info in store]


def test_listing_rules_refuse_what_does_not_advance() -> None:
    a, b = ("a" * 64, "b" * 64)
    pages = _Pages(_page(a, token="t1"), _page(token="t2"), _page(b, prefixes=("d/",)))
    assert _listed(pages) == [a, b] and pages.asked == 3
    refusals = [
        ("repeats or goes back", _Pages(_page(b, token="t1"), _page(a))),
        ("repeats or goes back", _Pages(_page(a, prefixes=("c/",), token="t1"), _page(b))),
        ("repeats or goes back", _Pages(_page(a, token="t1"), _page(a, b))),
        ("carries no continuation token", _Pages(_page(a, token=""), _page(b))),
        ("repeated a continuation token", _Pages(_page(a, token="t"), _page(b, token="t"))),
    ]
    for why, client in refusals:
        with pytest.raises(ChunkStoreError, match=f"does not advance.*{why}"):
            _listed(client)


def test_empty_pages_in_a_row_are_bounded_by_max_empty_pages() -> None:
    a, b = ("a" * 64, "b" * 64)

    class Empty(_Pages):
        def list_objects_v2(self, **request: Any) -> dict[str, Any]:
            self.asked += 1
            keys = {1: (a,), 4: (b,)}.get(self.asked, ())
            return _page(*keys, token=str(self.asked))

    client = Empty()
    with S3ChunkStore("chunks", "p", client=client) as store:
        store.max_empty_pages = 3
        with pytest.raises(ChunkStoreError, match="3 pages in a row list no key"):
            list(store)
    assert client.asked == 7  # a, 2 empty pages (fine), b, 3 empty pages (refused)


@pytest.mark.parametrize("hostile", ["list-undated", "list-misdated"], indirect=True)
def test_a_listing_entry_without_a_stamp_or_size_is_a_clear_error(hostile: Hostile) -> None:
    """gc and stats read each chunk's LastModified and Size: a server that leaves them out (or
    sends no time) made KeyError or ValueError, exit 70."""
    with store_at(hostile.endpoint, timeout=10) as store:
        if hostile.mode == "list-undated":
            assert [i.name for i in store] == [INFO.name]  # the listing itself needs only keys
            with pytest.raises(ChunkStoreError, match=r"without a valid (Size|LastModified)"):
                list(store.stored_chunks())
        else:  # botocore's own ValueError, translated at the store's boundary
            with pytest.raises(ChunkStoreError, match=r"S3 client failed \(ValueError\)"):
                list(store)
