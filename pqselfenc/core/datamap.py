"""The DataMap: the list of chunk keys that remains secret, with a strict canonical encoding.

Binary form (docs/format.md has every byte)::

    magic "PQSEMAP\\0" | version u8 | child u8 | compression u8 | level u8
    | secret_id_len u8 (0 or 16) | secret_id | total_size u64 | count u32
    | count == 0: inline_len u8 | inline bytes
    | count  > 0: count * (src_hash 32 | name 32 | src_size u32)

All integers are big-endian. The parser accepts exactly one encoding of each map: bounded
counts, exact lengths, no trailing bytes, consistent sizes; anything else is InvalidDataError.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pqselfenc.core import _primitives as P
from pqselfenc.core._store import ChunkInfo
from pqselfenc.error import InvalidDataError

__all__ = ["DataMap"]

_HEAD = struct.Struct(">8sBBBBB")
_TOTAL_COUNT = struct.Struct(">QI")
_ENTRY = struct.Struct(">32s32sI")
_MAX_INLINE = P.MAX_MIN_CHUNKS - 1
_MAX_JSON_BYTES = P.MAX_MAP_FILE_SIZE


@dataclass(frozen=True, repr=False)
class DataMap:
    """Everything needed (with the chunks, and the convergence secret if one was used) to
    decrypt one input. It holds every chunk key: treat it as a secret and seal it to travel.

    ``child`` is the level: 0 means the entries describe the content itself; ``n > 0`` means the
    entries' chunks decrypt to the serialized map of level ``n - 1``.
    """

    total_size: int
    chunks: tuple[ChunkInfo, ...] = ()
    inline: bytes = b""
    child: int = 0
    compression: int = P.COMPRESSION_NONE
    level: int = 0
    secret_id: bytes = b""

    def __post_init__(self) -> None:
        object.__setattr__(self, "chunks", tuple(self.chunks))
        _validate(self)

    # -- views -----------------------------------------------------------------------------

    def __repr__(self) -> str:
        secret = "set" if self.secret_id else "none"
        return (
            f"DataMap(child={self.child}, total_size={self.total_size}, "
            f"chunks={len(self.chunks)}, pipeline={self.pipeline_name}, "
            f"convergence_secret={secret})"
        )

    __str__ = __repr__

    def __len__(self) -> int:
        return len(self.chunks)

    def __iter__(self) -> Iterator[ChunkInfo]:
        return iter(self.chunks)

    def infos(self) -> list[ChunkInfo]:
        """The chunk entries, in order."""
        return list(self.chunks)

    def is_child(self) -> bool:
        """Whether this map points at another (serialized, encrypted) map rather than content."""
        return self.child > 0

    @property
    def pipeline(self) -> bytes:
        """The pipeline id (format version, compression, level) every chunk was made with."""
        return P.pipeline_id(self.compression, self.level)

    @property
    def pipeline_name(self) -> str:
        """The pipeline for people: ``"none"`` or ``"zstd:LEVEL"``."""
        name = P.COMPRESSION_NAMES[self.compression]
        return name if self.compression == P.COMPRESSION_NONE else f"{name}:{self.level}"

    @property
    def content_size(self) -> int:
        """Bytes this level's entries decrypt to (the content at level 0, a map above)."""
        return len(self.inline) if not self.chunks else sum(_size(c) for c in self.chunks)

    # -- binary ------------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The canonical binary encoding."""
        head = _HEAD.pack(
            P.MAP_MAGIC,
            P.FORMAT_VERSION,
            self.child,
            self.compression,
            self.level,
            len(self.secret_id),
        )
        parts = [head, self.secret_id, _TOTAL_COUNT.pack(self.total_size, len(self.chunks))]
        if not self.chunks:
            parts += [bytes((len(self.inline),)), self.inline]
        parts += [_ENTRY.pack(c.src_hash, c.name, c.src_size) for c in self.chunks]
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> DataMap:
        """Parse the binary encoding; ``InvalidDataError`` on anything but a canonical map."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise TypeError("DataMap.from_bytes takes bytes")
        return _Reader(bytes(data)).data_map()

    # -- JSON --------------------------------------------------------------------------------

    def to_json(self) -> str:
        """A JSON form for people (hex strings). As secret as the binary form."""
        doc: dict[str, Any] = {
            "format": P.MAP_JSON_FORMAT,
            "version": P.FORMAT_VERSION,
            "child": self.child,
            "total_size": self.total_size,
            "compression": P.COMPRESSION_NAMES[self.compression],
            "level": self.level,
            "convergence_secret_id": self.secret_id.hex() or None,
            "inline": self.inline.hex() if not self.chunks else None,
            "chunks": [
                {"src_hash": c.src_hash.hex(), "name": c.name.hex(), "src_size": c.src_size}
                for c in self.chunks
                if c.src_hash is not None
            ],
        }
        return json.dumps(doc, indent=2)

    @classmethod
    def from_json(cls, text: str | bytes) -> DataMap:
        """Parse the JSON form strictly (exact keys and types); ``InvalidDataError`` otherwise."""
        if not isinstance(text, str | bytes):
            raise TypeError("DataMap.from_json takes str or bytes")
        if len(text) > _MAX_JSON_BYTES:
            raise InvalidDataError("DataMap JSON is too large")
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise InvalidDataError("DataMap JSON does not parse") from exc
        return _from_doc(doc)


# ---------------------------------------------------------------------------------------------


def _size(info: ChunkInfo) -> int:
    assert info.src_size is not None
    return info.src_size


def _validate(m: DataMap) -> None:
    """Invariants shared by the constructor and both parsers (raise InvalidDataError)."""
    _check(isinstance(m.total_size, int) and 0 <= m.total_size < 1 << 64, "total size out of range")
    _check(0 <= m.child <= P.MAX_MAP_LEVEL, "map level out of range")
    _check(m.compression in P.COMPRESSION_NAMES, "unknown compression algorithm")
    if m.compression == P.COMPRESSION_NONE:
        _check(m.level == 0, "compression level without compression")
    else:
        _check(1 <= m.level <= 22, "compression level out of range")
    _check(len(m.secret_id) in (0, P.SECRET_ID_SIZE), "bad convergence secret id length")
    _check(len(m.chunks) <= P.MAX_PARSE_ENTRIES, "too many chunk entries")
    if not m.chunks:
        _check(m.child == 0, "a parent map has no chunks")
        _check(len(m.inline) == m.total_size <= _MAX_INLINE, "inline content size mismatch")
        return
    _check(not m.inline, "a map has either chunks or inline content")
    for i, c in enumerate(m.chunks):
        _check(c.src_hash is not None and c.src_size is not None, "chunk entry lacks its source")
        _check(c.index in (None, i), "chunk entry out of order")
        _check(0 < _size(c) < 1 << 32, "chunk size out of range")
    piece = _size(m.chunks[0])
    _check(all(_size(c) == piece for c in m.chunks[:-1]), "chunk sizes are not a valid layout")
    if m.child == 0:
        _check(m.content_size == m.total_size, "chunk sizes do not add up to the total size")
    object.__setattr__(
        m, "chunks", tuple(c if c.index == i else _indexed(c, i) for i, c in enumerate(m.chunks))
    )


def _indexed(c: ChunkInfo, index: int) -> ChunkInfo:
    return ChunkInfo(name=c.name, src_hash=c.src_hash, src_size=c.src_size, index=index)


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise InvalidDataError(f"invalid DataMap: {what}")


class _Reader:
    """Cursor over untrusted bytes: every read is length-checked."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        _check(self.pos + n <= len(self.data), "truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def data_map(self) -> DataMap:
        magic, version, child, comp, level, sid_len = _HEAD.unpack(self.take(_HEAD.size))
        _check(magic == P.MAP_MAGIC, "not a DataMap (bad magic)")
        _check(version == P.FORMAT_VERSION, f"unsupported version {version}")
        _check(sid_len in (0, P.SECRET_ID_SIZE), "bad convergence secret id length")
        secret_id = self.take(sid_len)
        total, count = _TOTAL_COUNT.unpack(self.take(_TOTAL_COUNT.size))
        _check(count <= P.MAX_PARSE_ENTRIES, "too many chunk entries")
        inline = self.take(self.take(1)[0]) if count == 0 else b""
        _check(len(self.data) - self.pos == count * _ENTRY.size, "wrong length for entry count")
        chunks = [
            ChunkInfo(name=name, src_hash=h, src_size=size, index=i)
            for i, (h, name, size) in enumerate(_ENTRY.iter_unpack(self.take(count * _ENTRY.size)))
        ]
        return DataMap(total, tuple(chunks), inline, child, comp, level, secret_id)


_JSON_KEYS = {
    "format",
    "version",
    "child",
    "total_size",
    "compression",
    "level",
    "convergence_secret_id",
    "inline",
    "chunks",
}
_ENTRY_KEYS = {"src_hash", "name", "src_size"}


def _json_int(doc: dict[str, Any], key: str) -> int:
    value = doc[key]
    _check(isinstance(value, int) and not isinstance(value, bool), f"{key} must be an integer")
    return int(value)


def _json_hex(value: object, size: int | None, what: str) -> bytes:
    _check(isinstance(value, str), f"{what} must be a hex string")
    assert isinstance(value, str)
    _check(value == value.lower(), f"{what} must be lowercase hex")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise InvalidDataError(f"invalid DataMap: {what} is not hex") from None
    _check(len(value) == 2 * len(raw), f"{what} must be plain hex")
    _check(size is None or len(raw) == size, f"{what} has the wrong length")
    return raw


def _json_entry(i: int, e: object) -> ChunkInfo:
    _check(isinstance(e, dict) and set(e) == _ENTRY_KEYS, "chunk entry has wrong keys")
    assert isinstance(e, dict)
    return ChunkInfo(
        name=_json_hex(e["name"], P.NAME_SIZE, "name"),
        src_hash=_json_hex(e["src_hash"], P.SRC_HASH_SIZE, "src_hash"),
        src_size=_json_int(e, "src_size"),
        index=i,
    )


def _from_doc(doc: object) -> DataMap:
    _check(isinstance(doc, dict) and set(doc) == _JSON_KEYS, "JSON has wrong keys")
    assert isinstance(doc, dict)
    _check(doc["format"] == P.MAP_JSON_FORMAT, "not a DataMap (bad format field)")
    _check(_json_int(doc, "version") == P.FORMAT_VERSION, "unsupported version")
    _check(doc["compression"] in P.COMPRESSION_IDS, "unknown compression algorithm")
    entries = doc["chunks"]
    _check(isinstance(entries, list) and len(entries) <= P.MAX_PARSE_ENTRIES, "bad chunk list")
    sid = doc["convergence_secret_id"]
    inline = doc["inline"]
    _check((entries == []) == (inline is not None), "a map has either chunks or inline content")
    return DataMap(
        total_size=_json_int(doc, "total_size"),
        chunks=tuple(_json_entry(i, e) for i, e in enumerate(entries)),
        inline=b"" if inline is None else _json_hex(inline, None, "inline"),
        child=_json_int(doc, "child"),
        compression=P.COMPRESSION_IDS[doc["compression"]],
        level=_json_int(doc, "level"),
        secret_id=b"" if sid is None else _json_hex(sid, P.SECRET_ID_SIZE, "secret id"),
    )
