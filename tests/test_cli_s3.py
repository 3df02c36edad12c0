"""``--store s3://bucket/prefix``: the same commands against a real S3 server (SeaweedFS)."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
from _cli_helpers import run
from _s3server import S3Server, s3_server  # noqa: F401  (s3_server is a fixture)

pytestmark = pytest.mark.s3


@pytest.fixture
def url(
    s3_server: S3Server,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> str:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PQSELFENC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.setenv("PQSELFENC_S3_ENDPOINT", s3_server.endpoint)
    monkeypatch.setenv("AWS_DEFAULT_REGION", s3_server.region)
    return f"s3://{s3_server.bucket}/cli-{uuid.uuid4().hex}"


def test_encrypt_decrypt_verify_gc_on_s3(capsys: pytest.CaptureFixture[str], url: str) -> None:
    data = os.urandom(300_000)
    Path("in.bin").write_bytes(data)
    Path("other.bin").write_bytes(os.urandom(1000))
    assert run(capsys, "encrypt", "in.bin", "other.bin", "--store", url, "--chunk-size", "64K",
               "--out", ".").code == 0  # fmt: skip
    assert run(capsys, "decrypt", "in.bin.map", "--store", url, "--out", "out.bin").code == 0
    assert Path("out.bin").read_bytes() == data
    part = run(capsys, "decrypt", "in.bin.map", "--store", url, "--range", "70000:10", "--out", "r")
    assert part.code == 0 and Path("r").read_bytes() == data[70000:70010]
    verified = json.loads(run(capsys, "store", "verify", "--store", url, "--json").out)
    assert verified["chunks"] == 8 and verified["bad"] == []
    gc = run(capsys, "store", "gc", "in.bin.map", "--store", url, "--delete", "--grace", "0",
             "--json")  # fmt: skip
    assert json.loads(gc.out)["unreferenced"] == 3
    stats = json.loads(run(capsys, "store", "stats", "in.bin.map", "--store", url, "--json").out)
    assert (stats["chunks"], stats["referenced"], stats["missing"]) == (5, 5, 0)


def test_bad_s3_urls_are_one_line_errors(capsys: pytest.CaptureFixture[str], url: str) -> None:
    Path("in.bin").write_bytes(b"x" * 100)
    result = run(capsys, "encrypt", "in.bin", "--store", "s3://")
    assert "s3://BUCKET/PREFIX" in result.error_line()
    result = run(capsys, "encrypt", "in.bin", "--store", "s3://no-such-bucket-here/p", "--force")
    assert result.code == 1 and result.error_line()
    assert not Path("in.bin.map").exists()


@pytest.mark.parametrize("suffix", ["#2", "?", "\t", "\n", "/", "//x", "/../team"])
def test_urls_that_used_to_mean_another_teams_prefix_are_refused(
    capsys: pytest.CaptureFixture[str], url: str, suffix: str
) -> None:
    """``s3://chunks/team#2``, ``team?`` and ``te<TAB>am`` all meant ``team/``, and
    ``store gc --delete`` on one of them deleted the other team's live chunks."""
    Path("mine.bin").write_bytes(os.urandom(5000))
    Path("theirs.bin").write_bytes(os.urandom(5000))
    assert run(capsys, "encrypt", "mine.bin", "--store", url, "-q").code == 0
    assert run(capsys, "encrypt", "theirs.bin", "--store", url, "-q").code == 0
    if suffix == "/":  # a trailing slash is the same prefix, said differently
        same = run(capsys, "store", "gc", "mine.bin.map", "--store", url + suffix, "--json")
        assert json.loads(same.out)["unreferenced"] == 3
        return
    other = url[:-3] + suffix + url[-3:] if suffix in ("\t", "\n") else url + suffix
    gc = run(capsys, "store", "gc", "mine.bin.map", "--store", other, "--delete")
    assert gc.code == 2 and gc.error_line().startswith("--store")
    decrypted = run(capsys, "decrypt", "theirs.bin.map", "--store", url, "--out", "t")
    assert decrypted.code == 0 and Path("t").read_bytes() == Path("theirs.bin").read_bytes()


def test_a_doubled_slash_is_refused_and_an_empty_listing_is_an_error(
    capsys: pytest.CaptureFixture[str], url: str, s3_server: S3Server  # noqa: F811
) -> None:
    """SeaweedFS stores ``dd//ss`` under ``dd/ss/``: listing ``dd//ss/`` found nothing and
    ``store verify`` said 0 of 0 verified, exit 0, while the data was there."""
    Path("in.bin").write_bytes(os.urandom(3000))
    doubled = url + "//ss"
    refused = run(capsys, "encrypt", "in.bin", "--store", doubled)
    assert refused.code == 2 and "empty part" in refused.error_line()
    nothing = run(capsys, "store", "verify", "--store", url + "/nothing-here", "--json")
    assert nothing.code == 1 and "lists no chunks" in nothing.error_line()
    assert json.loads(nothing.out)["chunks"] == 0
    allowed = run(capsys, "store", "verify", "--store", url + "/nothing-here", "--allow-empty")
    assert allowed.code == 0 and "0 of 0 chunks verified" in allowed.out


def test_results_name_the_store_canonically_and_never_hold_credentials(
    capsys: pytest.CaptureFixture[str], url: str, s3_server: S3Server  # noqa: F811
) -> None:
    Path("in.bin").write_bytes(os.urandom(3000))
    spaced = f"{url}/?region={s3_server.region}&endpoint={s3_server.endpoint}"
    done = run(capsys, "encrypt", "in.bin", "--store", spaced, "--json")
    store = json.loads(done.out)["store"]
    assert store == f"{url}/?endpoint={s3_server.endpoint}&region={s3_server.region}"
    host = s3_server.endpoint.removeprefix("http://")
    secret = f"http://{s3_server.access_key}:{s3_server.secret_key}@{host}"
    for spec in (f"{url}?endpoint={secret}", f"s3://{s3_server.access_key}:x@{url[5:]}"):
        leaked = run(capsys, "store", "verify", "--store", spec, "--json")
        assert leaked.code == 2 and "credentials do not belong" in leaked.error_line()
        assert s3_server.secret_key not in leaked.out + leaked.err
        assert s3_server.access_key not in leaked.out + leaked.err


def test_an_endpoint_variable_with_credentials_is_refused_unechoed(
    capsys: pytest.CaptureFixture[str],
    url: str,
    s3_server: S3Server,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    host = s3_server.endpoint.removeprefix("http://")
    monkeypatch.setenv(
        "PQSELFENC_S3_ENDPOINT", f"http://{s3_server.access_key}:{s3_server.secret_key}@{host}"
    )
    result = run(capsys, "store", "verify", "--store", url)
    assert "PQSELFENC_S3_ENDPOINT holds credentials" in result.error_line()
    assert s3_server.secret_key not in result.out + result.err
