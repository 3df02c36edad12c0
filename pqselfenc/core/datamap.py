"""The DataMap: the list of chunk keys that remains secret, with a strict canonical encoding.

Binary form (docs/format.md has every byte)::

    magic "PQSEMAP\\0" | version u8 | child u8 | compression u8 | level u8
    | secret_id_len u8 (0 or 16) | secret_id | total_size u64 | count u32
    | count == 0: inline_len u8 | inline bytes
    | count  > 0: count * (src_hash 32 | name 32 | src_size u32)

All integers are big-endian. The parser accepts exactly one encoding of each map: bounded
counts, exact lengths, no trailing bytes, consistent sizes; anything else is InvalidDataError.
Every size a map claims is bounded by what a writer makes (docs/format.md 2.1): a piece is at
most ``MAX_SRC_SIZE`` bytes, the entries follow the chunking policy, and a parent level holds a
serialized map of more than ``MAX_MAP_ENTRIES`` and at most ``MAX_PARSE_ENTRIES`` entries, so
no claim can make a reader reserve more than an honest map of that shape.
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
    version: int = 0  # chunk format version; 0: the one writers use for this compression

    def __post_init__(self) -> None:
        if not isinstance(self.chunks, tuple | list):
            raise TypeError("chunks must be a tuple of ChunkInfo")
        object.__setattr__(self, "chunks", tuple(self.chunks))
        _check_types(self)
        if self.version == 0:
            object.__setattr__(self, "version", P.writer_version(self.compression))
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
        return P.pipeline_id(self.compression, self.level, self.version)

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
            self.version,
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
        return _Reader(memoryview(data).cast("B")).data_map()

    # -- JSON --------------------------------------------------------------------------------

    def to_json(self) -> str:
        """A JSON form for people (hex strings). As secret as the binary form."""
        doc: dict[str, Any] = {
            "format": P.MAP_JSON_FORMAT,
            "version": self.version,
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
        return _from_doc(_parse_json(text))

    def check_child_head(self, head: bytes | bytearray | memoryview) -> None:
        """Check the first bytes of this parent's content before the rest is fetched: they must
        start a map that this one can point at (one level down, same pipeline, secret id and
        total size, and exactly as many entries as this level's sizes hold)."""
        _check(self.child > 0, "only a parent map has a child")
        h = _Reader(memoryview(head).cast("B")).head()
        same = (h.child, h.compression, h.level, h.version, h.secret_id, h.total_size) == (
            self.child - 1, self.compression, self.level, self.version, self.secret_id,
            self.total_size,
        )  # fmt: skip
        if not same or h.size + h.count * _ENTRY.size != self.content_size:
            raise InvalidDataError(
                f"DataMap level {self.child} points at an inconsistent child map"
            )


# ---------------------------------------------------------------------------------------------


def _size(info: ChunkInfo) -> int:
    assert info.src_size is not None
    return info.src_size


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_types(m: DataMap) -> None:
    """Misuse of the constructor is a ``TypeError`` (the parsers never pass a wrong type)."""
    for field in ("total_size", "child", "compression", "level", "version"):
        if not _is_int(getattr(m, field)):
            raise TypeError(f"DataMap {field} must be an int")
    for field in ("inline", "secret_id"):
        if not isinstance(getattr(m, field), bytes):
            raise TypeError(f"DataMap {field} must be bytes")
    for c in m.chunks:
        if not isinstance(c, ChunkInfo) or not (c.src_size is None or _is_int(c.src_size)):
            raise TypeError("DataMap chunks must be ChunkInfo values with an int src_size")


def _validate(m: DataMap) -> None:
    """Invariants shared by the constructor and both parsers (raise InvalidDataError)."""
    _check(0 <= m.total_size < 1 << 64, "total size out of range")
    _check(0 <= m.child <= P.MAX_MAP_LEVEL, "map level out of range")
    _check(m.compression in P.COMPRESSION_NAMES, "unknown compression algorithm")
    if m.compression == P.COMPRESSION_NONE:
        _check(m.level == 0, "compression level without compression")
    else:
        _check(1 <= m.level <= 22, "compression level out of range")
    _check(m.version in P.FORMAT_VERSIONS, f"unsupported version {m.version}")
    _check(
        m.version == P.FORMAT_VERSION or m.compression != P.COMPRESSION_NONE,
        "format version 2 is only for compressed pipelines",
    )
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
        _check(0 < _size(c) <= P.MAX_SRC_SIZE, "chunk size out of range")
    _check_layout(m)
    if m.child == 0:
        _check(m.content_size == m.total_size, "chunk sizes do not add up to the total size")
    else:
        _check_parent_content(m)
    object.__setattr__(
        m, "chunks", tuple(c if c.index == i else _indexed(c, i) for i, c in enumerate(m.chunks))
    )


def _check_layout(m: DataMap) -> None:
    """The entries' sizes are a layout the chunking policy (docs/format.md 1.1) can produce:
    every piece but the last equal and at most MAX_CHUNK_SIZE; the last at most the piece,
    or (``min_chunks`` pieces of ``content // min_chunks``) larger by less than the count."""
    n, piece, last = len(m.chunks), _size(m.chunks[0]), _size(m.chunks[-1])
    _check(all(_size(c) == piece for c in m.chunks[:-1]), "chunk sizes are not a valid layout")
    _check(piece <= P.MAX_CHUNK_SIZE, "chunk size out of range")
    if last > piece:
        _check(n <= P.MAX_MIN_CHUNKS and last - piece < n, "chunk sizes are not a valid layout")


def _check_parent_content(m: DataMap) -> None:
    """A parent level decrypts to a serialized map of more than MAX_MAP_ENTRIES entries (a
    writer wraps nothing smaller) and at most MAX_PARSE_ENTRIES; at level 1 that child names
    at most one chunk per byte of content. Checked before any chunk is fetched."""
    body = m.content_size - P.MAP_HEAD_SIZE - len(m.secret_id)
    count, rest = divmod(body, _ENTRY.size)
    _check(rest == 0 and count > P.MAX_MAP_ENTRIES, "a parent's sizes do not hold a child map")
    _check(count <= P.MAX_PARSE_ENTRIES, "a parent's sizes claim too large a child map")
    _check(m.child > 1 or count <= m.total_size, "a parent's sizes claim too large a child map")


def _indexed(c: ChunkInfo, index: int) -> ChunkInfo:
    return ChunkInfo(name=c.name, src_hash=c.src_hash, src_size=c.src_size, index=index)


def _check(ok: bool, what: str) -> None:
    if not ok:
        raise InvalidDataError(f"invalid DataMap: {what}")


@dataclass(frozen=True)
class _Head:
    """The fixed part of a binary map, up to and including the entry count."""

    version: int
    child: int
    compression: int
    level: int
    secret_id: bytes
    total_size: int
    count: int
    size: int  # bytes read


class _Reader:
    """Cursor over untrusted bytes: every read is length-checked."""

    def __init__(self, data: memoryview) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> memoryview:
        _check(self.pos + n <= len(self.data), "truncated")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def head(self) -> _Head:
        magic, version, child, comp, level, sid_len = _HEAD.unpack(self.take(_HEAD.size))
        _check(magic == P.MAP_MAGIC, "not a DataMap (bad magic)")
        _check(version in P.FORMAT_VERSIONS, f"unsupported version {version}")
        _check(sid_len in (0, P.SECRET_ID_SIZE), "bad convergence secret id length")
        secret_id = bytes(self.take(sid_len))
        total, count = _TOTAL_COUNT.unpack(self.take(_TOTAL_COUNT.size))
        _check(count <= P.MAX_PARSE_ENTRIES, "too many chunk entries")
        return _Head(version, child, comp, level, secret_id, total, count, self.pos)

    def data_map(self) -> DataMap:
        h = self.head()
        inline = bytes(self.take(self.take(1)[0])) if h.count == 0 else b""
        _check(len(self.data) - self.pos == h.count * _ENTRY.size, "wrong length for entry count")
        chunks = [
            ChunkInfo(name=name, src_hash=src, src_size=size, index=i)
            for i, (src, name, size) in enumerate(
                _ENTRY.iter_unpack(self.take(len(self.data) - self.pos))
            )
        ]
        return DataMap(
            h.total_size, tuple(chunks), inline, h.child, h.compression, h.level, h.secret_id,
            h.version,
        )  # fmt: skip


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


def _parse_json(text: str | bytes) -> object:
    """JSON text (bytes: UTF-8, decoded strictly, no byte-order mark) bounded before
    ``json.loads`` by its size and its count of values (docs/format.md 2.3)."""
    if len(text) > P.MAX_MAP_JSON_SIZE:
        raise InvalidDataError(f"DataMap JSON is larger than any map a writer makes "
                               f"({P.MAX_MAP_JSON_SIZE} bytes)")  # fmt: skip
    if _separators(text) > P.MAX_MAP_JSON_VALUES:
        raise InvalidDataError("DataMap JSON holds more values than any map a writer makes")
    try:
        text = text.decode("utf-8") if isinstance(text, bytes) else text  # never a guess
    except UnicodeDecodeError as exc:
        raise InvalidDataError("DataMap JSON is not UTF-8") from exc
    try:  # a leading U+FEFF (a UTF-8 byte-order mark) is not JSON whitespace: it fails here
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        raise InvalidDataError("DataMap JSON does not parse") from exc


def _separators(text: str | bytes) -> int:
    """How many ``,`` ``[`` ``{`` are in ``text``: each value but the first of a container
    follows one, so with the containers they bound the objects ``json.loads`` makes."""
    if isinstance(text, str):
        return text.count(",") + text.count("[") + text.count("{")
    return text.count(b",") + text.count(b"[") + text.count(b"{")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Objects with a key twice are refused: two readers could disagree on its value."""
    doc = dict(pairs)
    if len(doc) != len(pairs):
        raise ValueError("duplicate key in a JSON object")
    return doc


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _json_int(doc: dict[str, Any], key: str) -> int:
    value = doc[key]
    _check(_is_int(value), f"{key} must be an integer")
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
    _check(_json_int(doc, "version") in P.FORMAT_VERSIONS, "unsupported version")
    compression = doc["compression"]
    _check(isinstance(compression, str) and compression in P.COMPRESSION_IDS,
           "unknown compression algorithm")  # fmt: skip
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
        compression=P.COMPRESSION_IDS[compression],
        level=_json_int(doc, "level"),
        secret_id=b"" if sid is None else _json_hex(sid, P.SECRET_ID_SIZE, "secret id"),
        version=_json_int(doc, "version"),
    )
