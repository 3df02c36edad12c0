"""The ``pqselfenc`` command in-process: encrypt/decrypt, store verify|stats|gc, output rules."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest
from _cli_helpers import FakeTerminal, Result, run

from pqselfenc import DataMap, DirectoryChunkStore
from pqselfenc.cli import _encrypt, main
from pqselfenc.core._primitives import MAX_MAP_ENTRIES
from pqselfenc.core.stores import directory

CHUNK = 64
SIZES = [0, 1, 2, 3, CHUNK - 1, 3 * CHUNK, 3 * CHUNK + 1, 10 * CHUNK + 7]


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PQSELFENC_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PQSELFENC_STORE", raising=False)
    monkeypatch.chdir(tmp_path)


def write(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.write_bytes(data)
    return data


def encrypt(capsys: pytest.CaptureFixture[str], *args: str | Path) -> Result:
    return run(capsys, "encrypt", *args, "--store", "chunks", "--chunk-size", str(CHUNK))


def decrypt(capsys: pytest.CaptureFixture[str], *args: str | Path) -> Result:
    return run(capsys, "decrypt", *args, "--store", "chunks")


# -- round trips ---------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_encrypt_then_decrypt_round_trips(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, size: int
) -> None:
    data = write(tmp_path / "in.bin", size)
    assert encrypt(capsys, "in.bin", "--out", "in.map").code == 0
    assert decrypt(capsys, "in.map", "--out", "out.bin").code == 0
    assert (tmp_path / "out.bin").read_bytes() == data


def test_unsealed_map_is_0600_with_a_one_line_warning(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    write(tmp_path / "in.bin", 1000)
    result = encrypt(capsys, "in.bin")
    assert result.code == 0
    assert stat.S_IMODE((tmp_path / "in.bin.map").stat().st_mode) == 0o600
    warnings = [x for x in result.err.splitlines() if x.startswith("pqselfenc: warning:")]
    assert len(warnings) == 1 and "unsealed" in warnings[0] and "in.bin.map" in warnings[0]
    assert DataMap.from_bytes((tmp_path / "in.bin.map").read_bytes()).total_size == 1000


def test_default_store_is_a_folder_in_the_home(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = write(tmp_path / "in.bin", 5000)
    assert run(capsys, "encrypt", "in.bin").code == 0
    assert list(DirectoryChunkStore(tmp_path / "home" / "chunks"))
    assert run(capsys, "decrypt", "in.bin.map", "--out", "out.bin").code == 0
    assert (tmp_path / "out.bin").read_bytes() == data


def test_store_from_environment(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PQSELFENC_STORE", str(tmp_path / "envstore"))
    data = write(tmp_path / "in.bin", 700)
    assert run(capsys, "encrypt", "in.bin").code == 0
    assert list(DirectoryChunkStore(tmp_path / "envstore"))
    assert run(capsys, "decrypt", "in.bin.map", "--out", "out.bin").code == 0
    assert (tmp_path / "out.bin").read_bytes() == data


def test_several_files_into_a_map_folder(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    datas = {name: write(tmp_path / name, 300 + i) for i, name in enumerate(["a", "b", "c"])}
    (tmp_path / "maps").mkdir()
    result = encrypt(capsys, "a", "b", "c", "--out", "maps", "--json")
    doc = json.loads(result.out)
    assert [d["map"] for d in doc["encrypted"]] == [f"maps/{n}.map" for n in datas]
    for name, data in datas.items():
        assert decrypt(capsys, f"maps/{name}.map", "--out", f"{name}.out").code == 0
        assert (tmp_path / f"{name}.out").read_bytes() == data


def test_several_files_need_a_folder(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    write(tmp_path / "a", 10)
    write(tmp_path / "b", 10)
    assert "not a folder" in encrypt(capsys, "a", "b", "--out", "x.map").error_line()
    assert not (tmp_path / "chunks").exists()


def test_compression_and_threads_round_trip(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = b"compressible " * 2000
    (tmp_path / "in.txt").write_bytes(data)
    result = encrypt(capsys, "in.txt", "--compress", "zstd:5", "--threads", "2", "--json")
    assert result.code == 0
    data_map = DataMap.from_bytes((tmp_path / "in.txt.map").read_bytes())
    assert data_map.pipeline_name == "zstd:5"
    assert decrypt(capsys, "in.txt.map", "--out", "out.txt", "--threads", "2").code == 0
    assert (tmp_path / "out.txt").read_bytes() == data


def test_json_map_is_accepted(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = write(tmp_path / "in.bin", 999)
    encrypt(capsys, "in.bin")
    text = DataMap.from_bytes((tmp_path / "in.bin.map").read_bytes()).to_json()
    (tmp_path / "in.json").write_text(text)
    assert decrypt(capsys, "in.json", "--out", "out.bin").code == 0
    assert (tmp_path / "out.bin").read_bytes() == data


@pytest.mark.parametrize(("offset", "length"), [(0, 0), (0, 1), (63, 2), (100, 500), (640, 99)])
def test_decrypt_range(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, offset: int, length: int
) -> None:
    data = write(tmp_path / "in.bin", 10 * CHUNK + 7)
    encrypt(capsys, "in.bin")
    assert decrypt(capsys, "in.bin.map", "--range", f"{offset}:{length}", "--out", "r").code == 0
    assert (tmp_path / "r").read_bytes() == data[offset : offset + length]


def test_hierarchical_map_round_trips_is_fully_referenced_and_protects_gc(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = write(tmp_path / "big", (MAX_MAP_ENTRIES + 100) * CHUNK)
    assert encrypt(capsys, "big", "--json").code == 0
    parent = DataMap.from_bytes((tmp_path / "big.map").read_bytes())
    assert parent.child == 1
    assert decrypt(capsys, "big.map", "--out", "big.out").code == 0
    assert (tmp_path / "big.out").read_bytes() == data
    stats = json.loads(run(capsys, "store", "stats", "big.map", "--store", "chunks", "--json").out)
    assert stats["referenced"] == stats["chunks"] > MAX_MAP_ENTRIES + 100
    assert stats["unreferenced"] == stats["missing"] == 0
    # Without a parent-level chunk the leaf level cannot be read: gc must delete nothing.
    store = DirectoryChunkStore(tmp_path / "chunks")
    store.delete(parent.chunks[0])
    result = run(capsys, "store", "gc", "big.map", "--store", "chunks", "--delete")
    assert "cannot follow every level of big.map" in result.error_line()
    assert len(list(store)) == stats["chunks"] - 1
    stats = run(capsys, "store", "stats", "big.map", "--store", "chunks", "--json")
    assert stats.code == 1 and json.loads(stats.out)["incomplete"] == ["big.map"]


# -- stdout and terminals ------------------------------------------------------------------------


def test_decrypt_to_stdout_when_it_is_not_a_terminal(
    capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path
) -> None:
    data = write(tmp_path / "in.bin", 500)
    assert main(["encrypt", "in.bin", "--store", "chunks"]) == 0
    capsysbinary.readouterr()
    assert main(["decrypt", "in.bin.map", "--store", "chunks"]) == 0
    assert capsysbinary.readouterr().out == data


def test_binary_is_never_written_to_a_terminal(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "in.bin", 500)
    encrypt(capsys, "in.bin")
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stdout", terminal)
    result = decrypt(capsys, "in.bin.map")
    assert "terminal" in result.error_line()
    assert terminal.buffer.getvalue() == b"" and terminal.getvalue() == ""


def test_progress_bar_only_on_a_terminal(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path / "in.bin", 5000)
    assert "encrypt in.bin" not in encrypt(capsys, "in.bin").err  # captured: not a terminal
    out, err = FakeTerminal(), FakeTerminal()
    monkeypatch.setattr(sys, "stdout", out)
    monkeypatch.setattr(sys, "stderr", err)
    assert main(["encrypt", "in.bin", "--store", "chunks", "--force"]) == 0
    assert "encrypt in.bin:   0%" in err.getvalue()
    err.truncate(0)
    assert main(["encrypt", "in.bin", "--store", "chunks", "--force", "--quiet"]) == 0
    assert "encrypt in.bin" not in err.getvalue()


def test_json_results_are_one_object(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    write(tmp_path / "in.bin", 1234)
    doc = json.loads(encrypt(capsys, "in.bin", "--json").out)
    assert doc["encrypted"][0] | {"map": "x"} == {
        "input": "in.bin", "map": "x", "sealed": False, "recipients": [], "size": 1234,
        "chunks": 20, "levels": 1, "escrow": [],
    }  # fmt: skip
    doc = json.loads(decrypt(capsys, "in.bin.map", "--out", "o", "--json").out)
    assert doc == {"map": "in.bin.map", "out": "o", "bytes": 1234}


# -- failures leave nothing behind ---------------------------------------------------------------


def test_store_failing_halfway_leaves_input_and_no_map(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write(tmp_path / "in.bin", 10 * CHUNK)
    real_write, calls = os.write, []

    def flaky(fd: int, chunk: bytes) -> int:  # the directory store writes chunks with os.write
        calls.append(1)
        if len(calls) == 4:
            raise OSError(28, "No space left on device")
        return real_write(fd, chunk)

    monkeypatch.setattr(directory.os, "write", flaky)
    result = encrypt(capsys, "in.bin")
    assert "No space left" in result.error_line()
    assert (tmp_path / "in.bin").read_bytes() == data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chunks", "in.bin"]
    store = DirectoryChunkStore(tmp_path / "chunks")
    assert all(store.retrieve(info) for info in store)  # what is named is whole
    assert list((tmp_path / "chunks").glob("*/.tmp-*")) == []


def test_failed_decrypt_leaves_no_output(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    write(tmp_path / "in.bin", 10 * CHUNK)
    encrypt(capsys, "in.bin")
    store = DirectoryChunkStore(tmp_path / "chunks")
    victim = DataMap.from_bytes((tmp_path / "in.bin.map").read_bytes()).chunks[7]
    path = store.path_of(victim)
    stored = path.read_bytes()
    path.write_bytes(bytes([stored[0] ^ 1]) + stored[1:])  # a changed byte, whatever it was
    result = decrypt(capsys, "in.bin.map", "--out", "out.bin")
    assert "does not match its name" in result.error_line()
    assert "store verify" in result.err  # the hint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chunks", "in.bin", "in.bin.map"]


def test_existing_outputs_need_force(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = write(tmp_path / "in.bin", 100)
    encrypt(capsys, "in.bin")
    (tmp_path / "out.bin").write_bytes(b"keep me")
    assert "already exists" in encrypt(capsys, "in.bin").error_line()
    assert "already exists" in decrypt(capsys, "in.bin.map", "--out", "out.bin").error_line()
    assert (tmp_path / "out.bin").read_bytes() == b"keep me"
    assert decrypt(capsys, "in.bin.map", "--out", "out.bin", "--force").code == 0
    assert (tmp_path / "out.bin").read_bytes() == data


# -- one-line errors -----------------------------------------------------------------------------


def test_missing_or_odd_input_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert encrypt(capsys, "nope.bin").error_line() == "input file nope.bin does not exist"
    assert encrypt(capsys, ".").error_line() == "input file . is not a regular file"
    assert encrypt(capsys, "/dev/null").error_line() == "input file /dev/null is not a regular file"
    assert not (tmp_path / "chunks").exists()


def test_missing_or_unreadable_store(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    write(tmp_path / "in.bin", 100)
    encrypt(capsys, "in.bin")
    result = run(capsys, "decrypt", "in.bin.map", "--store", "elsewhere", "--out", "o")
    assert result.error_line() == "no chunk store at elsewhere"
    assert not (tmp_path / "elsewhere").exists()
    (tmp_path / "afile").write_bytes(b"x")
    result = run(capsys, "decrypt", "in.bin.map", "--store", "afile", "--out", "o")
    assert result.error_line() == "chunk store afile is not a directory"
    assert "not a directory" in run(capsys, "encrypt", "in.bin", "--store", "afile", "--force").err


def test_store_missing_a_chunk(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    write(tmp_path / "in.bin", 1000)
    encrypt(capsys, "in.bin")
    store = DirectoryChunkStore(tmp_path / "chunks")
    store.delete(next(iter(store)))
    result = decrypt(capsys, "in.bin.map", "--out", "o")
    assert "is not in" in result.error_line() and "--store" in result.err


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "is not a pqselfenc map"),
        (b"hello world", "is not a pqselfenc map"),
        (b"PQSEMAP\x00\x01", "invalid DataMap: truncated"),
        (b'{"format": 1}', "invalid DataMap: JSON has wrong keys"),
    ],
)
def test_corrupted_map(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: bytes, expected: str
) -> None:
    (tmp_path / "bad.map").write_bytes(content)
    (tmp_path / "chunks").mkdir()
    assert expected in decrypt(capsys, "bad.map", "--out", "o").error_line()
    assert not (tmp_path / "o").exists()


def test_map_with_a_flipped_entry_fails_integrity(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    write(tmp_path / "in.bin", 1000)
    encrypt(capsys, "in.bin")
    raw = bytearray((tmp_path / "in.bin.map").read_bytes())
    raw[-10] ^= 1  # inside the last entry's name
    (tmp_path / "in.bin.map").write_bytes(bytes(raw))
    assert decrypt(capsys, "in.bin.map", "--out", "o").code == 1
    assert not (tmp_path / "o").exists()


def test_usage_errors_are_one_line_with_a_hint(capsys: pytest.CaptureFixture[str]) -> None:
    result = run(capsys, "encrypt")
    assert result.code == 2
    assert "required" in result.error_line()
    assert "pqselfenc: hint: see 'pqselfenc encrypt --help'" in result.err
    assert run(capsys, "decrypt", "m", "--range", "x").code == 2
    assert "unknown-command" in run(capsys, "unknown-command").error_line()
    extra = run(capsys, "store", "gc", "x.map", "--bogus")
    assert extra.code == 2 and "pqselfenc: hint: see 'pqselfenc store gc --help'" in extra.err


def test_bad_option_values(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    write(tmp_path / "in.bin", 10)
    assert "unknown compression" in encrypt(capsys, "in.bin", "--compress", "lz4").error_line()
    assert "chunk_size" in run(capsys, "encrypt", "in.bin", "--chunk-size", "0").error_line()
    assert "max_threads" in encrypt(capsys, "in.bin", "--threads", "0").error_line()


def test_bug_is_internal_error_without_traceback(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> object:
        raise RuntimeError("secret-looking detail")

    monkeypatch.setattr(_encrypt, "encrypt_file", broken)
    write(tmp_path / "in.bin", 10)
    result = encrypt(capsys, "in.bin")
    assert result.code == 70
    assert result.error_line().startswith("internal error (RuntimeError)")
    assert "secret-looking" not in result.err


def test_interrupt_exits_130(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(*args: object, **kwargs: object) -> object:
        raise KeyboardInterrupt

    monkeypatch.setattr(_encrypt, "encrypt_file", interrupted)
    write(tmp_path / "in.bin", 10)
    result = encrypt(capsys, "in.bin")
    assert result.code == 130 and "interrupted" in result.error_line()
    assert not (tmp_path / "in.bin.map").exists()


def test_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "--version").out.startswith("pqselfenc ")
    top = run(capsys, "--help")
    assert top.code == 0
    for command in ("encrypt", "decrypt", "store"):
        assert command in top.out
    assert "--range" in run(capsys, "decrypt", "--help").out
    assert "--delete" in run(capsys, "store", "gc", "--help").out


# -- store verify / stats / gc -------------------------------------------------------------------


def test_store_verify_finds_damaged_chunks(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    write(tmp_path / "in.bin", 5 * CHUNK)
    encrypt(capsys, "in.bin")
    ok = run(capsys, "store", "verify", "--store", "chunks", "--json")
    assert ok.code == 0 and json.loads(ok.out) == {"store": "chunks", "chunks": 5, "bad": []}
    store = DirectoryChunkStore(tmp_path / "chunks")
    victim = sorted(store, key=lambda i: i.name)[2]
    store.path_of(victim).write_bytes(b"tampered")
    bad = run(capsys, "store", "verify", "--store", "chunks", "--json")
    assert "1 of 5 chunks do not match" in bad.error_line()
    assert json.loads(bad.out)["bad"] == [
        {"chunk": victim.name[:4].hex(), "problem": "content does not match its name"}
    ]


def test_gc_reports_then_deletes_only_unreferenced(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    keep = write(tmp_path / "keep.bin", 4 * CHUNK)
    write(tmp_path / "drop.bin", 6 * CHUNK)
    encrypt(capsys, "keep.bin", "drop.bin", "--out", ".")
    dry = json.loads(run(capsys, "store", "gc", "keep.bin.map", "--store", "chunks", "--json").out)
    assert (dry["chunks"], dry["referenced"], dry["unreferenced"]) == (10, 4, 6)
    assert len(list(DirectoryChunkStore(tmp_path / "chunks"))) == 10
    # --grace 0: the chunks were written a moment ago (the default keeps them for 24 h)
    gone = run(capsys, "store", "gc", "keep.bin.map", "--store", "chunks", "--delete", "--grace=0")
    assert gone.code == 0 and "deleted 6 of 10 chunks" in gone.out
    assert len(list(DirectoryChunkStore(tmp_path / "chunks"))) == 4
    assert decrypt(capsys, "keep.bin.map", "--out", "k").code == 0
    assert (tmp_path / "k").read_bytes() == keep
    assert decrypt(capsys, "drop.bin.map", "--out", "d").code == 1


def test_gc_refuses_an_unreadable_map(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    write(tmp_path / "in.bin", 4 * CHUNK)
    encrypt(capsys, "in.bin")
    (tmp_path / "junk.map").write_bytes(b"junk")
    result = run(capsys, "store", "gc", "in.bin.map", "junk.map", "--store", "chunks", "--delete")
    assert "junk.map is not a pqselfenc map" in result.error_line()
    assert len(list(DirectoryChunkStore(tmp_path / "chunks"))) == 4


def test_the_cli_uses_only_the_public_api_of_keys_and_kem() -> None:
    """The CLI is a thin layer: it reaches the key store and the envelope through their public
    names (e.g. ``KeyStore.backend_of``), never their private modules."""
    import ast

    import pqselfenc.cli

    private = []
    for path in Path(pqselfenc.cli.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            for name in names:
                if name.startswith(("pqselfenc.keys._", "pqselfenc.kem._")):
                    private.append(f"{path.name}: {name}")
    assert private == []
