"""``S3ChunkStore``: chunks as objects in an S3-compatible bucket (AWS S3, SeaweedFS, Ceph, MinIO).

Layout: ``s3://BUCKET/PREFIX<64 hex digits>``, one object per chunk, flat under the prefix (S3
partitions by key itself; listing stays one ``ListObjectsV2`` walk with ``Delimiter="/"``).

- Put only if absent: ``PutObject`` with ``If-None-Match: *``. A chunk that is already there
  answers 412 and is not uploaded over, so deduplication costs no overwrite. For servers without
  conditional writes, ``conditional_put=False`` does ``HeadObject`` then ``PutObject`` instead
  (two writers may then both upload the same bytes: harmless, the content is identical).
- Integrity on upload: ``x-amz-checksum-sha256`` is base64(name), because a chunk's name *is*
  the SHA-256 of its bytes; the server refuses a body that arrived different (``BadDigest``).
  On download every body is hashed against its name before it is returned.
- Deduplication is checked: a chunk that is already there (412) is reused only after
  ``HeadObject`` with ``ChecksumMode=ENABLED`` shows its SHA-256 is the name (servers that keep
  no checksum: a bounded ``GetObject`` compared byte for byte); anything else is overwritten
  with an unconditional ``PutObject``. A reused chunk stamped before the writer's session
  began gets a new ``LastModified`` (``CopyObject`` onto itself), so gc's grace period
  protects it. Locks are objects under ``PREFIX/locks/`` (``_s3_locks.py``).
- At most ``max_concurrency`` requests in flight (a semaphore and a connection pool of that
  size), whatever the number of worker threads calling the store.
- Throttling, 5xx answers, checksum rejections and connection failures are retried with
  exponential backoff and jitter (``RetryPolicy``; ``sleep`` and ``rng`` are injected). Anything
  else (auth, missing bucket, bad request) fails at once with a one-line ``ChunkStoreError``.
  Botocore's own retries are off so there is exactly one retry loop.
- Every call (all its attempts) ends within ``timeout`` seconds, whatever the server does, and
  a chunk body is read only up to ``max_body_size`` (the largest chunk a writer stores),
  refused on its ``Content-Length`` first; every other answer body (errors, listing pages,
  HEAD/PUT/COPY/DELETE answers) only up to ``ANSWER_LIMIT`` (8 MiB), also on the client a
  caller passes (``_s3io.py``). A read that breaks off or stalls is retried like a dropped
  connection.
- A listing must advance (``_s3io.listing``): a page that repeats or goes back, a repeated or
  missing continuation token, or more than ``max_empty_pages`` empty pages in a row end it
  with ``ChunkStoreError``.
- Bucket, prefix and endpoint obey one grammar, the URL's (``_s3url.py``): no credentials in
  an endpoint, no empty, ``.`` or ``..`` prefix part, nothing that would need escaping.

boto3 is imported on first use, so ``import pqselfenc`` works without the ``s3`` extra.
Every botocore exception is translated here; messages carry short names, never full hashes
or credentials.
"""

from __future__ import annotations

import base64
import functools
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeVar

from pqselfenc.core import _primitives as P
from pqselfenc.core._locks import LockPolicy, StoreLocks
from pqselfenc.core._lockspace import StoredChunk
from pqselfenc.core._store import ChunkInfo, ChunkStore, EncryptedChunk, short_name, verify_chunk
from pqselfenc.core.stores._s3_locks import S3Hooks, S3LockSpace
from pqselfenc.core.stores._s3io import (
    ANSWER_LIMIT,
    MAX_EMPTY_PAGES,
    BodyCutShort,
    BodyTooLarge,
    Requests,
    RequestTimeout,
    bound_answers,
    listing,
    read_body,
)
from pqselfenc.core.stores._s3url import (
    check_bucket,
    check_endpoint,
    check_prefix,
    check_region,
    check_timeout,
    endpoint_from_env,
    host_of,
    parse_s3_url,
)
from pqselfenc.error import ChunkNotFound, ChunkStoreError, Error, IntegrityError

__all__ = ["RetryPolicy", "S3ChunkStore"]

T = TypeVar("T")

INSTALL_HINT = "S3 chunk stores need boto3: pip install 'pqselfenc[s3]'"

# Environment variables that name the endpoint of an S3-compatible server, first wins.
ENDPOINT_ENV = ("PQSELFENC_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")

# Seconds one store call (every attempt and backoff of one retrieve, store, has, delete or
# listing page) may take in all: ample for a 1 MiB chunk on a slow link, and a server that
# trickles bytes cannot hold a command for ever. Per store: timeout=, or ?timeout= in a URL.
DEFAULT_TIMEOUT = 120.0
_CONNECT_TIMEOUT = 10.0
_READ_TIMEOUT = 60.0  # one silent socket read; the deadline bounds the whole call

_AUTH_CODES = frozenset({"AccessDenied", "AllAccessDisabled", "ExpiredToken", "InvalidToken",
                         "InvalidAccessKeyId", "SignatureDoesNotMatch"})  # fmt: skip
# Answers worth another attempt: throttling, server trouble, a concurrent conditional write
# (AWS asks clients to retry 409 ConditionalRequestConflict).
_TRANSIENT_CODES = frozenset({"ConditionalRequestConflict", "InternalError", "OperationAborted",
                              "RequestTimeout", "RequestTimeTooSkewed", "ServiceUnavailable",
                              "SlowDown", "Throttling", "ThrottlingException"})  # fmt: skip
# The server hashed what it received and it did not match the checksum we sent: the bytes
# changed on the wire (we hash what we send), so another attempt is worth it.
_DIGEST_CODES = frozenset({"BadDigest", "XAmzContentSHA256Mismatch"})
_TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


@functools.cache
def _boto() -> tuple[ModuleType, ModuleType, ModuleType]:
    """``(boto3, botocore.config, botocore.exceptions)``, imported on first use."""
    try:
        import boto3
        import botocore.config
        import botocore.exceptions
    except ImportError as exc:
        raise ChunkStoreError(INSTALL_HINT) from exc
    return boto3, botocore.config, botocore.exceptions


@functools.cache
def _loader() -> Any:
    """One botocore data loader for every store: the S3 service model is parsed once
    (a fresh session per store re-reads it, ~0.15 s per store)."""
    import botocore.loaders

    return botocore.loaders.create_loader()


def _botocore_session() -> Any:
    """A fresh botocore session (its own credential chain) sharing the parsed models."""
    import botocore.session

    session = botocore.session.get_session()
    session.register_component("data_loader", _loader())
    return session


@dataclass(frozen=True)
class RetryPolicy:
    """How transient failures are retried: at most ``attempts`` tries in all; before try
    ``n + 1`` the store sleeps between half and all of ``min(max_delay, base_delay * 2**n)``
    seconds (exponential backoff with jitter, so parallel workers do not retry in lockstep)."""

    attempts: int = 5
    base_delay: float = 0.2
    max_delay: float = 10.0

    def __post_init__(self) -> None:
        if isinstance(self.attempts, bool) or not isinstance(self.attempts, int):
            raise TypeError("attempts must be an int")
        if not 1 <= self.attempts <= 100:
            raise ValueError("attempts must be between 1 and 100")
        if not 0 <= self.base_delay <= self.max_delay:
            raise ValueError("delays must satisfy 0 <= base_delay <= max_delay")

    def delay(self, retry: int, rng: random.Random) -> float:
        """Seconds to wait before retry number ``retry`` (0 for the first retry)."""
        cap = min(self.max_delay, self.base_delay * 2.0**retry)
        return cap / 2 + rng.uniform(0, cap / 2)


@dataclass(frozen=True)
class _Failure:
    reason: str
    transient: bool


def _code_status(exc: Any) -> tuple[str, int]:
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    return code, int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _is_missing(exc: Any) -> bool:
    """A 404 about the key, not the bucket (HEAD answers carry no code: caller decides)."""
    code, status = _code_status(exc)
    return status == 404 and code != "NoSuchBucket"


def _client_failure(exc: Any, bucket: str) -> _Failure:
    code, status = _code_status(exc)
    label = code or str(status)
    if code in _AUTH_CODES or status == 403:
        reason = f"access denied ({label}): check the credentials and the bucket policy"
        return _Failure(reason, False)
    if code == "NoSuchBucket":
        return _Failure(f"bucket {bucket!r} does not exist", False)
    if code in _DIGEST_CODES:
        return _Failure(f"the upload arrived corrupted, the server refused it ({label})", True)
    if code in _TRANSIENT_CODES or status in _TRANSIENT_STATUS:
        return _Failure(f"server answered {label}", True)
    if code == "NotImplemented" or status == 501:
        hint = "for servers without conditional writes pass conditional_put=False"
        return _Failure(f"server does not implement the request ({label}); {hint}", False)
    return _Failure(f"server answered {label} (HTTP {status})", False)


def _transient_types(errors: ModuleType) -> tuple[type[Exception], ...]:
    """Connection refused/reset/timed out, or a body cut short: worth another attempt."""
    return (errors.ConnectionError, errors.HTTPClientError, errors.IncompleteReadError)


def _failure(exc: Exception, bucket: str, timeout: float) -> _Failure:
    """What a botocore or request exception means (anything foreign: a permanent failure)."""
    if isinstance(exc, RequestTimeout):
        return _Failure(f"no answer within the {timeout:g} s deadline ({exc})", True)
    if isinstance(exc, BodyCutShort):
        return _Failure(f"connection failed (the body was cut short: {exc})", True)
    if isinstance(exc, BodyTooLarge):
        reason = f"more than the {exc.limit} bytes an answer may have: not read"
        return _Failure(f"the server sent an answer of {exc}, {reason}", False)
    errors = _boto()[2]
    if isinstance(exc, errors.ClientError):
        return _client_failure(exc, bucket)
    if isinstance(exc, errors.SSLError):
        return _Failure("TLS handshake with the server failed", False)
    if isinstance(exc, _transient_types(errors)):
        return _Failure(f"connection failed ({type(exc).__name__})", True)
    if isinstance(exc, errors.NoCredentialsError | errors.PartialCredentialsError):
        return _Failure("no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY", False)
    return _Failure(f"S3 client failed ({type(exc).__name__})", False)


def _checksum(info: ChunkInfo) -> str:
    """The ``x-amz-checksum-sha256`` of the chunk: its name, since name = SHA-256(bytes)."""
    return base64.b64encode(info.name).decode("ascii")


def _check_settings(concurrency: object, retry: object, conditional_put: object) -> None:
    if isinstance(concurrency, bool) or not isinstance(concurrency, int):
        raise TypeError("max_concurrency must be an int")
    if not 1 <= concurrency <= 1024:
        raise ValueError("max_concurrency must be between 1 and 1024")
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise TypeError("retry must be a RetryPolicy")
    if not isinstance(conditional_put, bool):  # bool("false") would be True
        raise TypeError("conditional_put must be a bool")


class S3ChunkStore(ChunkStore):
    """Chunks in ``bucket`` under ``prefix``. Credentials come from the arguments or boto3's
    usual chain (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, profiles, instance roles);
    ``client`` takes a ready boto3 S3 client instead. ``locks`` sets the timing of the store
    locks writers and gc share. See the module docstring for guarantees.
    """

    verifies_on_retrieve = True
    list_page_size = 1000  # keys per ListObjectsV2 page (the S3 maximum)
    max_empty_pages = MAX_EMPTY_PAGES  # truncated pages without a key, in a row (_s3io.listing)
    max_body_size = P.MAX_STORED_CHUNK_SIZE  # a larger object is no chunk a writer made

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        client: Any = None,
        max_concurrency: int = 16,
        retry: RetryPolicy | None = None,
        conditional_put: bool = True,
        timeout: float = DEFAULT_TIMEOUT,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        locks: LockPolicy | None = None,
    ) -> None:
        self.bucket = check_bucket(bucket)
        self.prefix = check_prefix(prefix)
        self.timeout = check_timeout(timeout)
        _check_settings(max_concurrency, retry, conditional_put)
        if (access_key_id is None) != (secret_access_key is None):
            raise ValueError("give both access_key_id and secret_access_key, or neither")
        self.endpoint_url = None if endpoint_url is None else check_endpoint(endpoint_url)
        region = None if region is None else check_region(region)
        self.retry = retry if retry is not None else RetryPolicy()
        self.conditional_put = conditional_put
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()
        self._requests = Requests(max_concurrency)
        self._bucket_seen = False
        self._owns_client = client is None
        if client is None:
            creds = (access_key_id, secret_access_key, session_token)
            client = self._make_client(region, creds, max_concurrency)
        elif endpoint_url is not None or access_key_id is not None or region is not None:
            raise ValueError("with client=, configure endpoint, region and credentials on it")
        bound_answers(client, ANSWER_LIMIT)  # botocore reads no answer body whole for us
        self._client = client
        self.max_concurrency = max_concurrency
        hooks = S3Hooks(client, self._call, _expected, _checksum, self._info_of, self._put,
                        self._requests.left, self._listed)  # fmt: skip
        self._space = S3LockSpace(self, hooks)
        self._locks = StoreLocks(self._space, locks)

    def _make_client(self, region: str | None, creds: tuple[str | None, ...], pool: int) -> Any:
        boto3, config, errors = _boto()
        addressing = "path" if self.endpoint_url is not None else "auto"
        settings = config.Config(
            max_pool_connections=pool,
            retries={"total_max_attempts": 1},  # our loop retries, with injectable sleep
            # A second past the deadline: the caller's wait ends first, and says so.
            connect_timeout=min(_CONNECT_TIMEOUT, self.timeout + 1.0),
            read_timeout=min(_READ_TIMEOUT, self.timeout + 1.0),
            request_checksum_calculation="when_required",  # we send SHA-256 ourselves
            response_checksum_validation="when_required",  # we hash every body ourselves
            s3={"addressing_style": addressing},
        )
        key, secret, token = creds
        try:
            session = boto3.session.Session(
                aws_access_key_id=key,
                aws_secret_access_key=secret,
                aws_session_token=token,
                botocore_session=_botocore_session(),
            )
            return session.client(
                "s3", endpoint_url=self.endpoint_url, region_name=region, config=settings
            )
        except (errors.BotoCoreError, ValueError) as exc:
            raise ChunkStoreError(f"cannot set up the S3 client: {type(exc).__name__}") from exc

    @classmethod
    def from_url(cls, url: str, **options: Any) -> S3ChunkStore:
        """A store for ``s3://BUCKET/PREFIX[?endpoint=URL&region=NAME&timeout=SECONDS]``,
        read strictly (``_s3url.parse_s3_url``: what it does not understand is refused).

        Without ``endpoint`` the first of ``PQSELFENC_S3_ENDPOINT``, ``AWS_ENDPOINT_URL_S3``,
        ``AWS_ENDPOINT_URL`` is used (none: AWS itself), checked by the same rules.
        Credentials never go in a URL; boto3 reads them from the environment. ``options`` go
        to the constructor.
        """
        where = parse_s3_url(url)
        endpoint = where.endpoint or endpoint_from_env(ENDPOINT_ENV)
        if where.timeout is not None:
            options.setdefault("timeout", where.timeout)
        return cls(where.bucket, where.prefix, endpoint_url=endpoint, region=where.region,
                   **options)  # fmt: skip

    def __repr__(self) -> str:
        where = f"s3://{self.bucket}/{self.prefix}"
        return f"S3ChunkStore({where!r}, endpoint={host_of(self.endpoint_url)!r})"

    def close(self) -> None:
        """Close the connection pool (of a client this store made itself)."""
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> S3ChunkStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def key_of(self, info: ChunkInfo) -> str:
        """The object key a chunk is stored under."""
        return self.prefix + info.hex_name

    # -- the ChunkStore protocol ---------------------------------------------------------------

    def store(self, chunk: bytes) -> ChunkInfo:
        info = ChunkInfo.for_chunk(chunk)
        self._keep(info, chunk if isinstance(chunk, bytes) else bytes(chunk))
        return info

    def put_named(self, chunk: EncryptedChunk) -> None:
        """Store a chunk the engine named, without hashing it here: the upload carries
        ``ChecksumSHA256`` = the name, so the server refuses bytes that do not match it."""
        self._keep(chunk.info, chunk.content)

    def _keep(self, info: ChunkInfo, body: bytes) -> None:
        request = functools.partial(self._put_if_absent, info, body)
        if self.conditional_put and self._call("store", info, request):
            return  # a new object
        self._reuse(info, body)

    def retrieve(self, info: ChunkInfo) -> bytes:
        content = self._call("retrieve", info, functools.partial(self._get, info))
        if content is None:
            raise ChunkNotFound(
                f"chunk {short_name(info.name)} is not in s3://{self.bucket}/{self.prefix}"
            )
        return verify_chunk(info, content)

    def has(self, info: ChunkInfo) -> bool:
        found = self._call("has", info, functools.partial(self._head, info))
        if not found and not self._bucket_seen:
            self.check()  # a HEAD 404 cannot tell a missing key from a missing bucket
        return found

    def delete(self, info: ChunkInfo) -> None:
        self._call("delete", info, functools.partial(self._delete, info))

    def __iter__(self) -> Iterator[ChunkInfo]:
        for entry in self._listed(self.prefix):
            info = self._info_of(entry["Key"])  # listing() checked it is text
            if info is not None:
                yield info

    def check(self) -> None:
        """Raise ``ChunkStoreError`` unless the bucket exists and the credentials work."""
        self._call("check", None, self._head_bucket)
        self._bucket_seen = True

    # -- one request each (run inside _call) ---------------------------------------------------

    def _put(self, info: ChunkInfo, body: bytes, deadline: float, **extra: str) -> None:
        self._client.put_object(
            Bucket=self.bucket,
            Key=self.key_of(info),
            Body=body,
            ChecksumSHA256=_checksum(info),
            ContentType="application/octet-stream",
            **extra,
        )

    def _put_if_absent(self, info: ChunkInfo, body: bytes, deadline: float) -> bool:
        """True if the object was created; False on 412 (the name is taken: ``_reuse``)."""
        try:
            self._put(info, body, deadline, IfNoneMatch="*")
        except _boto()[2].ClientError as exc:
            if _code_status(exc) != ("PreconditionFailed", 412):
                raise
            return False
        return True

    def _head(self, info: ChunkInfo, deadline: float) -> bool:
        try:
            self._client.head_object(Bucket=self.bucket, Key=self.key_of(info))
        except _boto()[2].ClientError as exc:
            if _is_missing(exc):
                return False
            raise
        return True

    def _get(self, info: ChunkInfo, deadline: float) -> bytes | None:
        """The object's bytes, read only up to the largest chunk a writer stores (checked on
        ``Content-Length`` first) and only until ``deadline``."""
        try:
            response = self._client.get_object(Bucket=self.bucket, Key=self.key_of(info))
        except _boto()[2].ClientError as exc:
            if _is_missing(exc):
                return None
            raise
        length = response.get("ContentLength")
        try:
            return read_body(response["Body"], length, self.max_body_size,
                             lambda: self._requests.left(deadline))  # fmt: skip
        except BodyTooLarge as exc:
            raise IntegrityError(
                f"chunk {short_name(info.name)} in s3://{self.bucket}/{self.prefix} is {exc}, "
                f"more than any chunk a writer stores ({exc.limit} bytes): not read"
            ) from None

    def _delete(self, info: ChunkInfo, deadline: float) -> None:
        try:
            self._client.delete_object(Bucket=self.bucket, Key=self.key_of(info))
        except _boto()[2].ClientError as exc:
            if not _is_missing(exc):
                raise

    def _list_page(self, prefix: str, token: str | None, deadline: float) -> dict[str, Any]:
        extra = {"ContinuationToken": token} if token else {}
        page: dict[str, Any] = self._client.list_objects_v2(
            Bucket=self.bucket,
            Prefix=prefix,
            Delimiter="/",
            MaxKeys=self.list_page_size,
            **extra,
        )
        return page

    def _listed(self, prefix: str) -> Iterator[dict[str, Any]]:
        """Every object directly under ``prefix``, page by page (one call, and its deadline,
        per page); the listing must advance (``_s3io.listing``)."""

        def page(token: str | None) -> dict[str, Any]:
            return self._call("list", None, functools.partial(self._list_page, prefix, token))

        return listing(page, f"s3://{self.bucket}/{prefix}", self.max_empty_pages)

    def _head_bucket(self, deadline: float) -> None:
        try:
            self._client.head_bucket(Bucket=self.bucket)
        except _boto()[2].ClientError as exc:
            if _code_status(exc)[1] == 404:
                raise ChunkStoreError(f"S3 bucket {self.bucket!r} does not exist") from exc
            raise

    def _info_of(self, key: object) -> ChunkInfo | None:
        if not isinstance(key, str) or not key.startswith(self.prefix):
            return None
        name = key[len(self.prefix) :]
        if len(name) != 2 * P.NAME_SIZE or name != name.lower():
            return None
        try:
            return ChunkInfo(name=bytes.fromhex(name))
        except ValueError:
            return None

    # -- sharing: checked deduplication, stamps, careful deletes, locks -----------------------

    def locks(self) -> StoreLocks:
        """The store's locks (objects under ``PREFIX/locks/``), shared by writers and gc."""
        return self._locks

    def _reuse(self, info: ChunkInfo, body: bytes) -> None:
        """The name is taken (or, without conditional puts, may be): checked and refreshed,
        or written again (``S3LockSpace.reuse``)."""
        self._space.reuse(info, body, self._locks.session_start)

    def stored_chunks(self) -> Iterator[StoredChunk]:
        """Every chunk with its size and ``LastModified`` (its stamp), from the listing."""
        return self._space.chunks()

    def delete_if_older(self, info: ChunkInfo, cutoff: float) -> int | None:
        """Delete the chunk if its ``LastModified``, read again now, is at or before
        ``cutoff``; the bytes freed, or None if it was kept (newer, or gone)."""
        return self._space.delete_if_older(info, cutoff)

    # -- retries and translation ---------------------------------------------------------------

    def _call(self, action: str, info: ChunkInfo | None, request: Callable[[float], T]) -> T:
        """Run ``request(deadline)`` with a concurrency slot, within ``timeout`` seconds in all;
        retry transient failures while time is left, translate every failure."""
        deadline = time.monotonic() + self.timeout
        attempts = self.retry.attempts
        for attempt in range(attempts):
            try:
                return self._requests.run(functools.partial(request, deadline), deadline)
            except Error:
                raise  # ours already (a damaged chunk, a malformed answer): as it is
            except Exception as exc:
                failure = _failure(exc, self.bucket, self.timeout)
                left = self._requests.left(deadline)
                if not failure.transient or attempt + 1 == attempts or left <= 0:
                    raise ChunkStoreError(self._message(action, info, failure, attempt)) from exc
            self._sleep(min(self.retry.delay(attempt, self._rng), left))
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _message(self, action: str, info: ChunkInfo | None, failure: _Failure, tried: int) -> str:
        what = f"{action} chunk {short_name(info.name)}" if info is not None else action
        tries = f" (gave up after {tried + 1} attempts)" if tried else ""
        return f"S3 {what} in s3://{self.bucket}/{self.prefix}: {failure.reason}{tries}"


def _expected(exc: Exception) -> str | None:
    """``missing`` for a 404 about a key, ``precondition`` for a 412, else None: what the lock
    space expects from a request and turns into an answer rather than an error."""
    if not isinstance(exc, _boto()[2].ClientError):
        return None
    if _is_missing(exc):
        return "missing"
    return "precondition" if _code_status(exc)[1] == 412 else None
