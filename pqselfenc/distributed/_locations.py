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
from urllib.parse import parse_qs, urlsplit

from pqselfenc import ChunkStore
from pqselfenc.core.stores import DirectoryChunkStore
from pqselfenc.core.stores.s3 import ENDPOINT_ENV, S3ChunkStore
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
_OPTIONS = frozenset({"endpoint", "region"})
_CREDENTIALS = (
    "credentials do not belong in a URL: workers read them the usual boto3 way "
    "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, ~/.aws/, instance roles)"
)


@dataclass(frozen=True)
class S3Location:
    """``s3://bucket/key``: an object (source, destination) or a key prefix (store)."""

    bucket: str
    key: str
    endpoint: str | None = None
    region: str | None = None

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def endpoint_url(self) -> str | None:
        """The ``endpoint`` option, else the worker's environment, else AWS itself."""
        env = (os.environ.get(name) for name in ENDPOINT_ENV)
        return self.endpoint or next((value for value in env if value), None)


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
    parts = urlsplit(url)
    if "@" in parts.netloc:
        raise ValueError(f"{what}: {_CREDENTIALS}")
    if parts.fragment or not parts.netloc:
        raise ValueError(f"{what}: an S3 URL looks like s3://BUCKET/KEY")
    bucket, key = parts.netloc, parts.path.lstrip("/")
    if not 3 <= len(bucket) <= 63 or not bucket.isascii() or ":" in bucket:
        raise ValueError(f"{what}: a bucket name is 3 to 63 ASCII characters")
    if object_key and (not key or key.endswith("/")):
        raise ValueError(f"{what}: {url.split('?')[0]} names no object (s3://BUCKET/KEY)")
    options = _options(parts.query, what)
    return S3Location(bucket, key, options.get("endpoint"), options.get("region"))


def _options(query: str, what: str) -> dict[str, str]:
    try:
        fields = parse_qs(query, keep_blank_values=False, strict_parsing=bool(query))
    except ValueError as exc:
        raise ValueError(f"{what}: the URL has a malformed query") from exc
    unknown = sorted(set(fields) - _OPTIONS)
    if unknown:
        raise ValueError(f"{what}: unknown URL option {unknown[0]!r} (known: endpoint, region)")
    if any(len(v) != 1 for v in fields.values()):
        raise ValueError(f"{what}: each URL option may appear once")
    options = {k: v[0] for k, v in fields.items()}
    endpoint = options.get("endpoint")
    if endpoint is not None:
        where = urlsplit(endpoint)
        if where.scheme not in ("http", "https") or not where.netloc:
            raise ValueError(f"{what}: the endpoint option is an http(s):// URL")
        if "@" in where.netloc or where.query:
            raise ValueError(f"{what}: {_CREDENTIALS}")
    return options


# -- on the workers ----------------------------------------------------------------------------


@functools.lru_cache(maxsize=32)
def open_store(spec: Location) -> ChunkStore:
    """The store ``spec`` names, opened once per worker process. A folder store must already
    exist here (a worker that does not see the shared folder must not make a private one)."""
    if isinstance(spec, S3Location):
        return S3ChunkStore(
            spec.bucket, spec.key, endpoint_url=spec.endpoint_url(), region=spec.region
        )
    if not os.path.isdir(spec.path):
        raise ChunkStoreError(f"no chunk store folder {spec.path} on worker {os.uname().nodename}")
    return DirectoryChunkStore(spec.path)


@functools.lru_cache(maxsize=8)
def s3_client(endpoint: str | None, region: str | None) -> Any:
    """A boto3 S3 client for sources and destinations (credentials from the worker's chain;
    botocore's standard retries for throttling and dropped connections)."""
    import boto3
    from botocore.config import Config

    settings = Config(
        retries={"mode": "standard", "max_attempts": 5},
        connect_timeout=10,
        read_timeout=60,
        max_pool_connections=32,
        request_checksum_calculation="when_required",  # we send SHA-256 ourselves
        response_checksum_validation="when_required",  # every chunk is verified anyway
        s3={"addressing_style": "path" if endpoint is not None else "auto"},
    )
    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint, region_name=region, config=settings
    )


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
