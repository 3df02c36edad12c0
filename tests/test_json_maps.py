"""The JSON form of a DataMap read as the hostile input it may be (docs/format.md 2.3, 2.5):
UTF-8 only, decoded strictly (review #1, finding 15: ``json.loads`` guessed UTF-16 and UTF-32
and skipped a UTF-8 byte-order mark), and bounded before it is parsed (finding 9: a 48 MiB file
of ``[],`` cost 1.28 GiB, 27 times its size, before any key was looked at)."""

from __future__ import annotations

import contextlib
import json
import os
import tracemalloc
from pathlib import Path

import pytest
from _cli_helpers import clean_env, run, run_with_peak_rss

from pqselfenc import ChunkInfo, DataMap
from pqselfenc.core import _primitives as P
from pqselfenc.error import InvalidDataError

INLINE = DataMap(total_size=5, inline=b"hello")
DOC = INLINE.to_json()


def _largest_honest_map() -> DataMap:
    """The largest top-level map a writer makes: MAX_MAP_ENTRIES entries of 10-digit sizes,
    a convergence secret id, zstd at level 22 (everything at its widest)."""
    piece = P.MAX_CHUNK_SIZE
    chunks = tuple(
        ChunkInfo(name=os.urandom(32), src_hash=os.urandom(32), src_size=piece)
        for _ in range(P.MAX_MAP_ENTRIES)
    )
    return DataMap(total_size=piece * len(chunks), chunks=chunks, compression=1, level=22,
                   secret_id=os.urandom(16))  # fmt: skip


def _peak(call: object) -> int:
    tracemalloc.start()
    try:
        with contextlib.suppress(InvalidDataError):
            call()  # type: ignore[operator]
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# -- finding 15: UTF-8, strictly -----------------------------------------------------------------


ENCODINGS = ["utf-16-le", "utf-16-be", "utf-16", "utf-32-le", "utf-32-be", "utf-32", "utf-8-sig"]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_json_map_in_another_encoding_is_refused(encoding: str) -> None:
    assert DataMap.from_json(DOC.encode()) == INLINE
    with pytest.raises(InvalidDataError, match="DataMap JSON"):
        DataMap.from_json(DOC.encode(encoding))


def test_bytes_that_are_not_utf8_are_refused_as_such() -> None:
    with pytest.raises(InvalidDataError, match="not UTF-8"):
        DataMap.from_json(DOC.encode().replace(b"none", b"n\xffne"))


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-32-le"])
def test_the_command_refuses_a_utf16_or_utf32_map(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    encoding: str,
) -> None:  # fmt: skip
    """These start with ``{`` then NUL bytes, so they are told apart as JSON maps (2.5) and
    used to decrypt: the review's repro printed ``hello`` for both."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "chunks").mkdir()
    (tmp_path / "m.map").write_bytes(DOC.encode(encoding))
    result = run(capsys, "decrypt", "m.map", "--store", "chunks", "--out", "out")
    assert result.code == 1
    assert "m.map: DataMap JSON does not parse" in result.error_line()
    assert not (tmp_path / "out").exists()


# -- finding 9: bounded before parsing -----------------------------------------------------------


def test_the_largest_honest_json_map_is_well_inside_the_bounds() -> None:
    big = _largest_honest_map()
    text = big.to_json()
    wide = json.dumps(json.loads(text), indent=8)  # a person's editor may indent more
    assert 4 * len(text) < P.MAX_MAP_JSON_SIZE and len(wide) < P.MAX_MAP_JSON_SIZE
    assert DataMap.from_json(wide.encode()) == big


@pytest.mark.parametrize("mib", [4, 8, 48])
def test_a_json_map_larger_than_any_writer_makes_is_refused_unparsed(mib: int) -> None:
    hostile = b'{"chunks":[' + b"[]," * ((mib << 20) // 3) + b"[]]}"
    with pytest.raises(InvalidDataError, match="larger than any map a writer makes"):
        DataMap.from_json(hostile)
    assert _peak(lambda: DataMap.from_json(hostile)) < 1 << 20  # nothing parsed, nothing copied


@pytest.mark.parametrize("unit", [b"[],", b'"ab",', b"1.5,", b"{},"])
def test_many_small_values_under_the_size_bound_are_refused_unparsed(unit: bytes) -> None:
    """Under the size bound, a file of tiny values still cost 10-27 times its size once parsed
    (a Python object per value): a map has at most a few values per entry, so more is refused
    from a count of the separators, before ``json.loads``."""
    hostile = b'{"chunks":[' + unit * ((P.MAX_MAP_JSON_SIZE - 64) // len(unit)) + b"0]}"
    assert len(hostile) <= P.MAX_MAP_JSON_SIZE
    with pytest.raises(InvalidDataError, match="more values than any map"):
        DataMap.from_json(hostile)
    assert _peak(lambda: DataMap.from_json(hostile)) < 1 << 20


def test_a_hostile_json_at_the_bounds_costs_a_few_times_its_size() -> None:
    """The worst that still gets parsed: as many values as allowed, each as large as the size
    bound lets it be."""
    count = P.MAX_MAP_JSON_VALUES - 8
    unit = max(1, (P.MAX_MAP_JSON_SIZE - 64) // count - 3)
    hostile = ('{"chunks":[' + ",".join(['"' + "a" * unit + '"'] * count) + "]}").encode()
    assert len(hostile) <= P.MAX_MAP_JSON_SIZE
    assert _peak(lambda: DataMap.from_json(hostile)) < 4 * P.MAX_MAP_JSON_SIZE


def test_the_command_reads_little_of_a_huge_json_map(tmp_path: Path) -> None:
    """The review's repro (48 MiB of ``[],``): the command refuses it from its size, reading
    only its first bytes, in a process whose peak RSS stays near an idle one's."""
    (tmp_path / "chunks").mkdir()
    hostile = tmp_path / "hostile.map"
    with hostile.open("wb") as f:
        f.write(b'{"chunks":[' + b"[]," * ((48 << 20) // 3) + b"[]]}")
    (tmp_path / "tiny.map").write_bytes(b"not a map")
    env = clean_env(tmp_path / "home")
    idle, refused = run_with_peak_rss(["decrypt", "tiny.map", "--store", "chunks"], env, tmp_path)
    assert b"is not a pqselfenc map" in refused.stderr
    argv = ["decrypt", str(hostile), "--store", "chunks", "--out", "out"]
    rss, done = run_with_peak_rss(argv, env, tmp_path)
    assert done.returncode == 1, done.stderr
    assert b"not a pqselfenc map: larger than any JSON map" in done.stderr
    assert rss < idle + (8 << 20), (rss >> 20, idle >> 20)
