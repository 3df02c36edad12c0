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
