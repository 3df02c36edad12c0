"""Deadlines and bounded bodies for the S3 store's requests.

botocore's ``read_timeout`` bounds each socket read, not a request: a server that sends one
byte every few seconds keeps a request alive for ever, and a body is read whole however large.
Here every request runs on a daemon thread of its own while the caller waits at most until the
request's deadline (``Requests.run``), so a call returns or fails in time whatever the server
does, and a GET body is read only up to a bound, checking ``Content-Length`` first
(``read_body``).

A request past its deadline is abandoned, not killed: its thread keeps its concurrency slot
until the server answers, closes the connection or stays silent for a socket read timeout
(every read of a body waits at most what is left of the deadline). So at most ``slots``
connections are ever open, stalled ones included; callers waiting for a slot give up at their
own deadline. The threads are daemons: they never keep a process from exiting.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

__all__ = ["BodyCutShort", "BodyTooLarge", "RequestTimeout", "Requests", "read_body"]

T = TypeVar("T")

_PIECE = 1 << 16  # bytes asked of the socket at a time: the deadline is checked between


class RequestTimeout(Exception):
    """The request did not finish before its deadline (translated by the store)."""


class BodyTooLarge(Exception):
    """The body is larger than the bound (translated by the store)."""

    def __init__(self, size: int | None, limit: int) -> None:
        super().__init__(f"{size if size is not None else 'more than ' + str(limit)} bytes")
        self.size, self.limit = size, limit


class BodyCutShort(Exception):
    """The body ended before its ``Content-Length`` (worth another attempt)."""


class _Outcome(Generic[T]):
    """What a request thread produced, handed over to the waiting caller."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: T | None = None
        self.error: BaseException | None = None

    def run(self, request: Callable[[], T], release: Callable[[], None]) -> None:
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
        worker = threading.Thread(
            target=outcome.run, args=(request, self._slots.release), daemon=True,
            name="pqselfenc-s3-request",
        )  # fmt: skip
        try:
            worker.start()
        except BaseException:
            self._slots.release()
            raise
        if not outcome.done.wait(self.left(deadline)):
            raise RequestTimeout("the server did not answer in time")
        if outcome.error is not None:
            raise outcome.error
        return outcome.value  # type: ignore[return-value]


def read_body(body: Any, length: int | None, limit: int, time_left: Callable[[], float]) -> bytes:
    """The bytes of a botocore ``StreamingBody`` of claimed ``length``: ``BodyTooLarge`` past
    ``limit`` (before reading anything when ``length`` says so), ``BodyCutShort`` below
    ``length``, ``RequestTimeout`` when ``time_left()`` runs out. Always closes the body."""
    try:
        if length is not None and length > limit:
            raise BodyTooLarge(length, limit)
        pieces: list[bytes] = []
        total = 0
        while piece := _read_piece(body, min(_PIECE, limit + 1 - total), time_left()):
            total += len(piece)
            if total > limit:
                raise BodyTooLarge(length, limit)
            pieces.append(piece)
        if length is not None and total != length:
            raise BodyCutShort(f"{total} of {length} bytes")
        return b"".join(pieces)
    finally:
        body.close()


def _read_piece(body: Any, size: int, left: float) -> bytes:
    if left <= 0:
        raise RequestTimeout("the body did not arrive in time")
    setter = getattr(body, "set_socket_timeout", None)
    if setter is not None:  # each socket read waits at most what is left of the deadline
        with contextlib.suppress(AttributeError):  # no socket reached: the caller's wait holds
            setter(left)
    raw = getattr(body, "_raw_stream", None)  # urllib3's response: read1 returns what came
    read1 = getattr(raw, "read1", None)
    return bytes(read1(size) if callable(read1) else body.read(size))
