"""``DirectoryChunkStore``: the embedded default, one file per chunk on a local disk.

Layout: ``ROOT/ab/abcdef…`` (64 hex digits, spread over 256 two-hex-digit folders). A write goes
to a temp file in the same folder, is fsynced, renamed over the final name and the folder is
fsynced: a crash leaves either the whole chunk or nothing under its name (a stray ``.tmp-*``
file at most, which ``__iter__`` ignores and ``clean_temp`` removes). Every read is verified.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pqselfenc.core._store import (
    ChunkInfo,
    ChunkStore,
    EncryptedChunk,
    short_name,
    verify_chunk,
)
from pqselfenc.error import ChunkNotFound, ChunkStoreError

__all__ = ["DirectoryChunkStore"]

_TEMP_PREFIX = ".tmp-"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class DirectoryChunkStore(ChunkStore):
    """Chunks as files under ``root`` (created if missing). ``fsync=False`` trades crash
    durability for speed; atomicity (no partial chunk under a name) holds either way."""

    verifies_on_retrieve = True

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.root = Path(root)
        self.fsync = fsync
        if self.root.exists() and not self.root.is_dir():
            raise ChunkStoreError(f"{self.root} is not a directory")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ChunkStoreError(
                f"cannot create chunk store at {self.root}: {exc.strerror}"
            ) from exc
        if not self.root.is_dir():
            raise ChunkStoreError(f"{self.root} is not a directory")

    def __repr__(self) -> str:
        return f"DirectoryChunkStore({str(self.root)!r})"

    def path_of(self, info: ChunkInfo) -> Path:
        """Where the chunk named by ``info`` lives: ``ROOT/ab/abcdef…`` (hex name, sharded
        by its first two digits). The file may not exist."""
        name = info.hex_name
        return self.root / name[:2] / name

    def store(self, chunk: bytes) -> ChunkInfo:
        info = ChunkInfo.for_chunk(chunk)
        self._keep(info, chunk)
        return info

    def _store_named(self, chunk: EncryptedChunk) -> None:
        """Store a chunk the engine named from these exact bytes, without hashing it again
        (every read verifies the name anyway)."""
        if self._hooks_store(DirectoryChunkStore):
            return super()._store_named(chunk)
        self._keep(chunk.info, chunk.content)

    def _keep(self, info: ChunkInfo, chunk: bytes) -> None:
        path = self.path_of(info)
        if path.exists():
            return  # deduplicated: same name, same bytes
        try:
            self._write(path, chunk)
        except OSError as exc:
            raise ChunkStoreError(
                f"cannot write chunk {short_name(info.name)} to {self.root}: {exc.strerror}"
            ) from exc

    def _write(self, path: Path, chunk: bytes) -> None:
        folder = path.parent
        fresh = not folder.exists()
        folder.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_TEMP_PREFIX, dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(chunk)
                if self.fsync:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        if self.fsync:
            _fsync_dir(folder)
            if fresh:
                _fsync_dir(self.root)

    def retrieve(self, info: ChunkInfo) -> bytes:
        try:
            content = self.path_of(info).read_bytes()
        except FileNotFoundError:
            raise ChunkNotFound(f"chunk {short_name(info.name)} is not in {self.root}") from None
        except OSError as exc:
            raise ChunkStoreError(
                f"cannot read chunk {short_name(info.name)}: {exc.strerror}"
            ) from exc
        return verify_chunk(info, content)

    def has(self, info: ChunkInfo) -> bool:
        return self.path_of(info).is_file()

    def delete(self, info: ChunkInfo) -> None:
        try:
            self.path_of(info).unlink(missing_ok=True)
        except OSError as exc:
            raise ChunkStoreError(
                f"cannot delete chunk {short_name(info.name)}: {exc.strerror}"
            ) from exc

    def __iter__(self) -> Iterator[ChunkInfo]:
        for folder in sorted(self.root.iterdir()):
            if len(folder.name) != 2 or not folder.is_dir():
                continue
            for path in sorted(folder.iterdir()):
                info = _info_of(path.name, folder.name)
                if info is not None:
                    yield info

    def clean_temp(self) -> int:
        """Remove temp files left by interrupted writes; returns how many."""
        removed = 0
        for tmp in self.root.glob(f"??/{_TEMP_PREFIX}*"):
            tmp.unlink(missing_ok=True)
            removed += 1
        return removed


def _info_of(file_name: str, folder: str) -> ChunkInfo | None:
    if len(file_name) != 64 or not file_name.startswith(folder):
        return None
    try:
        return ChunkInfo(name=bytes.fromhex(file_name))
    except ValueError:
        return None
