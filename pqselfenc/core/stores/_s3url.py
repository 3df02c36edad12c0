"""The one grammar of S3 store URLs, bucket names, prefixes and endpoints (docs/stores.md).

``parse_s3_url`` reads ``s3://BUCKET[/PREFIX][?OPTION=VALUE[&OPTION=VALUE]...]`` strictly:
anything it does not understand is a ``ValueError`` that says why, never a character quietly
dropped (``urlsplit`` drops ``#fragments``, tabs, newlines and a bare ``?``, which once made
``s3://chunks/team#2`` mean ``team/``). ``S3ChunkStore`` checks its constructor arguments with
the same functions, so a store made from a URL or from Python obeys one set of rules.

Messages name characters, positions and option names, never a whole URL or value: a URL
may hold a secret its author did not mean to show, and error text is printed and logged.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "OPTIONS",
    "S3Location",
    "check_bucket",
    "check_endpoint",
    "check_prefix",
    "check_region",
    "check_timeout",
    "endpoint_from_env",
    "host_of",
    "parse_s3_url",
]

SCHEME = "s3://"
OPTIONS = ("endpoint", "region", "timeout")
MAX_PREFIX = 1024 - 64 - 1  # an S3 key is at most 1024 bytes; the chunk name takes 64 + "/"
MAX_TIMEOUT = 24 * 3600.0

# AWS's current bucket rules (lower case, digits, '.', '-'; 3-63; letter or digit at both ends).
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
# A prefix segment: AWS's "safe characters" for object keys, nothing that needs encoding.
_SEGMENT = re.compile(r"[A-Za-z0-9!_.*'()-]+")
_REGION = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
                   r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")  # fmt: skip
_ENDPOINT = re.compile(r"(?P<scheme>https?)://(?P<host>\[[0-9A-Fa-f:.]+\]|[^/:\[\]]+)"
                       r"(?::(?P<port>[0-9]{1,5}))?/?")  # fmt: skip
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_NAME = re.compile(r"[a-z][a-z_]{0,19}")
CREDENTIALS = (
    "credentials do not belong in a URL: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
    "(or a profile)"
)


@dataclass(frozen=True)
class S3Location:
    """Where an S3 store keeps chunks, as a URL says it; ``str()`` is the canonical URL."""

    bucket: str
    prefix: str = ""  # "" or segments ending in "/"
    endpoint: str | None = None
    region: str | None = None
    timeout: float | None = None

    def __str__(self) -> str:
        options = [f"{k}={v}" for k, v in self.options().items()]
        return f"{SCHEME}{self.bucket}/{self.prefix}" + ("?" + "&".join(options) if options else "")

    def options(self) -> dict[str, str]:
        """The URL options that are set, as text."""
        values = {"endpoint": self.endpoint, "region": self.region,
                  "timeout": None if self.timeout is None else f"{self.timeout:g}"}  # fmt: skip
        return {k: v for k, v in values.items() if v is not None}


def parse_s3_url(url: str) -> S3Location:
    """``s3://BUCKET[/PREFIX][?endpoint=URL&region=NAME&timeout=SECONDS]``, strictly."""
    if not isinstance(url, str):
        raise TypeError("an S3 store URL is a str")
    _check_characters(url, "the S3 store URL")
    if not url.startswith(SCHEME):
        raise ValueError("an S3 store URL looks like s3://BUCKET/PREFIX (lower-case 's3://')")
    if "#" in url:
        raise ValueError("an S3 store URL has no '#fragment': '#' is not allowed")
    rest, question, query = url[len(SCHEME) :].partition("?")
    bucket, _, prefix = rest.partition("/")
    if "@" in bucket:
        raise ValueError(CREDENTIALS)
    if prefix.startswith("/"):  # s3://bucket//p: the URL's path starts with an empty part
        _check_segment("", 1)
    options = _options(query) if question else {}
    timeout = options.get("timeout")
    return S3Location(
        check_bucket(bucket),
        check_prefix(prefix),
        check_endpoint(options["endpoint"]) if "endpoint" in options else None,
        check_region(options["region"]) if "region" in options else None,
        check_timeout(_number(timeout)) if timeout is not None else None,
    )


def _check_characters(text: str, what: str) -> None:
    for index, char in enumerate(text):
        if not char.isascii() or not char.isprintable() or char == " ":
            raise ValueError(f"{what} has the character {char!r} at position {index + 1}")


def _options(query: str) -> dict[str, str]:
    if not query:
        raise ValueError("the S3 store URL ends its options before the first: remove the '?'")
    found: dict[str, str] = {}
    for index, item in enumerate(query.split("&")):
        name, equals, value = item.partition("=")
        if name not in OPTIONS:  # named only if it cannot be a pasted secret
            shown = f"{name!r}" if _NAME.fullmatch(name) else f"number {index + 1}"
            raise ValueError(f"unknown S3 store URL option {shown} (known: {', '.join(OPTIONS)})")
        if not equals or not value:
            raise ValueError(f"the S3 store URL option {name!r} has no value")
        if name in found:
            raise ValueError(f"the S3 store URL option {name!r} appears twice")
        found[name] = value
    return found


def check_bucket(bucket: object) -> str:
    """``bucket`` if it is a valid bucket name (AWS's rules), else ``ValueError``."""
    if not isinstance(bucket, str):
        raise TypeError("bucket must be a str")
    if not bucket:
        raise ValueError("an S3 store URL looks like s3://BUCKET/PREFIX: the bucket is missing")
    if not _BUCKET.fullmatch(bucket) or ".." in bucket or _is_ip(bucket):
        raise ValueError(
            "a bucket name is 3 to 63 lower-case letters, digits, '.' and '-', starting and "
            "ending with a letter or digit, without '..', not an IP address"
        )
    return bucket


def check_prefix(prefix: object) -> str:
    """``prefix`` as ``""`` or ``seg/.../seg/``: one leading and one trailing ``/`` are
    dropped; an empty segment (``a//b``), ``.``, ``..`` or a character outside AWS's safe set
    (letters, digits, ``! _ . * ' ( ) -``) is a ``ValueError``."""
    if not isinstance(prefix, str):
        raise TypeError("prefix must be a str")
    body = prefix.removeprefix("/").removesuffix("/")
    if not body:
        return ""
    if len(body) > MAX_PREFIX:
        raise ValueError(f"an S3 prefix is at most {MAX_PREFIX} characters")
    for number, segment in enumerate(body.split("/"), start=1):
        _check_segment(segment, number)
    return body + "/"


def _check_segment(segment: str, number: int) -> None:
    if not segment:
        raise ValueError(
            f"the S3 prefix has an empty part (part {number}: '//'); servers differ on what "
            "it means (SeaweedFS drops it), so it is refused"
        )
    if segment in (".", ".."):
        raise ValueError(f"the S3 prefix has a {segment!r} part (part {number})")
    bad = next((c for c in segment if not _SEGMENT.fullmatch(c)), None)
    if bad is not None:
        raise ValueError(
            f"the S3 prefix has the character {bad!r} in part {number}; allowed: letters, "
            "digits and ! _ . * ' ( ) -"
        )


def check_endpoint(endpoint: object, source: str = "the endpoint") -> str:
    """``http(s)://HOST[:PORT][/]`` without credentials, path, query or fragment."""
    if not isinstance(endpoint, str):
        raise TypeError("endpoint must be a str")
    _check_characters(endpoint, source)
    scheme_end = endpoint.find("://")
    authority = endpoint[scheme_end + 3 :].split("/", 1)[0] if scheme_end >= 0 else ""
    if "@" in authority:
        raise ValueError(f"{source} holds credentials: {CREDENTIALS}")
    found = _ENDPOINT.fullmatch(endpoint)
    if found is None or not _valid_host(found["host"]):
        raise ValueError(f"{source} is not http(s)://HOST[:PORT] (no path, query or fragment)")
    if found["port"] is not None and not 1 <= int(found["port"]) <= 65535:
        raise ValueError(f"{source} has a port outside 1-65535")
    return endpoint.removesuffix("/")


def _valid_host(host: str) -> bool:
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            return False
        return True
    return len(host) <= 253 and _HOST.fullmatch(host) is not None


def _is_ip(name: str) -> bool:
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return False
    return True


def check_region(region: object) -> str:
    """A region name such as ``us-east-1``: lower-case letters, digits and ``-``."""
    if not isinstance(region, str):
        raise TypeError("region must be a str")
    if not _REGION.fullmatch(region):
        raise ValueError("a region is lower-case letters, digits and '-' (e.g. us-east-1)")
    return region


def _number(text: str) -> float:
    if not _NUMBER.fullmatch(text):
        raise ValueError("the S3 store URL option 'timeout' is a number of seconds (e.g. 120)")
    return float(text)


def check_timeout(seconds: object) -> float:
    """A total deadline per store request, in seconds: more than 0, at most a day."""
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise TypeError("timeout must be a number of seconds")
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_TIMEOUT):
        raise ValueError(f"timeout must be more than 0 and at most {MAX_TIMEOUT:g} seconds")
    return float(seconds)


def endpoint_from_env(names: Sequence[str]) -> str | None:
    """The first of the variables ``names`` that is set, checked like a URL's ``endpoint``
    (an error names the variable, never its value)."""
    name = next((n for n in names if os.environ.get(n)), None)
    return None if name is None else check_endpoint(os.environ[name], source=name)


def host_of(endpoint: str | None) -> str:
    """A checked endpoint's host and port (``aws`` for none), for ``repr``."""
    return "aws" if endpoint is None else endpoint.split("://", 1)[1].rstrip("/")
