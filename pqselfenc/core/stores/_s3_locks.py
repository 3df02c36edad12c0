"""The S3 store's ``LockSpace``: lock objects under ``PREFIX/locks/``, session records under
``PREFIX/locks/ended/``, stamps from ``LastModified`` (the server's clock; whole seconds); and
what a shared store does with chunk stamps: checked deduplication, listing, careful deletes.

A lock is created with one ``PutObject`` under ``If-None-Match: *`` (a name clash fails instead
of overwriting); its start is its ``LastModified`` in the listing that follows. Refreshing
uploads the body again, with that start in it, under ``If-Match: ETAG``, so a lock that was
removed is never recreated (the server answers 412 and the holder learns it lost its lock).
With ``conditional_put=False`` (servers without conditional writes) creation is a plain put
(names are 64 random bits) and a refresh is ``HeadObject`` then put, which could bring back a
lock removed in between: gc then sees it and stops. Every request goes through the store's
retry loop; the chunk listing uses ``Delimiter="/"``, so ``locks/`` never looks like chunks, and
every listing is the store's, which must advance. A field the server leaves out of an answer
(a stamp, a size, a ``Date``) is a ``ChunkStoreError``, never a crash.

Deduplication (``reuse``, when a name is taken): ``HeadObject`` with ``ChecksumMode=ENABLED``;
the object is kept if its size is the chunk's and its full-object SHA-256 is the name (where
the server keeps no such checksum, a ``GetObject`` of at most size + 1 bytes compared byte for
byte), else it is overwritten with an unconditional put. A kept object stamped before the
writer's session began is copied onto itself (``CopyObject``, ``MetadataDirective=REPLACE``):
a new ``LastModified`` for 5.5 ms on SeaweedFS 4.48 whatever the size, where uploading 1 MiB
again takes 19 ms.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, TypeVar

from pqselfenc.core._lockspace import (
    LOCK_BODY_LIMIT,
    EndedSession,
    LockEntry,
    LockSpace,
    StoredChunk,
    parse_ended,
    parse_lock_name,
)
from pqselfenc.core._store import ChunkInfo
from pqselfenc.core.stores._s3io import BodyTooLarge, read_body
from pqselfenc.error import ChunkStoreError, StoreLockedError

if TYPE_CHECKING:
    from pqselfenc.core.stores.s3 import S3ChunkStore

__all__ = ["S3Hooks", "S3LockSpace"]

T = TypeVar("T")
LOCKS, ENDED = "locks/", "ended/"


@dataclass(frozen=True)
class S3Hooks:
    """What the store lends its lock space: the boto3 client; ``call(action, info, request)``,
    its retry-and-translate loop; ``expected(exc)``, which names the errors that are answers
    (``missing``: 404, ``precondition``: 412); ``checksum(info)``, the upload checksum of a
    chunk; ``info_of(key)``, a chunk's info from its key; ``put(info, body)``, an unconditional
    upload of a chunk; ``time_left(deadline)``, the seconds a request has left;
    ``listed(prefix)``, the objects directly under a prefix (the store's listing, which must
    advance). Every request the lock space hands to ``call`` takes the call's deadline as its
    last argument, as the store's own requests do, and reads bodies within it
    (``_s3io.read_body``)."""

    client: Any
    call: Callable[[str, ChunkInfo | None, Callable[[float], Any]], Any]
    expected: Callable[[Exception], str | None]
    checksum: Callable[[ChunkInfo], str]
    info_of: Callable[[str], ChunkInfo | None]
    put: Callable[[ChunkInfo, bytes, float], None]
    time_left: Callable[[float], float]
    listed: Callable[[str], Iterator[dict[str, Any]]]


def _malformed(field: str) -> ChunkStoreError:
    return ChunkStoreError(f"the S3 server sent an answer without a valid {field}")


def _seconds(moment: object, field: str) -> float:
    """A server time in seconds (a time without a zone is UTC, as HTTP dates are)."""
    if not isinstance(moment, datetime):
        raise _malformed(field)
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _stamp(answer: dict[str, Any]) -> float:
    """An object's ``LastModified`` (a listing entry or a ``HeadObject`` answer)."""
    return _seconds(answer.get("LastModified"), "LastModified")


def _size(answer: dict[str, Any], field: str) -> int:
    value = answer.get(field)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _malformed(field)
    return value


class S3LockSpace(LockSpace):
    """Locks, session records and chunk stamps of one ``S3ChunkStore`` (module docstring)."""

    clock_slack = 2.0  # whole-second stamps, possibly from different servers of one service

    def __init__(self, store: S3ChunkStore, hooks: S3Hooks) -> None:
        self.store, self.hooks, self._client = store, hooks, hooks.client
        self._expected = hooks.expected
        # our locks: name -> (ETag, body for a start, the start once known)
        self._held: dict[str, tuple[str, Callable[[float | None], bytes], float | None]] = {}
        self._mutex = threading.Lock()

    def __repr__(self) -> str:
        return f"S3LockSpace('s3://{self.store.bucket}/{self.base}')"

    @property
    def base(self) -> str:
        """The key prefix of the locks."""
        return self.store.prefix + LOCKS

    @property
    def parallelism(self) -> int:  # type: ignore[override]
        """As many deletes at once as the store allows requests."""
        return self.store.max_concurrency

    def _call(
        self, action: str, request: Callable[[float], T], info: ChunkInfo | None = None
    ) -> T:
        result: T = self.hooks.call(action, info, request)
        return result

    # -- one request each --------------------------------------------------------------------

    def _answer(self, exc: Exception, *accepted: str) -> None:
        if self._expected(exc) not in accepted:
            raise exc

    def _put(self, key: str, body: bytes, deadline: float, **conditions: str) -> str | None:
        """The new ETag, or None when a condition failed (412) or the key is gone (404)."""
        try:
            response = self._client.put_object(
                Bucket=self.store.bucket, Key=key, Body=body, ContentType="application/json",
                **conditions,
            )  # fmt: skip
        except Exception as exc:
            self._answer(exc, "precondition", "missing")
            return None
        return str(response.get("ETag", ""))

    def _head(self, key: str, deadline: float, *, checksum: bool = False) -> dict[str, Any] | None:
        mode = {"ChecksumMode": "ENABLED"} if checksum else {}
        try:
            head: dict[str, Any] = self._client.head_object(
                Bucket=self.store.bucket, Key=key, **mode
            )
        except Exception as exc:
            self._answer(exc, "missing")
            return None
        return head

    def _get(self, key: str, deadline: float, *, limit: int = LOCK_BODY_LIMIT) -> bytes | None:
        """The object's bytes if it holds at most ``limit`` (read within ``deadline``), ``b""``
        if it holds more (nothing this store wrote), None if it is absent."""
        try:
            response = self._client.get_object(Bucket=self.store.bucket, Key=key)
        except Exception as exc:
            self._answer(exc, "missing")
            return None
        try:
            return read_body(response["Body"], response.get("ContentLength"), limit,
                             lambda: self.hooks.time_left(deadline))  # fmt: skip
        except BodyTooLarge:
            return b""

    def _delete(self, key: str, deadline: float) -> None:
        try:
            self._client.delete_object(Bucket=self.store.bucket, Key=key)
        except Exception as exc:
            self._answer(exc, "missing")

    def _server_date(self, deadline: float) -> float:
        response = self._client.head_bucket(Bucket=self.store.bucket)
        date = response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        try:
            return _seconds(parsedate_to_datetime(date), "Date")
        except (TypeError, ValueError):
            raise _malformed("Date") from None

    # -- lock objects ------------------------------------------------------------------------

    def create(self, name: str, body: Callable[[float | None], bytes]) -> float | None:
        """One put (only if absent); the start is the ``LastModified`` the listing after it
        shows (``started``), written into the body at the first refresh."""
        put = functools.partial(self._put, self.base + name, body(None))
        if self.store.conditional_put:
            put = functools.partial(put, IfNoneMatch="*")
        etag = self._call("create lock", put)
        if etag is None:
            raise StoreLockedError(f"lock {name} could not be created: the name is taken")
        with self._mutex:
            self._held[name] = (etag, body, None)
        return None

    def started(self, name: str, start: float) -> None:
        with self._mutex:
            etag, body, _ = self._held[name]
            self._held[name] = (etag, body, start)

    def _rewrite(self, name: str, etag: str, body: bytes) -> str | None:
        """Upload ``body`` over lock ``name`` only while it still exists: the new ETag."""
        key = self.base + name
        if self.store.conditional_put:
            return self._call("refresh lock", functools.partial(self._put, key, body, IfMatch=etag))
        if self._call("refresh lock", functools.partial(self._head, key)) is None:
            return None
        return self._call("refresh lock", functools.partial(self._put, key, body))

    def entries(self) -> list[LockEntry]:
        found = []
        for entry in self.hooks.listed(self.base):
            if parse_lock_name(name := entry["Key"][len(self.base) :]) is not None:
                found.append(LockEntry(name, _stamp(entry)))
        return found

    def read(self, name: str) -> bytes | None:
        raw: bytes | None = self._call("read lock", functools.partial(self._get, self.base + name))
        return raw

    def refresh(self, name: str) -> bool:
        with self._mutex:
            held = self._held.get(name)
        if held is None:
            raise ChunkStoreError(f"lock {name} is not held by this store object")
        etag, body, start = held
        new = self._rewrite(name, etag, body(start))
        if new is None:
            return False
        with self._mutex:
            self._held[name] = (new, body, start)
        return True

    def remove(self, name: str) -> None:
        self._call("remove lock", functools.partial(self._delete, self.base + name))
        with self._mutex:
            self._held.pop(name, None)

    # -- session records ---------------------------------------------------------------------

    def end(self, name: str, record: str) -> None:
        key = self.base + ENDED + record
        self._call("record session", functools.partial(self._put, key, b""))
        self.remove(name)

    def ended(self) -> list[EndedSession]:
        base = self.base + ENDED
        found = (parse_ended(e["Key"][len(base) :], _stamp(e)) for e in self.hooks.listed(base))
        return [s for s in found if s is not None]

    def forget(self, record: str) -> None:
        self._call("forget session", functools.partial(self._delete, self.base + ENDED + record))

    def now(self) -> float:
        """The server's ``Date`` (whole seconds), from ``HeadBucket``."""
        return self._call("read the server clock", self._server_date)

    # -- chunks ------------------------------------------------------------------------------

    def chunks(self) -> Iterator[StoredChunk]:
        for entry in self.hooks.listed(self.store.prefix):
            info = self.hooks.info_of(entry["Key"])
            if info is not None:
                yield StoredChunk(info, _size(entry, "Size"), _stamp(entry))

    def delete_if_older(self, info: ChunkInfo, cutoff: float) -> int | None:
        key = self.store.key_of(info)
        head = self._call("delete", functools.partial(self._head, key, checksum=True), info)
        if head is None or _stamp(head) > cutoff:
            return None
        size = _size(head, "ContentLength")
        self._call("delete", functools.partial(self._delete, key), info)
        return size

    def reuse(self, info: ChunkInfo, body: bytes, since: float | None) -> None:
        """A chunk whose name is taken (or may be): keep the object only if it holds exactly
        ``body``, giving it a new stamp if it has none since ``since`` (None: always); else
        upload ``body`` over it (module docstring)."""
        key = self.store.key_of(info)
        head = self._call("store", functools.partial(self._head, key, checksum=True), info)
        if head is None or not self._holds(info, body, head):
            self._call("store", functools.partial(self.hooks.put, info, body), info)
        elif since is None or _stamp(head) < since:
            self._call("store", functools.partial(self._touch, info, body), info)

    def _holds(self, info: ChunkInfo, body: bytes, head: dict[str, Any]) -> bool:
        if head.get("ContentLength") != len(body):
            return False
        checksum = head.get("ChecksumSHA256")
        if checksum and "-" not in checksum:  # a full-object SHA-256, not a multipart one
            return bool(checksum == self.hooks.checksum(info))
        key = self.store.key_of(info)
        held = functools.partial(self._get, key, limit=len(body))
        return bool(self._call("store", held, info) == body)

    def _touch(self, info: ChunkInfo, body: bytes, deadline: float) -> None:
        """A new ``LastModified``: the object copied onto itself (re-uploaded if gone)."""
        key = self.store.key_of(info)
        try:
            self._client.copy_object(
                Bucket=self.store.bucket, Key=key,
                CopySource={"Bucket": self.store.bucket, "Key": key},
                MetadataDirective="REPLACE", ContentType="application/octet-stream",
                ChecksumAlgorithm="SHA256",
            )  # fmt: skip
        except Exception as exc:
            self._answer(exc, "missing")
            self.hooks.put(info, body, deadline)
