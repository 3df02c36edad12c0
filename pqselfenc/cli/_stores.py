"""Opening the chunk store named on the command line, and the progress-counting wrapper."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from pqselfenc.cli._output import CliError, Progress
from pqselfenc.core._store import ChunkInfo, ChunkStore, EncryptedChunk
from pqselfenc.core.stores import DirectoryChunkStore

__all__ = ["CountingStore", "default_store_path", "open_store"]

S3_SCHEME = "s3://"


def default_store_path(home: Path) -> Path:
    """The embedded default: a directory store inside the pqselfenc home."""
    return home / "chunks"


def open_store(spec: str, *, create: bool) -> ChunkStore:
    """The store ``spec`` names: ``s3://bucket/prefix`` or a folder (made only if ``create``)."""
    if spec.startswith(S3_SCHEME):
        return _open_s3(spec)
    path = Path(spec).expanduser()
    if not create and not path.exists():
        raise CliError(
            f"no chunk store at {path}",
            hint="pass the --store the files were encrypted into",
        )
    if path.exists() and not path.is_dir():
        raise CliError(f"chunk store {path} is not a directory")
    if not create and not os.access(path, os.R_OK | os.X_OK):
        raise CliError(f"chunk store {path} is not readable")
    return DirectoryChunkStore(path)


def _open_s3(url: str) -> ChunkStore:
    from pqselfenc.core.stores.s3 import S3ChunkStore  # boto3 (the [s3] extra) loads on use

    try:
        return S3ChunkStore.from_url(url)
    except ValueError as exc:
        raise CliError(str(exc), hint="e.g. --store 's3://bucket/prefix?endpoint=URL'") from exc


class CountingStore(ChunkStore):
    """Passes every call to ``inner`` and reports stored/fetched bytes to a progress bar.

    The count is clamped to ``total`` (ciphertext carries a few bytes more than the plaintext
    the bar is measured in), so the bar never runs past 100 %.
    """

    def __init__(self, inner: ChunkStore, progress: Progress, total: int) -> None:
        self._inner = inner
        self._progress = progress
        self._left = total
        self._lock = threading.Lock()
        self.verifies_on_retrieve = inner.verifies_on_retrieve

    def __repr__(self) -> str:
        return f"CountingStore({self._inner!r})"

    def _count(self, n: int) -> None:
        with self._lock:
            step = min(n, self._left)
            self._left -= step
        if step:
            self._progress.update(step)

    def store(self, chunk: bytes) -> ChunkInfo:
        info = self._inner.store(chunk)
        self._count(len(chunk))
        return info

    def _put_named(self, chunk: EncryptedChunk) -> None:
        self._inner._store_named(chunk)  # the engine named it: the inner store need not rehash
        self._count(len(chunk.content))

    @contextlib.contextmanager
    def _batch(self) -> Iterator[Callable[[EncryptedChunk], None]]:
        with self._inner._batch() as put:

            def counted(chunk: EncryptedChunk) -> None:
                put(chunk)
                self._count(len(chunk.content))

            yield counted

    def retrieve(self, info: ChunkInfo) -> bytes:
        content = self._inner.retrieve(info)
        self._count(len(content))
        return content

    def has(self, info: ChunkInfo) -> bool:
        return self._inner.has(info)

    def delete(self, info: ChunkInfo) -> None:
        self._inner.delete(info)

    def __iter__(self) -> Iterator[ChunkInfo]:
        return iter(self._inner)

    def finish(self) -> None:
        """Fill the bar: the job is done even if the byte estimate was high."""
        with self._lock:
            step, self._left = self._left, 0
        if step:
            self._progress.update(step)
