"""Claimed sizes never drive allocation (issue 11, item 6).

A map's sizes are bounded by what a writer produces (a piece is at most ``MAX_SRC_SIZE``, the
entries follow the chunking policy, a parent level holds one serialized map), and zstd bodies
are decompressed as a stream with a hard cap, keeping only the part of a chunk a range needs.
The hostile corpus (tests/fuzz/hostile_corpus.py: the issue's 93-byte map with its 12 KB chunk,
its 297-byte parent map, and variants) runs in a child process whose peak RSS must stay under
64 MiB; before the fix the first went to 417 MiB and the second to 3 GiB.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from pqselfenc import ChunkInfo, DataMap, EncryptedChunk, SelfEncryptor
from pqselfenc.core import _primitives as P
from pqselfenc.core._chunking import Layout
from pqselfenc.core.config import ChunkConfig
from pqselfenc.error import Error, IntegrityError, InvalidDataError

FUZZ = Path(__file__).resolve().parent / "fuzz"
sys.path.insert(0, str(FUZZ))

import hostile_corpus as H  # noqa: E402

MIB = 1 << 20


def run_corpus(*flags: str) -> tuple[list[dict[str, object]], float]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, str(FUZZ / "hostile_corpus.py"), *flags],
        capture_output=True, text=True, timeout=300, env=env, check=True,
    )  # fmt: skip
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    return [x for x in lines if "case" in x], float(lines[-1]["peak_rss_mib"])


def test_hostile_corpus_stays_under_64_MiB() -> None:
    cases, peak = run_corpus()
    assert {c["case"] for c in cases} >= {"issue-93-byte-map-v1", "issue-297-byte-parent"}
    wrong = [c for c in cases if c["got"] != c["expect"]]
    assert not wrong, wrong
    assert peak < H.RSS_LIMIT_MIB, cases


def test_ultra_level_frames_are_bounded_by_their_window() -> None:
    """zstd levels 20..22 may use a 128 MiB window (an honest level-22 writer of large chunks
    does): a hostile map at such a level costs that window, and never the 384 MiB it inflates
    to nor the claimed size."""
    cases, peak = run_corpus("--ultra")
    assert [c["got"] for c in cases] == [c["expect"] for c in cases]
    assert peak < H.RSS_LIMIT_MIB + H.ULTRA_WINDOW_MIB


def test_the_corpus_frames_are_valid_zstd() -> None:
    """The hostile frames are what zstd itself accepts (not just malformed bytes)."""
    frame = H.rle_frame(3 * MIB, fcs=3 * MIB, window_log=21)
    assert zstandard.ZstdDecompressor().decompress(frame) == bytes(3 * MIB)
    params = zstandard.get_frame_parameters(H.rle_frame(MIB, fcs=None, window_log=27, blocks=1))
    assert (params.content_size, params.window_size) == (zstandard.CONTENTSIZE_UNKNOWN, 1 << 27)
    assert len(H.rle_frame(384 * MIB, fcs=384 * MIB, window_log=21)) < 13_000  # the 12 KB


def peak_bytes(call: object) -> int:
    tracemalloc.start()
    try:
        with contextlib.suppress(Error):
            call()  # type: ignore[operator]
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("action", ["read_range", "iter_range"])
def test_reading_one_byte_of_a_large_chunk_keeps_one_byte(action: str) -> None:
    """An honest 64 MiB chunk of zeros (zstd: a few KB): a one-byte range decompresses,
    hashes and checks all of it, but holds only the zstd window, not the chunk."""
    n = 64 * MIB
    case = H.one_chunk_case("zeros", H.zstd_body(H.rle_frame(n, fcs=n, window_log=21)), n,
                            "ok:1", src_hash=H.zero_hash(n), action=action)  # fmt: skip
    assert H.run(case) == "ok:1"
    reader = SelfEncryptor.from_data_map(
        DataMap.from_bytes(case.map_bytes), [EncryptedChunk(k, v) for k, v in case.chunks.items()]
    )
    call = reader.read_range if action == "read_range" else reader.iter_range
    assert peak_bytes(lambda: b"".join([call(n - 5, 3)]) if action == "read_range"
                      else b"".join(call(n - 5, 3))) < 4 * MIB  # fmt: skip
    assert reader.read_range(n - 5, 3) == bytes(3)


CLAIMS = ["no-content-size-claims-1GiB", "frame-declares-2^40", "unfinished-frame-claims-1GiB",
          "second-frame-inflates"]  # fmt: skip


@pytest.mark.parametrize("name", CLAIMS)
def test_a_claimed_size_allocates_nothing(name: str) -> None:
    case = next(c for c in H._claims() if c.name == name)
    assert H.run(case) == "IntegrityError"
    reader = SelfEncryptor.from_data_map(
        DataMap.from_bytes(case.map_bytes), [EncryptedChunk(k, v) for k, v in case.chunks.items()]
    )
    with pytest.raises(IntegrityError, match=r"^chunk 0 \("):
        reader.decrypt()
    assert peak_bytes(reader.decrypt) < 4 * MIB


# -- what the parser bounds ----------------------------------------------------------------------


def entries(sizes: list[int]) -> tuple[ChunkInfo, ...]:
    return tuple(ChunkInfo(name=bytes(32), src_hash=bytes(32), src_size=s) for s in sizes)


def layout_sizes(total: int, chunk_size: int, min_chunks: int) -> list[int]:
    layout = Layout.of(total, ChunkConfig(chunk_size, min_chunks))
    return [layout.size(i) for i in range(layout.count)]


@settings(max_examples=300, deadline=None)
@given(
    total=st.integers(1, 5000),
    chunk_size=st.integers(1, 600),
    min_chunks=st.integers(1, P.MAX_MIN_CHUNKS),
)
def test_every_layout_a_writer_makes_parses(total: int, chunk_size: int, min_chunks: int) -> None:
    sizes = layout_sizes(total, chunk_size, min_chunks)
    if not sizes or len(sizes) > 500:
        return
    m = DataMap(total, entries(sizes))
    assert DataMap.from_bytes(m.to_bytes()) == m


def test_the_largest_pieces_a_writer_makes_parse() -> None:
    top = P.MAX_CHUNK_SIZE
    for total, m in [(top * 255 - 1, 255), (top, 1), (2 * top + 7, 3)]:
        sizes = layout_sizes(total, top, m)
        assert max(sizes) <= P.MAX_SRC_SIZE
        DataMap(total, entries(sizes))
    assert max(layout_sizes(top * 255 - 1, top, 255)) == P.MAX_SRC_SIZE  # the bound is tight


@pytest.mark.parametrize(
    "sizes",
    [
        [P.MAX_SRC_SIZE + 1],  # more than any piece
        [P.MAX_CHUNK_SIZE + 1],  # one piece is at most a chunk
        [2**32 - 1],  # the old bound
        [10, 10, 11, 10],  # only the last may differ
        [10, 10, 13],  # the last exceeds the piece by the count or more
        [10] * 256 + [11],  # a larger last means min_chunks pieces: at most 255
    ],
)
def test_sizes_no_writer_makes_are_refused(sizes: list[int]) -> None:
    with pytest.raises(InvalidDataError):
        DataMap(sum(sizes), entries(sizes))


def parent(sizes: list[int], total: int = 1 << 40, secret: bool = False) -> DataMap:
    sid = bytes(16) if secret else b""
    return DataMap(total, entries(sizes), child=1, secret_id=sid)


def test_a_parent_level_holds_one_serialized_map() -> None:
    smallest = P.MAP_HEAD_SIZE + P.MAP_ENTRY_SIZE * (P.MAX_MAP_ENTRIES + 1)
    largest = P.MAP_HEAD_SIZE + P.MAP_ENTRY_SIZE * P.MAX_PARSE_ENTRIES
    for content in (smallest, largest):
        parent([content])
        parent([content + P.SECRET_ID_SIZE], secret=True)
    for content in (smallest - P.MAP_ENTRY_SIZE, largest + P.MAP_ENTRY_SIZE, smallest + 1):
        with pytest.raises(InvalidDataError, match="parent"):
            parent([content])
    with pytest.raises(InvalidDataError, match="too large a child"):
        parent([smallest], total=P.MAX_MAP_ENTRIES)  # more entries than content bytes
    assert largest + P.SECRET_ID_SIZE == P.MAX_MAP_BYTES


def test_a_parent_whose_first_piece_is_not_its_child_stops_there() -> None:
    """The head of a parent level is checked after its first chunk: the other chunks (here
    missing) are never fetched."""
    case = next(c for c in H._parents() if c.name == "parent-junk-first-piece")
    reader = SelfEncryptor.from_data_map(
        DataMap.from_bytes(case.map_bytes), [EncryptedChunk(k, v) for k, v in case.chunks.items()]
    )
    with pytest.raises(InvalidDataError, match="bad magic"):  # not ChunkNotFound: no fetch
        reader.read_range(0, 1)
