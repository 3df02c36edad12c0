"""Edges an operator hits with the ``pqselfenc`` command (issue 18): results never join the
data on stdout, map paths that collide are refused before any work, and every option value the
parser accepts either works or is refused with a clear message."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from _cli_helpers import Result, clean_env, run, run_process
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pqselfenc import DataMap, DirectoryChunkStore


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PQSELFENC_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PQSELFENC_STORE", raising=False)
    monkeypatch.chdir(tmp_path)


def write(path: Path, size: int) -> bytes:
    data = os.urandom(size)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def ok(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> Result:
    result = run(capsys, *argv)
    assert result.code == 0, result.err
    return result


# -- results never share a stream with data (18.1) ------------------------------------------------


def test_json_result_of_decrypt_to_stdout_goes_to_stderr(
    capsysbinary: pytest.CaptureFixture[bytes], tmp_path: Path
) -> None:
    from pqselfenc.cli import main

    data = write(tmp_path / "in.bin", 3000)
    assert main(["encrypt", "in.bin", "--store", "chunks", "-q"]) == 0
    capsysbinary.readouterr()
    assert main(["decrypt", "in.bin.map", "--store", "chunks", "--json", "--out", "-"]) == 0
    captured = capsysbinary.readouterr()
    assert captured.out == data  # byte for byte: nothing appended
    assert json.loads(captured.err.decode().splitlines()[-1]) == {
        "map": "in.bin.map", "out": "stdout", "bytes": 3000,
    }  # fmt: skip


def test_json_result_with_data_on_a_real_pipe(tmp_path: Path) -> None:
    data = write(tmp_path / "in.bin", 3000)
    env = clean_env(tmp_path / "home")
    assert run_process("encrypt", "in.bin", "--store", "s", env=env, cwd=tmp_path).returncode == 0
    done = run_process("decrypt", "in.bin.map", "--store", "s", "--json", env=env, cwd=tmp_path)
    assert done.returncode == 0 and done.stdout == data
    assert json.loads(done.stderr.decode().splitlines()[-1])["bytes"] == 3000


def test_public_key_on_stdout_carries_no_result(tmp_path: Path) -> None:
    env = clean_env(
        tmp_path / "home",
        PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
        PQSELFENC_PASSPHRASE="gravel orbit candle mosaic tundra",
    )
    assert run_process("keys", "generate", "a", "-q", env=env, cwd=tmp_path).returncode == 0
    done = run_process("keys", "export", "a", "--public", "--json", env=env, cwd=tmp_path)
    assert done.returncode == 0
    assert [x.split(":")[0] for x in done.stdout.decode().split()] == [
        "pqse-pub-x-wing", "pqse-sig-ml-dsa-65",
    ]  # fmt: skip


# -- map paths that collide (18.3) ----------------------------------------------------------------


def test_same_file_name_in_two_folders_is_refused_before_any_work(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    write(tmp_path / "x" / "a", 1000)
    write(tmp_path / "y" / "a", 1000)
    (tmp_path / "maps").mkdir()
    for force in ([], ["--force"]):
        result = run(capsys, "encrypt", "x/a", "y/a", "--out", "maps", "--store", "c", *force)
        assert result.code == 1
        assert "x/a and y/a would both write maps/a.map" in result.error_line()
        assert list((tmp_path / "maps").iterdir()) == []
        assert not (tmp_path / "c").exists()  # no chunk stored either


def test_the_same_input_twice_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    write(tmp_path / "d" / "a", 100)
    (tmp_path / "link").symlink_to(tmp_path / "d" / "a")
    os.link(tmp_path / "d" / "a", tmp_path / "hard")
    (tmp_path / "maps").mkdir()
    for other in ("d/a", "d/../d/a", "link", "hard", str(tmp_path / "d" / "a")):
        result = run(capsys, "encrypt", "d/a", other, "--out", "maps", "--store", "c")
        assert "is the same file as" in result.error_line(), other
    assert list((tmp_path / "maps").iterdir()) == []


def test_a_map_path_that_is_an_input_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = write(tmp_path / "a", 100)
    write(tmp_path / "a.map", 100)
    single = run(capsys, "encrypt", "a", "--out", "a", "--force", "--store", "c")
    assert "would overwrite the input a" in single.error_line()
    both = run(capsys, "encrypt", "a", "a.map", "--force", "--store", "c")  # a's map is a.map
    assert "would overwrite the input a.map" in both.error_line()
    (tmp_path / "l.map").symlink_to(tmp_path / "a")
    linked = run(capsys, "encrypt", "a", "--out", "l.map", "--force", "--store", "c")
    assert "would overwrite the input a" in linked.error_line()
    assert (tmp_path / "a").read_bytes() == data


def test_distinct_names_still_go_into_one_folder(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = {n: write(tmp_path / "src" / n, 500 + i) for i, n in enumerate(("a", "b", "a.b"))}
    (tmp_path / "maps").mkdir()
    ok(capsys, "encrypt", *(f"src/{n}" for n in data), "--out", "maps", "--store", "c")
    for name, content in data.items():
        ok(capsys, "decrypt", f"maps/{name}.map", "--store", "c", "--out", f"{name}.out")
        assert (tmp_path / f"{name}.out").read_bytes() == content


# -- every accepted option value works, or is refused clearly (18.11) ----------------------------


@pytest.mark.parametrize("size", ["65M", "64M", "1G"])
def test_large_chunk_sizes_the_parser_accepts_work(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, size: str
) -> None:
    """The default memory bound could not hold 4 chunks of 65 MiB: exit 70. The command now
    sizes its bound to the chunk size it was given (or the map it reads)."""
    data = write(tmp_path / "in.bin", 5000)
    ok(capsys, "encrypt", "in.bin", "--chunk-size", size, "--store", "c", "--out", "m")
    ok(capsys, "decrypt", "m", "--store", "c", "--out", "o")
    assert (tmp_path / "o").read_bytes() == data


def test_decrypt_sizes_memory_to_the_maps_chunks(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A map of 200 MiB chunks (more than the default bound holds twice) used to end in exit 70
    before a byte was fetched; now it is read like any map (here: its chunks are not there)."""
    from pqselfenc.core._store import ChunkInfo

    chunks = tuple(
        ChunkInfo(name=os.urandom(32), src_hash=os.urandom(32), src_size=200 << 20, index=i)
        for i in range(3)
    )
    (tmp_path / "m").write_bytes(DataMap(total_size=600 << 20, chunks=chunks).to_bytes())
    (tmp_path / "m").chmod(0o600)
    (tmp_path / "c").mkdir()
    result = run(capsys, "decrypt", "m", "--store", "c", "--out", "o")
    assert result.code == 1 and "is not in" in result.error_line()


def _sizes(numbers: st.SearchStrategy[int], units: list[str]) -> st.SearchStrategy[str]:
    return st.builds(lambda n, unit: f"{n}{unit}", numbers, st.sampled_from(units))


# Small inputs, every unit spelling; chunk sizes up to 80 MiB (above the old 51 MiB limit) and
# 2G (refused): a 1 GiB chunk buffer per example would be slow, the parametrized test has it.
SIZE_WORDS = st.one_of(
    _sizes(st.integers(0, 5000), ["", "B", "b", "iB", "x", " ", "KB "]),
    _sizes(st.integers(0, 80), ["K", "k", "KiB", "M", "MB", "Mi", "m"]),
    _sizes(st.sampled_from([0, 2, 3]), ["G", "GiB"]),
)
OPTIONS = st.fixed_dictionaries(
    {},
    optional={
        "--chunk-size": st.one_of(SIZE_WORDS, st.text(max_size=6)),
        "--compress": st.one_of(
            st.sampled_from(["zstd", "none", "lz4", "zstd:", "zstd:0", "zstd:22", "zstd:23"]),
            st.builds(lambda level: f"zstd:{level}", st.text(max_size=3)),
        ),
        "--threads": st.one_of(st.integers(-2, 300).map(str), st.text(max_size=3)),
    },
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(options=OPTIONS, size=st.integers(0, 700))
@example(options={"--chunk-size": "65M"}, size=10)  # issue 18.11: exit 70 before
@example(options={"--chunk-size": "52M", "--threads": "1"}, size=0)
@example(options={"--compress": "zstd:²"}, size=1)  # a digit to str.isdigit, not to int
@example(options={"--chunk-size": "²"}, size=1)
def test_every_accepted_option_value_works_or_is_refused_clearly(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, options: dict[str, str], size: int
) -> None:
    data = os.urandom(size)
    (tmp_path / "in.bin").write_bytes(data)
    argv = [w for pair in options.items() for w in pair]
    made = run(capsys, "encrypt", "in.bin", "--store", "c", "--out", "h.map", "--force", *argv)
    if made.code != 0:
        assert made.code in (1, 2), made.err
        made.error_line()  # one line (and a hint), no traceback, no internal error
        return
    (tmp_path / "h.out").unlink(missing_ok=True)
    back = run(capsys, "decrypt", "h.map", "--store", "c", "--out", "h.out", *argv[-2:] if
               "--threads" in options and argv[-2] == "--threads" else [])  # fmt: skip
    assert back.code == 0, back.err
    assert (tmp_path / "h.out").read_bytes() == data
    assert DataMap.from_bytes((tmp_path / "h.map").read_bytes()).total_size == size


def test_recipients_of_different_suites_are_a_clear_error_before_any_work(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One suite per envelope (docs/format.md 3.1): a mix was ValueError, exit 70."""
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
    monkeypatch.setenv("PQSELFENC_PASSPHRASE", "gravel orbit candle mosaic tundra")
    ok(capsys, "keys", "generate", "alice")
    ok(capsys, "keys", "generate", "bob", "--suite", "ml-kem-1024")
    write(tmp_path / "f", 100)
    mixed = run(capsys, "encrypt", "f", "--to", "alice", "--to", "bob", "--store", "c")
    assert mixed.code == 1
    assert mixed.error_line() == (
        "the recipients of one sealed map must share one KEM suite: "
        "alice (x-wing), bob (ml-kem-1024)"
    )
    assert not (tmp_path / "f.map").exists() and not (tmp_path / "c").exists()
    ok(capsys, "encrypt", "f", "--to", "bob", "--store", "c")  # one suite at a time works


# -- store names are read strictly (18.2 siblings) -------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("S3://bucket/p", "a URL pqselfenc does not know"),
        ("s3:/bucket/p", "a URL pqselfenc does not know"),
        ("s3:bucket", "a URL pqselfenc does not know"),
        ("https://bucket/p", "a URL pqselfenc does not know"),
        (" chunks", "starts or ends with a blank"),
        ("chunks ", "starts or ends with a blank"),
        ("chu\nnks", "control character '\\n'"),
        ("", "is empty"),
        ("s3://b/p", "a bucket name is 3 to 63"),
    ],
)
def test_a_store_name_that_is_not_understood_is_refused_before_anything_is_made(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    spec: str,
    message: str,
) -> None:
    """``--store S3://bucket/p`` used to make a local folder named ``S3:``."""
    write(tmp_path / "in.bin", 100)
    result = run(capsys, "encrypt", "in.bin", "--store", spec)
    assert result.code == 2 and message in result.error_line()
    assert result.error_line().startswith("--store")
    if spec:
        monkeypatch.setenv("PQSELFENC_STORE", spec)
        from_env = run(capsys, "encrypt", "in.bin")
        assert from_env.code == 2 and from_env.error_line().startswith("$PQSELFENC_STORE")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.bin"]


def test_an_empty_store_variable_counts_as_unset(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PQSELFENC_STORE", "")
    write(tmp_path / "in.bin", 100)
    ok(capsys, "encrypt", "in.bin")
    assert list(DirectoryChunkStore(tmp_path / "home" / "chunks"))
    ok(capsys, "encrypt", "in.bin", "--store", "./S3:odd folder", "--force")  # a folder, said so


def test_verify_of_an_empty_folder_store_says_so(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "empty").mkdir()
    result = run(capsys, "store", "verify", "--store", "empty")
    assert result.code == 1 and "lists no chunks" in result.error_line()
    ok(capsys, "store", "verify", "--store", "empty", "--allow-empty")


def test_option_values_that_used_to_be_guessed_at_are_usage_errors(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--out ''`` meant the current folder (``Path('')`` is ``.``); ``--last 10**20`` was
    OverflowError (exit 70); ``int()`` takes ``' 3'`` and ``'٣'``."""
    write(tmp_path / "in.bin", 100)
    empty = run(capsys, "encrypt", "in.bin", "--out", "", "--store", "c")
    assert empty.code == 2 and "an empty path" in empty.error_line()
    assert not (tmp_path / "in.bin.map").exists()
    for threads in ("٣", " 3", "3.0"):
        assert run(capsys, "encrypt", "in.bin", "--threads", threads, "--store", "c").code == 2
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
    monkeypatch.setenv("PQSELFENC_PASSPHRASE", "gravel orbit candle mosaic tundra")
    ok(capsys, "keys", "generate", "alice")
    assert run(capsys, "audit", "show", "--last", "1" + "0" * 20).code == 2
    assert run(capsys, "keys", "destroy", "alice", "--version", "-1", "--yes").code == 2
    ok(capsys, "audit", "show", "--last", "999999999999999999")


def test_encrypt_out_dash_is_a_usage_error_not_a_file_named_dash(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """``decrypt --out -`` is stdout; ``encrypt --out -`` used to write the unsealed map to a
    file named ``-``. Maps go to files only (docs/cli.md); ``./-`` still names such a file."""
    write(tmp_path / "in.bin", 100)
    for extra in ([], ["--scheduler", "tcp://127.0.0.1:9"]):
        dash = run(capsys, "encrypt", "in.bin", "--out", "-", "--store", "c", *extra)
        assert dash.code == 2, dash.err
        assert "argument --out: encrypt writes each map to a file, never to stdout" in (
            dash.error_line()
        )
        assert not (tmp_path / "-").exists() and not (tmp_path / "c").exists()
    ok(capsys, "encrypt", "in.bin", "--out", "./-", "--store", "c")
    assert DataMap.from_bytes((tmp_path / "-").read_bytes()).total_size == 100
