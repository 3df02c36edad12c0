"""Deadlines and bounded bodies for the S3 store's requests, and listings that must advance.

botocore's ``read_timeout`` bounds each socket read, not a request: a server that sends one
byte every few seconds keeps a request alive for ever, and a body is read whole however large.
Here every request runs on a daemon thread of its own while the caller waits at most until the
request's deadline (``Requests.run``), so a call returns or fails in time whatever the server
does, and a GET body is read only up to a bound, checking ``Content-Length`` first
(``read_body``).

Every other body botocore reads for us (error answers, listing pages, the answers to HEAD,
PUT, COPY, DELETE) goes through ``BoundedSession``, which ``bound_answers`` puts between a
client and its HTTP session: it reads such a body itself, refused on its length or once past
``ANSWER_LIMIT`` bytes, and within the deadline of the request that asked for it. Reads that
break off (a connection reset, a body cut short, a protocol error) or stall are translated here
(``BodyCutShort``, ``RequestTimeout``; botocore's own types for the bodies botocore reads), so
no urllib3 exception reaches the store's callers.

A request past its deadline is abandoned, not killed: its thread keeps its concurrency slot
until the server answers, closes the connection or stays silent for a socket read timeout
(every read of a body waits at most what is left of the deadline). So at most ``slots``
connections are ever open, stalled ones included; callers waiting for a slot give up at their
own deadline. The threads are daemons: they never keep a process from exiting.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from pqselfenc.error import ChunkStoreError

__all__ = [
    "ANSWER_LIMIT",
    "MAX_EMPTY_PAGES",
    "BodyCutShort",
    "BodyTooLarge",
    "BoundedSession",
    "RequestTimeout",
    "Requests",
    "bound_answers",
    "listing",
    "read_body",
]

T = TypeVar("T")

_PIECE = 1 << 16  # bytes asked of the socket at a time: the deadline is checked between
# The largest body botocore may read for us. A listing page is the largest answer: 1000 keys of
# at most 1024 bytes, each URL-escaped (up to 3 bytes a byte), with size, stamp, ETag and
# storage class, is under 4 MiB; error answers and HEAD/PUT/COPY/DELETE answers are a few
# hundred bytes. Twice the largest honest page, so no honest answer comes near it.
ANSWER_LIMIT = 8 << 20
# Truncated listing pages without any key, in a row, before a listing is refused (the default of
# ``S3ChunkStore.max_empty_pages``): a server may answer one while it skips entries it does not
# list (such as deleted ones), but a listing must come back to keys.
MAX_EMPTY_PAGES = 100

_request = threading.local()  # .time_left: of the request this thread runs (Requests.run)


class RequestTimeout(Exception):
    """The request did not finish before its deadline (translated by the store)."""


class BodyTooLarge(Exception):
    """The body is larger than the bound (translated by the store)."""

    def __init__(self, size: int | None, limit: int) -> None:
        super().__init__(f"{size if size is not None else 'more than ' + str(limit)} bytes")
        self.size, self.limit = size, limit


class BodyCutShort(Exception):
    """The body broke off: it ended before its ``Content-Length``, or the connection failed
    while it was read (worth another attempt)."""


class _Outcome(Generic[T]):
    """What a request thread produced, handed over to the waiting caller."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: T | None = None
        self.error: BaseException | None = None

    def run(
        self, request: Callable[[], T], release: Callable[[], None], left: Callable[[], float]
    ) -> None:
        _request.time_left = left  # for the bodies botocore reads (BoundedSession)
        try:
            self.value = request()
        except BaseException as exc:  # handed to the caller, who raises it
            self.error = exc
        finally:
            release()
            self.done.set()


class Requests:
    """Run requests on daemon threads, at most ``slots`` at once, each awaited until its
    deadline (``time.monotonic()`` seconds)."""

    def __init__(self, slots: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._slots = threading.BoundedSemaphore(slots)
        self._clock = clock

    def left(self, deadline: float) -> float:
        """Seconds until ``deadline`` (never below 0)."""
        return max(0.0, deadline - self._clock())

    def run(self, request: Callable[[], T], deadline: float) -> T:
        """``request()``'s result or exception, or ``RequestTimeout`` at ``deadline``."""
        if not self._slots.acquire(timeout=self.left(deadline)):
            raise RequestTimeout("no connection became free before the deadline")
        outcome: _Outcome[T] = _Outcome()
        left = functools.partial(self.left, deadline)
        worker = threading.Thread(
            target=outcome.run, args=(request, self._slots.release, left), daemon=True,
            name="pqselfenc-s3-request",
        )  # fmt: skip
        try:
            worker.start()
        except RuntimeError as exc:  # no thread to be had (a resource limit): try again later
            self._slots.release()
            raise RequestTimeout(f"no thread could be started for the request ({exc})") from exc
        except BaseException:
            self._slots.release()
            raise
        if not outcome.done.wait(self.left(deadline)):
            raise RequestTimeout("the server did not answer in time")
        if outcome.error is not None:
            raise outcome.error
        return outcome.value  # type: ignore[return-value]


# -- bodies ------------------------------------------------------------------------------------


def read_body(
    body: Any, length: int | None, limit: int, time_left: Callable[[], float] | None
) -> bytes:
    """The bytes of a botocore ``StreamingBody`` of claimed ``length``: ``BodyTooLarge`` past
    ``limit`` (before reading anything when ``length`` says so), ``BodyCutShort`` below
    ``length`` or when the connection breaks, ``RequestTimeout`` when ``time_left()`` runs out
    (``None``: the socket's own read timeout only). Always closes the body (after a whole
    read, its connection has already gone back to the pool)."""
    try:
        if length is not None and length > limit:
            raise BodyTooLarge(length, limit)
        pieces: list[bytes] = []
        total = 0
        while piece := _read_piece(body, min(_PIECE, limit + 1 - total), time_left):
            total += len(piece)
            if total > limit:
                raise BodyTooLarge(length, limit)
            pieces.append(piece)
        if length is not None and total != length:
            raise BodyCutShort(f"{total} of {length} bytes")
        return b"".join(pieces)
    finally:
        body.close()


def _read_piece(body: Any, size: int, time_left: Callable[[], float] | None) -> bytes:
    raw = getattr(body, "_raw_stream", None)  # urllib3's response: read1 returns what came
    if time_left is not None:
        left = time_left()
        if left <= 0:
            raise RequestTimeout("the body did not arrive in time")
        setter = getattr(body, "set_socket_timeout", None)
        if setter is not None and not getattr(raw, "closed", False):  # a whole body: no socket
            with contextlib.suppress(AttributeError):  # no socket reached: the wait holds
                setter(left)  # each socket read waits at most what is left of the deadline
    read1 = getattr(raw, "read1", None)
    try:
        return bytes(read1(size) if callable(read1) else body.read(size))
    except Exception as exc:
        translated = _broken(exc)
        if translated is exc:
            raise
        raise translated from exc


def _broken(exc: Exception) -> Exception:
    """What a failed read of a body means: ``RequestTimeout`` for a read that timed out,
    ``BodyCutShort`` for a connection that broke (urllib3's ``ProtocolError`` and
    ``IncompleteRead``, a reset socket, botocore's streaming errors); anything else is not a
    transport failure and is returned as it is."""
    import botocore.exceptions as boto_errors
    import urllib3.exceptions as http_errors

    name = type(exc).__name__
    if isinstance(exc, TimeoutError | http_errors.TimeoutError | boto_errors.ReadTimeoutError):
        return RequestTimeout(f"the body stalled ({name})")
    broke = (http_errors.HTTPError, http.client.HTTPException, OSError,
             boto_errors.HTTPClientError, boto_errors.ResponseStreamingError)  # fmt: skip
    return BodyCutShort(f"the connection broke ({name})") if isinstance(exc, broke) else exc


class BoundedSession:
    """A botocore HTTP session (``inner``) whose answers are read here, not by botocore: at
    most ``limit`` bytes each (refused on their length first), within the deadline of the
    request this thread runs. A chunk body (a streamed 2xx answer) is left to ``read_body``."""

    def __init__(self, inner: Any, limit: int = ANSWER_LIMIT) -> None:
        self.inner, self.limit = inner, limit

    def send(self, request: Any) -> Any:
        """Send ``request`` with the inner session; read its answer's body within bounds."""
        streaming = request.stream_output
        request.stream_output = True  # the inner session then leaves the body to us
        try:
            response = self.inner.send(request)
        finally:
            request.stream_output = streaming
        if streaming and response.status_code < 300:
            return response
        response._content = self._content(request, response)  # what .content returns
        return response

    def _content(self, request: Any, response: Any) -> bytes:
        from botocore.exceptions import ConnectionClosedError, ReadTimeoutError
        from botocore.response import StreamingBody

        raw = response.raw  # urllib3 knows how long the body is (0 for HEAD, 204, 304)
        length = getattr(raw, "length_remaining", None)
        time_left = getattr(_request, "time_left", None)
        try:
            return read_body(StreamingBody(raw, None), length, self.limit, time_left)
        except BodyCutShort as exc:  # as botocore's own read reports it (retried alike)
            raise ConnectionClosedError(error=exc, request=request,
                                        endpoint_url=request.url) from exc  # fmt: skip
        except RequestTimeout as exc:
            raise ReadTimeoutError(endpoint_url=request.url, error=exc) from exc

    def close(self) -> None:
        """Close the inner session's connection pools."""
        self.inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def bound_answers(client: Any, limit: int = ANSWER_LIMIT) -> None:
    """Put a ``BoundedSession`` between the botocore ``client`` and its HTTP session (once).
    A botocore client without one (a botocore that moved it) is refused rather than used
    unbounded; an object that is no botocore client does its own I/O and is left as it is."""
    from botocore.client import BaseClient

    if not isinstance(client, BaseClient):
        return
    endpoint: Any = getattr(client, "_endpoint", None)
    inner = getattr(endpoint, "http_session", None)
    if inner is None or not callable(getattr(inner, "send", None)):
        raise ChunkStoreError(
            "cannot bound the S3 client's answers: this botocore keeps its HTTP session "
            "elsewhere (a version this pqselfenc does not know)"
        )
    if not isinstance(inner, BoundedSession):
        endpoint.http_session = BoundedSession(inner, limit)


# -- listings ----------------------------------------------------------------------------------


def listing(
    fetch: Callable[[str | None], dict[str, Any]], where: str, max_empty: int = MAX_EMPTY_PAGES
) -> Iterator[dict[str, Any]]:
    """The object entries of a ``ListObjectsV2`` walk, page by page; ``fetch(token)`` answers
    one page (each within its own call's deadline). S3 lists keys in ascending order, so a
    listing must advance: every key and common prefix of a page must come after all of the
    pages before, a truncated page must carry a new continuation token, and at most
    ``max_empty`` truncated pages in a row may hold none. Anything else is a
    ``ChunkStoreError`` naming ``where``: a server that loops would make verify and gc run
    for ever. Entries without a text ``Key`` are skipped (they name nothing)."""
    token: str | None = None
    last: str | None = None
    empty = 0
    while True:
        page = fetch(token)
        contents = [e for e in page.get("Contents") or () if _text(e, "Key") is not None]
        names = [e["Key"] for e in contents]
        names += [p for p in (_text(e, "Prefix") for e in page.get("CommonPrefixes") or ()) if p]
        if names and last is not None and min(names) <= last:
            raise _stuck(where, "a page repeats or goes back to keys already listed")
        last = max(names, default=last)
        empty = 0 if names else empty + 1
        yield from contents
        if not page.get("IsTruncated"):
            return
        token = _next_token(page, token, where)
        if empty >= max_empty:
            raise _stuck(where, f"{empty} pages in a row list no key")


def _text(entry: Any, field: str) -> str | None:
    value = entry.get(field) if isinstance(entry, dict) else None
    return value if isinstance(value, str) else None


def _next_token(page: dict[str, Any], token: str | None, where: str) -> str:
    new = page.get("NextContinuationToken")
    if not isinstance(new, str) or not new:
        raise _stuck(where, "a truncated page carries no continuation token")
    if new == token:
        raise _stuck(where, "the server repeated a continuation token")
    return new


def _stuck(where: str, why: str) -> ChunkStoreError:
    return ChunkStoreError(f"S3 list in {where}: the listing does not advance ({why})")
