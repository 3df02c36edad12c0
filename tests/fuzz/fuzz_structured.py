"""Structured fuzz targets: type-confused JSON, out-of-range fields, hostile zstd frames.

Byte flips rarely turn an integer into a list, or a count into 2^32 - 1; these targets read
their input as a recipe instead (``Recipe`` hands out choices), so every input is one such
edit of a valid seed:

* ``datamap_json_typed``: a DataMap's JSON with fields replaced by values of the wrong type
  (lists, objects, strings, floats, bools, null, huge and negative ints, deep nesting,
  non-ASCII), duplicated or dropped keys, NaN/Infinity.
* ``datamap_fields``: a binary map with one or more fields (version, child, compression, level,
  secret id length, total size, count, an entry's size, inline length) set to a boundary value,
  then parsed and, when it parses, decrypted against the samples' chunks.
* ``chunk_frames``: an authentic chunk (encrypted under the right key, format 1 or 2) whose
  frame is built from the recipe: flag byte, zstd content size and window, a list of raw/RLE
  blocks, trailing bytes; and a map entry whose size claim is a boundary value.
* ``envelope_fields``: a sealed envelope with a header field set to a boundary value.

The contract is the one of every target: only a ``pqselfenc.error.Error`` may come out, and
what decrypts must be the bytes the frame really holds.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import zstandard
from fuzz_targets import _CORE_CFG, _SECRET, Target, _all_chunks, core_samples

from pqselfenc import DataMap, SelfEncryptor
from pqselfenc.core import _primitives as P
from pqselfenc.core._cipher import ChunkKeys, decrypt_chunk, seal_frame

# Values that break parsers that trust types: one of each JSON kind, and numbers at the edges.
HUGE_INTS = [-1, -(2**63), 2**31, 2**32 - 1, 2**32, 2**63, 2**64 - 1, 2**64, 10**30]
ODD_STRINGS = ["", "zstd\u0000", "nöne", "ZSTD", "00" * 16, "é" * 64, "\ud800", "1", "null"]
_READ_CFG = _CORE_CFG.with_convergence_secret(_SECRET)
U32_EDGES = [0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0xFFFF, 2**31 - 1, 2**31, 2**32 - 2, 2**32 - 1]


class Recipe:
    """Choices read from fuzz bytes; past the end every choice is 0."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def byte(self) -> int:
        self.pos += 1
        return self.data[self.pos - 1] if self.pos <= len(self.data) else 0

    def pick(self, options: list[Any]) -> Any:
        return options[self.byte() % len(options)]

    def number(self, bits: int) -> int:
        value = 0
        for _ in range((bits + 7) // 8):
            value = value << 8 | self.byte()
        return value & ((1 << bits) - 1)


# -- type-confused JSON ------------------------------------------------------------------------


def odd_value(r: Recipe, depth: int = 0) -> object:
    kind = r.byte() % 10
    if kind == 0:
        return None
    if kind == 1:
        return bool(r.byte() & 1)
    if kind == 2:
        return r.pick(HUGE_INTS)
    if kind == 3:
        return r.pick([0.0, 1.0, -0.0, 1e308, 3.5, float("nan"), float("inf")])
    if kind == 4:
        return r.pick(ODD_STRINGS)
    if kind == 5:
        return [] if depth > 3 else [odd_value(r, depth + 1) for _ in range(r.byte() % 3)]
    if kind == 6:
        return {} if depth > 3 else {r.pick(ODD_STRINGS): odd_value(r, depth + 1)}
    if kind == 7:
        return nest(r.pick([10, 100, 1000, 100_000]))
    if kind == 8:
        return r.number(16) - 32768  # small, possibly negative
    return r.pick(["none", "zstd", None, 0, 1, 2, 22, 23])  # right type, edge value


def nest(depth: int) -> object:
    value: object = []
    for _ in range(min(depth, 900)):  # json.dumps itself recurses; deeper ones go in as text
        value = [value]
    return value


def _json_seeds() -> list[bytes]:
    return [bytes((i * 2, 0)) for i in range(len(core_samples()))]  # sample i, no edits


def typed_json(data: bytes) -> str:
    """The JSON text of one sample with the recipe's edits applied."""
    r = Recipe(data)
    samples = core_samples()
    doc: dict[str, Any] = json.loads(samples[(r.byte() >> 1) % len(samples)][0].to_json())
    for _ in range(r.byte() % 4):
        _edit(doc, r)
    text = json.dumps(doc)
    trick = r.byte() % 8
    if trick == 1:  # a key twice: the second value must not silently win
        text = text.replace('"level":', '"level": 0, "level":', 1)
    elif trick == 2:
        text = text.replace('"total_size": ', '"total_size": 1' + "0" * 5000 + ', "x": ', 1)
    elif trick == 3:
        text = text.replace('"chunks": ', '"chunks": ' + "[" * 200_000, 1)
    return text


def _edit(doc: dict[str, Any], r: Recipe) -> None:
    entries = doc.get("chunks")
    target: dict[str, Any] = doc
    if isinstance(entries, list) and entries and r.byte() & 1:
        entry = entries[r.byte() % len(entries)]
        target = entry if isinstance(entry, dict) else doc
    action = r.byte() % 6
    if action == 1 or not target:
        target[r.pick(ODD_STRINGS)] = odd_value(r)
        return
    key = r.pick(sorted(target))
    if action == 0:
        del target[key]
    else:
        target[key] = odd_value(r)


def _parse_typed_json(data: bytes) -> object:
    parsed = DataMap.from_json(typed_json(data))
    assert DataMap.from_json(parsed.to_json()) == parsed
    return parsed


# -- out-of-range binary fields ------------------------------------------------------------------

# (name, offset from the start or None for entries, struct format)
_FIELDS = ["version", "child", "compression", "level", "sid_len", "total", "count", "src_size"]


def _map_seeds() -> list[bytes]:
    return [bytes((i * 2, 0)) for i in range(len(core_samples()))]


def fielded_map(data: bytes) -> bytes:
    """One sample's binary map with fields set to boundary values (bytes, not a DataMap)."""
    r = Recipe(data)
    samples = core_samples()
    raw = bytearray(samples[(r.byte() >> 1) % len(samples)][0].to_bytes())
    for _ in range(r.byte() % 3):
        _set_field(raw, r)
    return bytes(raw)


def _set_field(raw: bytearray, r: Recipe) -> None:
    field = r.pick(_FIELDS)
    sid = raw[12] if len(raw) > 12 else 0
    value = r.pick([*U32_EDGES, r.number(32), r.number(64)])
    if field in ("version", "child", "compression", "level", "sid_len"):
        pos = 8 + _FIELDS.index(field)
        raw[pos : pos + 1] = bytes((value & 0xFF,))
    elif field == "total":
        raw[13 + sid : 21 + sid] = struct.pack(">Q", value & (2**64 - 1))
    elif field == "count":
        raw[21 + sid : 25 + sid] = struct.pack(">I", value & (2**32 - 1))
    else:
        count = max(1, (len(raw) - 25 - sid) // 68)
        end = 25 + sid + 68 * (r.byte() % count) + 68
        raw[end - 4 : end] = struct.pack(">I", value & (2**32 - 1))


def _decrypt_fielded_map(data: bytes) -> object:
    """Parse the edited map and, when it parses, read it against every sample's chunks: only
    an Error, or bytes of a sample, may come out."""
    parsed = DataMap.from_bytes(fielded_map(data))
    reader = SelfEncryptor.from_data_map(parsed, list(_all_chunks()), _READ_CFG)
    out = reader.read_range(0, 256)
    plains = [p for _, _, p in core_samples()]
    assert not parsed.chunks or any(out == p[: len(out)] for p in plains), "forged map decrypted"
    return parsed


# -- hostile zstd frames inside authentic chunks ---------------------------------------------------


def _frame_seeds() -> list[bytes]:
    """Recipes that decrypt: formats 1 and 2, an RLE and a raw zstd block, and a raw frame."""
    # version, level, flag, block count, (kind, size) * count, fcs, window, trailing, size, part
    zstd = [1, 1, 0, 2, 1, 4, 0, 3, 0, 12, 0, 0, 0]
    raw = [1, 1, 2, 1, 0, 3, 0, 12, 0, 2, 1]
    return [bytes(zstd), bytes([0, *zstd[1:]]), bytes(raw), bytes([0, *raw[1:]])]


def recipe_frame(r: Recipe) -> tuple[bytes, int]:
    """(flag || body, real output size or -1) from the recipe; the body is one zstd frame of
    raw and RLE blocks (at most 32 blocks of 128 KiB: real output stays small) and trailing
    bytes; content size and window come from the recipe too."""
    flag = r.pick([P.BODY_ZSTD, P.BODY_ZSTD, P.BODY_RAW, 2, 255])
    blocks = [(r.byte() & 1, r.pick([0, 1, 7, 100, 4096, 128 << 10])) for _ in range(r.byte() % 33)]
    real = sum(size for _, size in blocks)
    fcs = r.pick([real, real, None, real + 1, max(real - 1, 0), 2**31, 2**40, 2**64 - 1])
    window_log = 10 + r.byte() % 22
    desc = 0 if fcs is None else 3 << 6
    out = [b"\x28\xb5\x2f\xfd", bytes((desc, (window_log - 10) << 3))]
    out += [] if fcs is None else [struct.pack("<Q", fcs)]
    for i, (kind, size) in enumerate(blocks):
        last = int(i == len(blocks) - 1)
        out.append((last | (kind << 1) | size << 3).to_bytes(3, "little"))
        out.append(b"\x00" if kind else bytes(size))
    out.append(r.pick([b"", b"\x00", b"\x28\xb5\x2f\xfd", b"junk"]))
    return bytes((flag,)) + b"".join(out), real if blocks else -1


def _hostile_frame(data: bytes) -> object:
    """Decrypt one authentic chunk holding the recipe's frame under an entry whose size claim
    is a boundary value. Success must give exactly what zstd (bounded) says the frame holds."""
    r = Recipe(data)
    version = r.pick([P.FORMAT_VERSION, P.SIV_FORMAT_VERSION])
    level = r.pick([1, 3, 19, 22])
    framed, real = recipe_frame(r)
    claims = [real, real, len(framed) - 1, real + 1, real - 1, P.MAX_SRC_SIZE, 1, 2**32 - 1]
    src_size = r.pick(claims)
    src_size = max(src_size, 1)
    truth = _oracle(framed, src_size)
    h = P.src_hash(truth if truth is not None else b"no such plaintext")
    keys = ChunkKeys(P.ZERO_SALT, P.pipeline_id(P.COMPRESSION_ZSTD, level, version), 1, level)
    stored = seal_frame(framed, (h, h, h), keys)
    part = r.pick([None, (0, 1), (0, 0), (max(src_size - 3, 0), src_size)])
    out = decrypt_chunk(stored, P.chunk_name(stored), (h, h, h), src_size, keys, index=0,
                        part=part)  # fmt: skip
    assert truth is not None and len(truth) == src_size, "a frame decrypted to a wrong size"
    lo, hi = part if part is not None else (0, src_size)
    assert out == truth[lo:hi], "a chunk decrypted to other bytes than its frame holds"
    return out


def _oracle(framed: bytes, src_size: int) -> bytes | None:
    """What the frame holds, by zstd's one-shot decoder (bounded): None if it holds nothing a
    reader may return."""
    if framed[0] == P.BODY_RAW:
        return framed[1:]
    if framed[0] != P.BODY_ZSTD or src_size > 8 << 20:
        return None
    try:  # a frame must declare its size (writers always do); only then is one-shot bounded
        if zstandard.frame_content_size(framed[1:]) != src_size:
            return None
        dctx = zstandard.ZstdDecompressor(max_window_size=1 << 23)
        return dctx.decompress(framed[1:], max_output_size=src_size)
    except zstandard.ZstdError:
        return None


# -- envelope header fields ----------------------------------------------------------------------


def _envelope_seeds() -> list[bytes]:
    return [bytes((0, i)) for i in range(4)]


def _envelope_fields(data: bytes) -> object:
    from fuzz_kem import identities, sealed_samples  # type: ignore[import-not-found]

    from pqselfenc.kem import inspect, open_sealed

    r = Recipe(data)
    samples = sealed_samples()
    edits = r.byte() % 3
    sealed = bytearray(samples[r.byte() % len(samples)][0])
    info = inspect(bytes(sealed))
    for _ in range(edits):
        _set_envelope_field(sealed, r, len(info.recipients))
    readers = [k for pair in identities().values() for k in pair]
    inspect(bytes(sealed))
    return open_sealed(bytes(sealed), readers)


def _set_envelope_field(sealed: bytearray, r: Recipe, stanzas: int) -> None:
    field = r.byte() % 5
    value = r.pick([*U32_EDGES, r.number(32)])
    if field == 0:
        sealed[8] = value & 0xFF  # version
    elif field == 1:
        sealed[9] = value & 0xFF  # suite
    elif field == 2:
        sealed[26:28] = struct.pack(">H", value & 0xFFFF)  # stanza count
    else:
        body = P.SUITE_ENC_SIZE.get(sealed[9], 1120)
        signer = 28 + stanzas * (P.KEY_ID_SIZE + body + P.WRAPPED_DMK_SIZE)
        if field == 3 and signer < len(sealed):
            sealed[signer] = value & 0xFF  # signer algorithm
        elif signer + 5 <= len(sealed) and sealed[signer] == P.SIG_NONE:
            sealed[signer + 1 : signer + 5] = struct.pack(">I", value & (2**32 - 1))


def structured_targets(with_kem: bool) -> list[Target]:
    targets = [
        Target("datamap_json_typed", _parse_typed_json, _json_seeds),
        Target("datamap_fields", _decrypt_fielded_map, _map_seeds),
        Target("chunk_frames", _hostile_frame, _frame_seeds),
    ]
    if with_kem:
        targets.append(Target("envelope_fields", _envelope_fields, _envelope_seeds))
    return targets
