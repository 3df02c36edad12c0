"""Reading an input from many workers at once, and noticing when it changes under them.

``snapshot`` runs once, on a worker, before any range is planned: the size of the input and a
tag that changes when its content does (an S3 object's ETag; a file's device, inode, size and
modification time). Every read afterwards is checked against that snapshot:

- S3: each ranged ``GetObject`` carries ``If-Match: ETag`` (the server answers 412 if the
  object was replaced), and the answer must cover exactly the range asked for, of an object of
  the snapshot's size; the body must deliver every byte.
- Files: the file opened must be the one measured (same device and inode), of the same size
  and modification time, when the task starts and again when it ends; ``pread`` must deliver
  every byte.

Anything else is ``EncryptionError`` naming the input: missing, not a regular file, changed
while being encrypted, cut short. Tasks also cross-check the hashes of the chunks they read
in common (see ``_encrypt``), which catches a change that slipped past the tags.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections import deque
from collections.abc import Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from pqselfenc.distributed._locations import Location, S3Location, client_for, s3_error
from pqselfenc.error import EncryptionError

__all__ = ["Piece", "Reader", "Snapshot", "ahead", "changed", "open_reader", "snapshot"]

T = TypeVar("T")
_END = object()

# Tries per piece of a ranged read whose body breaks off (each resumes where the last stopped).
_READ_ATTEMPTS = 3
# Pieces read ahead of the one being hashed (on a helper thread, see ``ahead``), and the file
# reader's ring of buffers: the one in use, the ones read ahead, the one being filled.
AHEAD = 2
RING = AHEAD + 2


@dataclass(frozen=True)
class Snapshot:
    """The size of an input and the tag of the content measured."""

    size: int
    tag: str


Piece = bytes | memoryview


class Reader(Protocol):
    """Reads consecutive pieces of one input."""

    def pieces(self, start: int, sizes: list[int]) -> Iterator[Piece]:
        """The pieces of ``sizes`` bytes that follow each other from offset ``start``; a
        piece may be a view into a reused buffer, valid until ``RING - 1`` more were read."""
        ...


def ahead(items: Iterator[T], depth: int = AHEAD) -> Generator[T, None, None]:
    """``items``, produced on a helper thread up to ``depth`` ahead of the consumer, so reading
    (disk, network) overlaps hashing. Closing the generator waits for the helper."""
    pool = ThreadPoolExecutor(1, thread_name_prefix="pqselfenc-read")
    pending: deque[Future[tuple[bool, T | None]]] = deque()

    def step() -> tuple[bool, T | None]:
        item = next(items, _END)
        return (False, None) if item is _END else (True, item)  # type: ignore[return-value]

    try:
        pending.extend(pool.submit(step) for _ in range(depth))
        while True:
            more, item = pending.popleft().result()
            if not more:
                return
            pending.append(pool.submit(step))
            yield item  # type: ignore[misc]
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown(wait=True)
        close = getattr(items, "close", None)
        if close is not None:
            close()  # here, once the helper is idle: a generator runs on one thread at a time


def changed(where: object, detail: str = "") -> EncryptionError:
    """The error for an input that changed while it was being encrypted."""
    more = f" ({detail})" if detail else ""
    return EncryptionError(f"source {where} changed while it was being encrypted{more}")


def snapshot(source: Location) -> Snapshot:
    """Measure ``source`` (on a worker)."""
    if isinstance(source, S3Location):
        return _s3_snapshot(source)
    try:
        info = os.stat(source.path)
    except OSError as exc:
        raise EncryptionError(f"cannot read source {source}: {exc.strerror}") from exc
    if not stat.S_ISREG(info.st_mode):
        raise EncryptionError(f"source {source} is not a regular file")
    return Snapshot(info.st_size, _file_tag(info))


def _file_tag(info: os.stat_result) -> str:
    return f"{info.st_dev}:{info.st_ino}:{info.st_size}:{info.st_mtime_ns}"


def _s3_snapshot(source: S3Location) -> Snapshot:
    client = client_for(source)
    try:
        head = client.head_object(Bucket=source.bucket, Key=source.key)
    except Exception as exc:
        raise _s3_failure(source, exc) from exc
    return Snapshot(int(head["ContentLength"]), str(head["ETag"]))


def _s3_failure(source: S3Location, exc: Exception) -> EncryptionError:
    code, status, reason = s3_error(exc)
    if status == 412 or code == "InvalidRange":
        return changed(source, f"S3 answered {code or status}")
    return EncryptionError(f"cannot read source {source}: {reason}")


@contextlib.contextmanager
def open_reader(source: Location, snap: Snapshot) -> Iterator[Reader]:
    """A reader of ``source`` that refuses any content but the snapshot's."""
    if isinstance(source, S3Location):
        yield _S3Reader(source, snap)
        return
    with _FileReader.open(source.path, snap) as reader:
        yield reader


class _FileReader:
    """``pread`` into a ring of reused buffers: a fresh 1 MiB ``bytes`` per chunk costs page
    faults on every chunk (see core/_cipher.py). A piece stays valid while fewer than
    ``RING - 1`` later pieces were read (read-ahead included)."""

    def __init__(self, path: str, fd: int, snap: Snapshot) -> None:
        self.path, self.fd, self.snap = path, fd, snap
        self.ring: list[bytearray] = []
        self.turn = 0

    @classmethod
    @contextlib.contextmanager
    def open(cls, path: str, snap: Snapshot) -> Iterator[_FileReader]:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise EncryptionError(f"cannot read source {path}: {exc.strerror}") from exc
        try:
            reader = cls(path, fd, snap)
            reader.check()
            yield reader
            reader.check()  # a write during the task shows in size or modification time
        finally:
            os.close(fd)

    def check(self) -> None:
        if _file_tag(os.fstat(self.fd)) != self.snap.tag:
            raise changed(self.path)

    def pieces(self, start: int, sizes: list[int]) -> Iterator[memoryview]:
        offset = start
        for size in sizes:
            yield self._read(offset, size)
            offset += size

    def _buffer(self, size: int) -> memoryview:
        if len(self.ring) < RING:
            self.ring.append(bytearray(size))
        self.turn = (self.turn + 1) % len(self.ring)
        buf = self.ring[self.turn]
        if len(buf) < size:
            buf = self.ring[self.turn] = bytearray(size)
        return memoryview(buf)[:size]

    def _read(self, offset: int, size: int) -> memoryview:
        piece = self._buffer(size)
        done = 0
        try:
            while done < size:
                n = os.preadv(self.fd, [piece[done:]], offset + done)
                if n == 0:
                    raise changed(self.path, f"it ends before byte {offset + size}")
                done += n
        except OSError as exc:
            raise EncryptionError(f"cannot read source {self.path}: {exc.strerror}") from exc
        return piece


class _S3Reader:
    def __init__(self, source: S3Location, snap: Snapshot) -> None:
        self.source, self.snap = source, snap
        self.client = client_for(source)

    def pieces(self, start: int, sizes: list[int]) -> Iterator[bytes]:
        """One ranged GET for the whole run, resumed where it broke if the body is cut."""
        offset, end = start, start + sum(sizes)
        body: Any = None
        try:
            for size in sizes:
                piece, body = self._piece(body, offset, end, size)
                offset += size
                yield piece
        finally:
            if body is not None:
                body.close()

    def _piece(self, body: Any, offset: int, end: int, size: int) -> tuple[bytes, Any]:
        parts: list[bytes] = []
        got = 0
        for attempt in range(_READ_ATTEMPTS):
            if body is None and size:
                body = self._get(offset + got, end)
            try:
                while got < size:
                    part = body.read(size - got)
                    if not part:
                        raise changed(self.source, "the object ended early")
                    parts.append(part)
                    got += len(part)
                return b"".join(parts), body
            except EncryptionError:
                raise
            except Exception as exc:  # a body cut short or a stalled read: resume from here
                body.close()
                body = None
                if attempt + 1 == _READ_ATTEMPTS:
                    raise _s3_failure(self.source, exc) from exc
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _get(self, start: int, end: int) -> Any:
        try:
            answer = self.client.get_object(
                Bucket=self.source.bucket,
                Key=self.source.key,
                Range=f"bytes={start}-{end - 1}",
                IfMatch=self.snap.tag,
            )
        except Exception as exc:
            raise _s3_failure(self.source, exc) from exc
        expected = f"bytes {start}-{end - 1}/{self.snap.size}"
        if answer.get("ContentRange") != expected or answer["ContentLength"] != end - start:
            answer["Body"].close()
            raise changed(self.source, "the server answered another range or size")
        return answer["Body"]
