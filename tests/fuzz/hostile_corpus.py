#!/usr/bin/env python3
"""Hostile DataMaps and chunks whose claimed sizes exceed what they hold (issue 11, item 6).

Each case is what an attacker who writes a map (and so knows every chunk key) can hand a
reader: a tiny map and chunk that claim, or really inflate to, hundreds of MiB or GiB. Every
chunk is authentic (encrypted under the key its map entry derives), so only size checks stand
between a claim and an allocation. ``python3 tests/fuzz/hostile_corpus.py`` runs every case in
this process and prints one JSON line per case, then ``{"peak_rss_mib": ...}``: the process's
peak resident set (``VmHWM``, else ``ru_maxrss``) over the whole corpus.
``tests/test_hostile_sizes.py`` runs it in a child process and holds it under ``RSS_LIMIT_MIB``.

``ULTRA`` cases (zstd levels 20..22) are kept apart: a frame at those levels may need a 128 MiB
window, which an honest level-22 writer of chunks of 128 MiB or more also needs, so their bound
is that window on top of the corpus limit.
"""

from __future__ import annotations

import functools
import json
import resource
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from pqselfenc import DataMap, EncryptedChunk, SelfEncryptor
from pqselfenc.core import _primitives as P
from pqselfenc.core._cipher import ChunkKeys, seal_frame
from pqselfenc.error import Error

RSS_LIMIT_MIB = 64
ULTRA_WINDOW_MIB = P.ZSTD_MAX_WINDOW_ULTRA >> 20
MIB, GIB = 1 << 20, 1 << 30
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
ZSTD_BLOCK = 128 << 10
RLE_BLOCK = 1  # zstd block type: one byte repeated block_size times


# -- building blocks -----------------------------------------------------------------------------


def rle_frame(total: int, *, fcs: int | None, window_log: int, blocks: int | None = None) -> bytes:
    """A zstd frame of ``total`` zero bytes as RLE blocks (4 bytes per 128 KiB: a 12 KB frame
    inflates to 384 MiB). ``fcs``: the content size it declares (None: none); ``window_log``:
    the window it asks for; ``blocks``: stop after this many blocks (an unfinished frame)."""
    desc = (3 << 6) if fcs is not None else 0  # 8-byte content size field, or none
    head = ZSTD_MAGIC + bytes((desc, (window_log - 10) << 3))
    head += b"" if fcs is None else struct.pack("<Q", fcs)
    size = min(ZSTD_BLOCK, 1 << window_log)
    count = -(-total // size)
    out = [head]
    for i in range(count if blocks is None else min(blocks, count)):
        n = min(size, total - i * size)
        last = i == count - 1
        out.append((int(last) | RLE_BLOCK << 1 | n << 3).to_bytes(3, "little") + b"\x00")
    return b"".join(out)


@functools.cache
def zero_hash(n: int) -> bytes:
    """SHA3-256 of ``n`` zero bytes, hashed 1 MiB at a time."""
    hasher, block = P.src_hasher(), bytes(MIB)
    for start in range(0, n, MIB):
        hasher.update(block[: min(MIB, n - start)])
    return hasher.digest()


def pack_map(
    entries: list[tuple[bytes, bytes, int]],
    *,
    total: int,
    level: int = 3,
    version: int = P.SIV_FORMAT_VERSION,
    child: int = 0,
) -> bytes:
    """A binary map with any field values (the DataMap class would refuse hostile ones)."""
    comp = P.COMPRESSION_ZSTD
    head = P.MAP_MAGIC + bytes((version, child, comp, level, 0))
    body = b"".join(h + name + struct.pack(">I", size) for h, name, size in entries)
    return head + struct.pack(">QI", total, len(entries)) + body


def seal_chunk(
    frame: bytes, hashes: tuple[bytes, bytes, bytes], *, level: int = 3, version: int = 2
) -> bytes:
    """``frame`` (flag || body) encrypted exactly as a writer of that format would."""
    pipeline = P.pipeline_id(P.COMPRESSION_ZSTD, level, version)
    return seal_frame(frame, hashes, ChunkKeys(P.ZERO_SALT, pipeline, P.COMPRESSION_ZSTD, level))


def zstd_body(body: bytes) -> bytes:
    return bytes((P.BODY_ZSTD,)) + body


# -- cases ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One hostile input: a map, the chunks it points at, what the reader does, and the
    outcome expected (an error class name, or ``ok:N`` for N verified bytes returned)."""

    name: str
    map_bytes: bytes
    chunks: dict[bytes, bytes] = field(repr=False)
    action: str
    expect: str


def one_chunk_case(
    name: str,
    frame: bytes,
    src_size: int,
    expect: str,
    *,
    action: str = "read_range",
    src_hash: bytes | None = None,
    level: int = 3,
    version: int = 2,
) -> Case:
    """A single-entry map (93 bytes) over one authentic chunk carrying ``frame``."""
    h = src_hash if src_hash is not None else P.src_hash(name.encode())
    stored = seal_chunk(frame, (h, h, h), level=level, version=version)
    chunk_name = P.chunk_name(stored)
    raw = pack_map([(h, chunk_name, src_size)], total=src_size, level=level, version=version)
    return Case(name, raw, {chunk_name: stored}, action, expect)


def _bombs() -> list[Case]:
    n = 384 * MIB
    bomb = zstd_body(rle_frame(n, fcs=n, window_log=21))
    real = zero_hash(n)
    return [
        # the repro: a 93-byte map and a 12 KB chunk; read_range(0, 1) went to 417 MiB
        one_chunk_case("issue-93-byte-map-v1", bomb, n, "ok:1", src_hash=real, version=1),
        one_chunk_case("issue-93-byte-map-v2", bomb, n, "ok:1", src_hash=real),
        one_chunk_case("bomb-iter-range", bomb, n, "ok:1", src_hash=real, action="iter_range"),
        one_chunk_case("bomb-wrong-hash", bomb, n, "IntegrityError"),
    ]


def _claims() -> list[Case]:
    g, bad = GIB, "IntegrityError"
    frames = [
        ("no-content-size-claims-1GiB", rle_frame(g, fcs=None, window_log=21), g),
        ("unfinished-frame-claims-1GiB", rle_frame(g, fcs=g, window_log=21, blocks=8), g),
        ("frame-declares-2^40", rle_frame(MIB, fcs=1 << 40, window_log=21), g),
        ("window-2^31", rle_frame(g, fcs=g, window_log=31, blocks=1), g),
        ("window-2^27-at-level-3", rle_frame(g, fcs=g, window_log=27), g),
        ("second-frame-inflates",
         rle_frame(MIB, fcs=MIB, window_log=21) + rle_frame(g, fcs=g, window_log=21), MIB),
    ]  # fmt: skip
    one = 2 * b"\x01" * 16
    return [
        *(one_chunk_case(name, zstd_body(frame), size, bad) for name, frame, size in frames),
        one_chunk_case("stored-larger-than-claimed", b"\x00" + bytes(4 * MIB), 1, bad),
        _raw_case("src-size-2^32-1", [(one, one, 2**32 - 1)], 2**32 - 1),
        _raw_case("src-size-max-plus-1", [(one, one, P.MAX_SRC_SIZE + 1)], P.MAX_SRC_SIZE + 1),
        _raw_case("last-larger-than-layout", [(one, one, s) for s in (MIB, MIB, 2 * MIB)], 4 * MIB),
    ]


def _raw_case(name: str, entries: list[tuple[bytes, bytes, int]], total: int) -> Case:
    return Case(name, pack_map(entries, total=total), {}, "read_range", "InvalidDataError")


# A parent level's content is a serialized map: at most MAX_MAP_BYTES (2^20 entries).
MAX_CHILD = P.MAP_HEAD_SIZE + P.MAP_ENTRY_SIZE * P.MAX_PARSE_ENTRIES


def _parent(name: str, sizes: list[int], expect: str, *, total: int = 1 << 40,
            first: bytes | None = None, first_hash: bytes | None = None) -> Case:  # fmt: skip
    """A parent (child = 1) map over ``sizes``; chunk 0 carries ``first`` when given (the
    others are never stored: a reader must stop before it needs them)."""
    hashes = [P.src_hash(f"{name}/{i}".encode()) for i in range(len(sizes))]
    if first_hash is not None:
        hashes[0] = first_hash
    names, chunks = [P.src_hash(f"name/{i}".encode()) for i in range(len(sizes))], {}
    if first is not None:
        stored = seal_chunk(first, (hashes[0], hashes[-1], hashes[-2 % len(hashes)]))
        names[0] = P.chunk_name(stored)
        chunks[names[0]] = stored
    entries = list(zip(hashes, names, sizes, strict=True))
    return Case(name, pack_map(entries, total=total, child=1), chunks, "read_range", expect)


def _parents() -> list[Case]:
    piece = -(-MAX_CHILD // 16)
    split = [piece] * 15 + [MAX_CHILD - 15 * piece]
    junk = zstd_body(rle_frame(piece, fcs=piece, window_log=21))
    return [
        # the repro: a 297-byte parent map whose entries claim 3 GiB (went to 3 GiB RSS)
        _parent("issue-297-byte-parent", [GIB, GIB, GIB, 7], "InvalidDataError"),
        _parent("parent-one-byte-too-many", [*split[:-1], split[-1] + 68], "InvalidDataError"),
        _parent("parent-largest-claim-no-chunks", split, "ChunkNotFound"),
        _parent("parent-junk-first-piece", split, "InvalidDataError", first=junk,
                first_hash=zero_hash(piece)),
        _parent("parent-more-entries-than-bytes", split, "InvalidDataError", total=4097),
    ]  # fmt: skip


def _ultra() -> list[Case]:
    n = 384 * MIB
    bomb = zstd_body(rle_frame(n, fcs=n, window_log=27))
    return [one_chunk_case("ultra-bomb-level-22", bomb, n, "ok:1", src_hash=zero_hash(n), level=22)]


CORPUS: dict[str, Callable[[], list[Case]]] = {
    "bombs": _bombs,
    "claims": _claims,
    "parents": _parents,
}
ULTRA: dict[str, Callable[[], list[Case]]] = {"ultra": _ultra}


# -- running -------------------------------------------------------------------------------------


def run(case: Case) -> str:
    """What reading ``case`` gives: the error class name, or ``ok:N``."""
    store = [EncryptedChunk(n, c) for n, c in case.chunks.items()]
    try:
        data_map = DataMap.from_bytes(case.map_bytes)
        reader = SelfEncryptor.from_data_map(data_map, store)
        if case.action == "iter_range":
            out = b"".join(reader.iter_range(0, 1))
        else:
            out = reader.read_range(0, 1)
    except Error as exc:
        return type(exc).__name__
    return f"ok:{len(out)}"


def peak_rss_mib() -> float:
    """This process's peak resident set in MiB: ``VmHWM`` where Linux has it, because
    ``ru_maxrss`` also counts the forking parent's resident set, carried over through exec."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str]) -> int:
    groups = ULTRA if "--ultra" in argv else CORPUS
    print(json.dumps({"baseline_rss_mib": round(peak_rss_mib(), 1)}), flush=True)
    for make in groups.values():
        for case in make():
            got = run(case)
            rss = round(peak_rss_mib(), 1)
            line = {"case": case.name, "expect": case.expect, "got": got, "rss_mib": rss}
            print(json.dumps({**line, "map_bytes": len(case.map_bytes)}), flush=True)
    print(json.dumps({"peak_rss_mib": round(peak_rss_mib(), 1)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
