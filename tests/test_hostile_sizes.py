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
from hypothesis import example, given, settings
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


# -- attempts to get past each bound (each kept as a test) -----------------------------------------


def test_a_parent_with_pieces_smaller_than_the_head_is_checked_once_the_head_is_complete() -> None:
    """Attempt: make the first piece shorter than the child's 25-byte head, so the early check
    cannot run on it. The head is checked as soon as the pieces hold it (here after three 10-byte
    chunks); the 27,860 other chunks do not exist and are never needed."""
    content = P.MAP_HEAD_SIZE + P.MAP_ENTRY_SIZE * (P.MAX_MAP_ENTRIES + 1)
    n = -(-content // 10)
    sizes = [10] * (n - 1) + [content - 10 * (n - 1)]
    junk = P.src_hash(bytes(10))
    hashes = [junk] * 3 + [P.src_hash(b"%d" % i) for i in range(3, n)]
    names, chunks = [P.src_hash(b"n%d" % i) for i in range(n)], []
    for i in range(3):
        stored = H.seal_chunk(b"\x00" + bytes(10), (hashes[i], hashes[i - 1], hashes[i - 2]))
        names[i] = P.chunk_name(stored)
        chunks.append(EncryptedChunk(names[i], stored))
    raw = H.pack_map(list(zip(hashes, names, sizes, strict=True)), total=1 << 40, child=1)
    reader = SelfEncryptor.from_data_map(DataMap.from_bytes(raw), chunks)
    with pytest.raises(InvalidDataError, match="bad magic"):  # not ChunkNotFound
        reader.read_range(0, 1)


@pytest.mark.parametrize(
    ("level", "window_log", "ok"),
    [(3, 23, True), (3, 24, False), (19, 23, True), (19, 24, False), (20, 25, True),
     (20, 26, False), (21, 26, True), (21, 27, False), (22, 27, True), (22, 28, False)],
)  # fmt: skip
def test_the_window_bound_is_exactly_what_a_level_uses(
    level: int, window_log: int, ok: bool
) -> None:
    """Attempt: ask for one window step more than a writer at that level uses."""
    n = MIB
    frame = H.zstd_body(H.rle_frame(n, fcs=n, window_log=window_log))
    case = H.one_chunk_case("window", frame, n, "ok:1" if ok else "IntegrityError",
                            src_hash=H.zero_hash(n), level=level)  # fmt: skip
    assert H.run(case) == case.expect


@pytest.mark.parametrize("version", [1, 2])
def test_the_stored_size_bound_is_exact(version: int) -> None:
    """Attempt: one stored byte more than a raw frame of ``src_size`` bytes takes."""
    plain = b"exact size " * 10
    fits = H.one_chunk_case("fits", b"\x00" + plain, len(plain), "ok:1",
                            src_hash=P.src_hash(plain), version=version)  # fmt: skip
    over = H.one_chunk_case("over", b"\x00" + plain + b"!", len(plain), "IntegrityError",
                            src_hash=P.src_hash(plain), version=version)  # fmt: skip
    stored = next(iter(fits.chunks.values()))
    assert len(stored) == len(plain) + P.CHUNK_OVERHEAD[version]
    assert (H.run(fits), H.run(over)) == ("ok:1", "IntegrityError")


def test_a_frame_cannot_claim_less_and_give_more() -> None:
    """Attempt: declare src_size but inflate past it through a second frame, or through blocks
    beyond the declared size: the stream stops one byte past src_size."""
    n = MIB
    extra_frame = H.rle_frame(n, fcs=n, window_log=21) + H.rle_frame(n, fcs=n, window_log=21)
    lying = H.rle_frame(2 * n, fcs=n, window_log=21)  # declares 1 MiB, holds 2 MiB
    for frame in (extra_frame, lying):
        case = H.one_chunk_case("more", H.zstd_body(frame), n, "IntegrityError",
                                src_hash=H.zero_hash(n))  # fmt: skip
        assert H.run(case) == "IntegrityError"
        reader = SelfEncryptor.from_data_map(
            DataMap.from_bytes(case.map_bytes),
            [EncryptedChunk(k, v) for k, v in case.chunks.items()],
        )
        assert peak_bytes(reader.decrypt) < 4 * MIB


@settings(max_examples=60, deadline=None)
@example(total=3, chunk_size=1, min_chunks=4, offset=0, length=2)  # inline: no chunks
@example(total=100, chunk_size=40, min_chunks=3, offset=60, length=40)  # the larger last piece
@given(
    total=st.integers(3, 1500),
    chunk_size=st.integers(1, 200),
    min_chunks=st.integers(1, 9),
    offset=st.integers(0, 1600),
    length=st.integers(0, 1600),
)
def test_ranges_of_every_layout_are_the_right_bytes(
    total: int, chunk_size: int, min_chunks: int, offset: int, length: int
) -> None:
    """Attempt: a range over the larger last piece of a ``min_chunks`` layout, or across
    chunk borders, returns exactly the slice (iter_range pieces and read_range alike)."""
    from pqselfenc import EncryptionConfig

    data = bytes(i * 7 % 251 for i in range(total))
    cfg = EncryptionConfig(chunk_size=chunk_size, min_chunks=min_chunks)
    m, chunks = SelfEncryptor(data, cfg).encrypt()
    reader = SelfEncryptor.from_data_map(m, chunks)
    pieces = list(reader.iter_range(offset, length))
    assert b"".join(pieces) == reader.read_range(offset, length) == data[offset : offset + length]
    assert all(pieces) and len(pieces) <= max(1, len(m.chunks))  # inline: one piece
