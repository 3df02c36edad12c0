"""The S3 store URL grammar (issue 18.2, 18.10): refused unless understood, in one parser that
``S3ChunkStore.from_url``, the constructor and the CLI share; no message echoes a URL's
secret. No server needed: parsing happens before any client exists."""

from __future__ import annotations

import pytest

from pqselfenc.core.stores import S3ChunkStore
from pqselfenc.core.stores._s3url import (
    S3Location,
    check_bucket,
    check_endpoint,
    check_prefix,
    parse_s3_url,
)
from pqselfenc.error import ChunkStoreError

SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCY"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        # characters urlsplit used to drop or strip: each made another team's prefix
        ("s3://chunks/team#2", "'#' is not allowed"),
        ("s3://chunks/te\tam", "the character '\\t' at position 15"),
        ("s3://chunks/team\n", "the character '\\n' at position 17"),
        ("s3://chunks/team\r", "the character '\\r'"),
        ("s3://chunks/team?", "remove the '?'"),
        ("s3://chunks/te am", "the character ' '"),
        ("s3://chunks/tëam", "the character 'ë'"),
        ("s3://chunks/team\x00", "the character '\\x00'"),
        ("s3://chunks/team\x7f", "the character '\\x7f'"),
        # paths: no empty part (SeaweedFS stores dd//ss under dd/ss/), no . or .., no escapes
        ("s3://chunks/dd//ss", "empty part (part 2: '//')"),
        ("s3://chunks//dd", "empty part (part 1"),
        ("s3://chunks/dd///", "empty part"),
        ("s3://chunks/a/../b", "'..' part (part 2)"),
        ("s3://chunks/./b", "'.' part (part 1)"),
        ("s3://chunks/a%2Fb", "the character '%' in part 1"),
        ("s3://chunks/a+b", "the character '+'"),
        ("s3://chunks/a;b", "the character ';'"),
        # buckets
        ("s3://", "the bucket is missing"),
        ("s3:///x", "the bucket is missing"),
        ("s3://Chunks/x", "a bucket name is 3 to 63 lower-case"),
        ("s3://ab/x", "a bucket name"),
        ("s3://a..b/x", "without '..'"),
        ("s3://-ab/x", "a bucket name"),
        ("s3://192.168.1.1/x", "not an IP address"),
        ("s3://bucket:9000/x", "a bucket name"),
        ("s3://" + "a" * 64 + "/x", "a bucket name"),
        # schemes
        ("S3://chunks/x", "looks like s3://BUCKET/PREFIX"),
        ("s3:/chunks/x", "looks like s3://BUCKET/PREFIX"),
        ("http://chunks/x", "looks like s3://BUCKET/PREFIX"),
        # options
        ("s3://chunks/x?colour=red", "unknown S3 store URL option 'colour'"),
        ("s3://chunks/x?region=a&region=b", "'region' appears twice"),
        ("s3://chunks/x?region", "'region' has no value"),
        ("s3://chunks/x?region=", "'region' has no value"),
        ("s3://chunks/x?region=us-east-1&", "option number 2"),
        ("s3://chunks/x?&region=us-east-1", "option number 1"),
        ("s3://chunks/x?region=US_EAST", "a region is lower-case"),
        ("s3://chunks/x?timeout=0", "more than 0"),
        ("s3://chunks/x?timeout=1e9", "number of seconds"),
        ("s3://chunks/x?timeout=-1", "number of seconds"),
        ("s3://chunks/x?endpoint=ftp://h", "http(s)://HOST[:PORT]"),
        ("s3://chunks/x?endpoint=http://h/path", "no path, query or fragment"),
        ("s3://chunks/x?endpoint=http://h:99999", "port outside"),
        ("s3://chunks/x?endpoint=http://", "http(s)://HOST"),
        ("s3://chunks/x?endpoint=http://[::1", "http(s)://HOST"),
    ],
)
def test_what_is_not_understood_is_refused_and_says_why(url: str, reason: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_s3_url(url)
    assert reason in str(caught.value)
    with pytest.raises(ValueError):
        S3ChunkStore.from_url(url)  # the store reads URLs through the same parser


@pytest.mark.parametrize(
    ("url", "location"),
    [
        ("s3://chunks", S3Location("chunks")),
        ("s3://chunks/", S3Location("chunks")),
        ("s3://chunks/team", S3Location("chunks", "team/")),
        ("s3://chunks/team/", S3Location("chunks", "team/")),
        ("s3://chunks/a/b_c-d.e(f)!*'g", S3Location("chunks", "a/b_c-d.e(f)!*'g/")),
        ("s3://my.bucket-1/p?region=eu-west-3&timeout=2.5",
         S3Location("my.bucket-1", "p/", region="eu-west-3", timeout=2.5)),
        ("s3://chunks/p?endpoint=http://127.0.0.1:8333/",
         S3Location("chunks", "p/", endpoint="http://127.0.0.1:8333")),
        ("s3://chunks/p?endpoint=https://[::1]:9000", S3Location("chunks", "p/",
                                                                 endpoint="https://[::1]:9000")),
        ("s3://chunks/p?endpoint=https://s3.eu-west-3.amazonaws.com",
         S3Location("chunks", "p/", endpoint="https://s3.eu-west-3.amazonaws.com")),
    ],
)  # fmt: skip
def test_what_is_understood_round_trips_through_its_canonical_form(
    url: str, location: S3Location
) -> None:
    assert parse_s3_url(url) == location
    assert parse_s3_url(str(location)) == location


def test_canonical_form() -> None:
    where = parse_s3_url("s3://chunks/a/b/?timeout=30&region=us-east-1")
    assert str(where) == "s3://chunks/a/b/?region=us-east-1&timeout=30"


@pytest.mark.parametrize(
    "url",
    [
        f"s3://AKIAEXAMPLE:{SECRET}@chunks/x",
        f"s3://chunks/x?endpoint=http://AKIAEXAMPLE:{SECRET}@127.0.0.1:8333",
        f"s3://chunks/x?endpoint=http://{SECRET}@h",
        f"s3://chunks/x?endpoint=https://u:{SECRET}@h/path?x=1",
    ],
)
def test_credentials_are_refused_and_never_echoed(url: str) -> None:
    with pytest.raises(ValueError, match="credentials do not belong in a URL") as caught:
        parse_s3_url(url)
    assert SECRET not in str(caught.value) and "AKIA" not in str(caught.value)


def test_unknown_option_names_that_could_be_secrets_are_not_echoed() -> None:
    with pytest.raises(ValueError, match="option number 1") as caught:
        parse_s3_url(f"s3://chunks/x?{SECRET}=1")
    assert SECRET not in str(caught.value)


def test_endpoint_from_the_environment_obeys_the_same_rules(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PQSELFENC_S3_ENDPOINT", f"http://AKIA:{SECRET}@127.0.0.1:8333")
    with pytest.raises(ValueError, match="PQSELFENC_S3_ENDPOINT holds credentials") as caught:
        S3ChunkStore.from_url("s3://chunks/x")
    assert SECRET not in str(caught.value)
    monkeypatch.setenv("PQSELFENC_S3_ENDPOINT", "http://h/\n")
    with pytest.raises(ValueError, match="PQSELFENC_S3_ENDPOINT has the character"):
        S3ChunkStore.from_url("s3://chunks/x")


def test_the_constructor_checks_with_the_same_rules() -> None:
    for bad_prefix in ("dd//ss", "a/../b", "te\tam", "team#2"):
        with pytest.raises(ValueError):
            S3ChunkStore("chunks", bad_prefix)
    with pytest.raises(ValueError, match="credentials"):
        S3ChunkStore("chunks", "p", endpoint_url=f"http://k:{SECRET}@127.0.0.1:1")
    with pytest.raises(ValueError, match="timeout"):
        S3ChunkStore("chunks", "p", timeout=0)
    assert check_prefix("/a/b/") == "a/b/" and check_prefix("") == check_prefix("/") == ""
    assert check_bucket("a.b-c") == "a.b-c"
    assert check_endpoint("http://127.0.0.1:8333/") == "http://127.0.0.1:8333"


def test_a_prefix_fits_an_s3_key_with_the_chunk_name() -> None:
    assert check_prefix("a" * 959) == "a" * 959 + "/"
    with pytest.raises(ValueError, match="at most 959"):
        check_prefix("a" * 960)


def test_constructor_options_of_the_wrong_shape_are_refused() -> None:
    """``conditional_put="false"`` used to mean True (``bool()`` of a non-empty string)."""
    with pytest.raises(TypeError, match="conditional_put"):
        S3ChunkStore("chunks", "p", conditional_put="false")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="retry"):
        S3ChunkStore("chunks", "p", retry=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="region"):
        S3ChunkStore("chunks", "p", region="us east")


class _ListingClient:
    """A stand-in boto3 client whose listing pages are given (``client=`` takes any)."""

    def __init__(self, pages: list[dict[str, object]]) -> None:
        self.pages = pages

    def list_objects_v2(self, **request: object) -> dict[str, object]:
        return self.pages[min(len(self.pages) - 1, 0 if "ContinuationToken" not in request else 1)]

    def close(self) -> None:
        return None


def test_listing_skips_entries_of_the_wrong_shape_and_stops_on_a_looping_server() -> None:
    name = "ab" * 32
    odd = {"Contents": [{"Key": f"p/{name}"}, {}, {"Key": 7}, {"Key": f"q/{name}"}]}
    with S3ChunkStore("chunks", "p", client=_ListingClient([odd])) as store:
        assert [i.hex_name for i in store] == [name]  # a missing or odd Key was KeyError
    looping = {"Contents": [], "IsTruncated": True, "NextContinuationToken": "again"}
    refused = pytest.raises(ChunkStoreError, match="repeated a continuation token")
    with S3ChunkStore("chunks", "p", client=_ListingClient([looping, looping])) as store, refused:
        list(store)
