"""Where sources, stores and destinations are, as values that can travel in a task.

A location is parsed on the client and travels to the workers in task arguments, so it holds
no credential, ever: a URL with a user or password part (``s3://key:secret@bucket``, or an
``endpoint`` option that carries one) is refused with ``ValueError`` before anything is
submitted. Workers open locations with their own credentials, the usual boto3 way (the
environment, ``~/.aws/``, instance roles), and resolve the endpoint of an S3 URL without an
``endpoint`` option from their own environment (``PQSELFENC_S3_ENDPOINT``,
``AWS_ENDPOINT_URL_S3``, ``AWS_ENDPOINT_URL``), as ``S3ChunkStore.from_url`` does.

Opened stores and S3 clients are cached per worker process (both are thread-safe), so the
tasks of one job share a connection pool.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any

from pqselfenc import ChunkStore
from pqselfenc.core.stores import DirectoryChunkStore
from pqselfenc.core.stores._s3url import endpoint_from_env, parse_s3_url
from pqselfenc.core.stores.s3 import DEFAULT_TIMEOUT, ENDPOINT_ENV, S3ChunkStore
from pqselfenc.error import ChunkStoreError

__all__ = [
    "LocalPath",
    "Location",
    "S3Location",
    "location",
    "open_store",
    "s3_client",
    "s3_error",
]

S3_SCHEME = "s3"


@dataclass(frozen=True)
class S3Location:
    """``s3://bucket/key``: an object (source, destination) or a key prefix (store)."""

    bucket: str
    key: str
    endpoint: str | None = None
    region: str | None = None
    timeout: float | None = None  # a store's deadline per call (``?timeout=``); stores only

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def endpoint_url(self) -> str | None:
        """The ``endpoint`` option, else the worker's environment, else AWS itself."""
        return self.endpoint or endpoint_from_env(ENDPOINT_ENV)


@dataclass(frozen=True)
class LocalPath:
    """An absolute path that every worker (and the client) sees as the same file or folder."""

    path: str

    def __str__(self) -> str:
        return self.path


Location = S3Location | LocalPath


def location(value: object, what: str, *, object_key: bool) -> Location:
    """Parse ``value`` (an ``s3://`` URL or a path) naming ``what``; ``object_key`` says whether
    an S3 URL must name one object (source, destination) or may be a bare prefix (store)."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        raise TypeError(f"{what} must be an s3:// URL or a path (str), not {type(value).__name__}")
    if not value:
        raise ValueError(f"{what} is empty")
    scheme = value.partition("://")[0] if "://" in value else ""
    if scheme == S3_SCHEME:
        return _s3(value, what, object_key)
    if scheme:
        raise ValueError(f"{what}: unsupported URL scheme {scheme!r} (s3:// or a path)")
    return LocalPath(os.path.abspath(value))


def _s3(url: str, what: str, object_key: bool) -> S3Location:
    """The one S3 URL grammar of the stores (``core/stores/_s3url.py``), read here for a store
    prefix or, with ``object_key``, one object's key."""
    try:
        parsed = parse_s3_url(url)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from exc
    key = parsed.prefix.removesuffix("/")
    if object_key and (not key or url.partition("?")[0].endswith("/")):
        raise ValueError(f"{what}: the URL names no object (s3://BUCKET/KEY)")
    if object_key and parsed.timeout is not None:
        raise ValueError(f"{what}: the timeout option is a store's (an object URL takes none)")
    return S3Location(parsed.bucket, key if object_key else parsed.prefix, parsed.endpoint,
                      parsed.region, parsed.timeout)  # fmt: skip


# -- on the workers ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def open_store(spec: Location) -> ChunkStore:
    """The store ``spec`` names, opened once per worker process. A folder store must already
    exist here (a worker that does not see the shared folder must not make a private one)."""
    if isinstance(spec, S3Location):
        return S3ChunkStore(
            spec.bucket,
            spec.key,
            endpoint_url=spec.endpoint_url(),
            region=spec.region,
            timeout=DEFAULT_TIMEOUT if spec.timeout is None else spec.timeout,
        )
    if not os.path.isdir(spec.path):
        raise ChunkStoreError(f"no chunk store folder {spec.path} on worker {os.uname().nodename}")
    return DirectoryChunkStore(spec.path)


@functools.lru_cache(maxsize=8)
def s3_client(endpoint: str | None, region: str | None) -> Any:
    """A boto3 S3 client for sources and destinations (credentials from the worker's chain;
    botocore's standard retries for throttling and dropped connections). Like the store's, it
    reads no answer body but a range it asked for past ``ANSWER_LIMIT`` (``bound_answers``):
    a hostile server's error document cannot fill a worker's memory."""
    import boto3
    from botocore.config import Config

    from pqselfenc.core.stores._s3io import bound_answers

    settings = Config(
        retries={"mode": "standard", "max_attempts": 5},
        connect_timeout=10,
        read_timeout=60,
        max_pool_connections=32,
        request_checksum_calculation="when_required",  # we send SHA-256 ourselves
        response_checksum_validation="when_required",  # every chunk is verified anyway
        s3={"addressing_style": "path" if endpoint is not None else "auto"},
    )
    client = boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name=region, config=settings
    )
    bound_answers(client)
    return client


def client_for(where: S3Location) -> Any:
    """The cached client for ``where``; ``ChunkStoreError`` if boto3 is missing or unusable."""
    try:
        return s3_client(where.endpoint_url(), where.region)
    except ImportError as exc:
        raise ChunkStoreError("S3 locations need boto3: pip install 'pqselfenc[s3]'") from exc
    except Exception as exc:
        raise ChunkStoreError(f"cannot set up an S3 client: {type(exc).__name__}") from exc


def s3_error(exc: BaseException) -> tuple[str, int, str]:
    """``(code, HTTP status, reason for people)`` of a boto3/botocore exception; never the
    credentials, never a full request."""
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    name = type(exc).__name__
    if status == 403 or code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
        return code, status, f"access denied ({code or status}): check the workers' credentials"
    if code == "NoSuchBucket":
        return code, status, "the bucket does not exist"
    if status == 404:
        return code, status, "it does not exist"
    if response:
        return code, status, f"the server answered {code or status} (HTTP {status})"
    if "Credentials" in name:
        return name, 0, "no S3 credentials on the worker: set AWS_ACCESS_KEY_ID and friends"
    if "Connect" in name or "Endpoint" in name or "Timeout" in name:
        return name, 0, f"cannot reach the S3 endpoint ({name})"
    return name, 0, f"the S3 client failed ({name})"
