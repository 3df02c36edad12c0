"""Opening the chunk store named on the command line, and the progress-counting wrapper."""

from __future__ import annotations

import contextlib
import os
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from pqselfenc import ChunkInfo, ChunkStore, EncryptedChunk
from pqselfenc.cli._output import CliError, Progress
from pqselfenc.core.stores import DirectoryChunkStore, WrappingStore
from pqselfenc.core.stores import default as stores_default

if TYPE_CHECKING:
    from pqselfenc.core.stores._s3url import S3Location

__all__ = [
    "ByteCounter",
    "CountingStore",
    "check_store_spec",
    "default_store_path",
    "describe_store",
    "open_store",
]

S3_SCHEME = "s3://"
Put = Callable[[EncryptedChunk], None]
_URL_LIKE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:/|s3:", re.IGNORECASE)  # a scheme, or s3: alone


def default_store_path(home: Path) -> Path:
    """The embedded default: a directory store inside the pqselfenc home (``HOME/chunks``,
    where a library stream without a store puts its chunks too)."""
    return stores_default.default_store_path(home)


def check_store_spec(spec: str, origin: str) -> str:
    """``spec`` if it names a store unambiguously, else a ``CliError`` naming ``origin``
    (``--store`` or ``$PQSELFENC_STORE``): nothing empty, no control characters or surrounding
    blanks, no URL scheme but ``s3://``, and an ``s3://`` URL that its parser accepts."""
    if not spec:
        raise CliError(f"{origin} is empty", hint="give a folder or s3://BUCKET/PREFIX", code=2)
    bad = next((c for c in spec if not c.isprintable()), None)
    if bad is not None:
        raise CliError(f"{origin} has the control character {bad!r}", code=2)
    if spec != spec.strip():
        raise CliError(f"{origin} starts or ends with a blank", hint="quote it without "
                       "the blank, or name the folder without one", code=2)  # fmt: skip
    if spec.startswith(S3_SCHEME):
        _s3_location(spec, origin)
    elif _URL_LIKE.match(spec):
        raise CliError(f"{origin} is a URL pqselfenc does not know (only s3://, in lower case)",
                       hint="a folder name has no 'scheme:/'; write ./NAME for such a folder",
                       code=2)  # fmt: skip
    return spec


def _s3_location(url: str, origin: str) -> S3Location:
    from pqselfenc.core.stores._s3url import parse_s3_url  # no boto3 needed to parse

    try:
        return parse_s3_url(url)
    except ValueError as exc:
        raise CliError(f"{origin}: {exc}", hint="e.g. --store 's3://bucket/prefix?endpoint=URL'",
                       code=2) from exc  # fmt: skip


def describe_store(spec: str) -> str:
    """How results name the store: the canonical URL of an S3 store (never holding a
    secret: the parser refuses credentials), or the folder's path."""
    if spec.startswith(S3_SCHEME):
        return str(_s3_location(spec, "the store"))
    return str(Path(spec).expanduser())


def open_store(spec: str, *, create: bool) -> ChunkStore:
    """The store ``spec`` names: ``s3://bucket/prefix`` or a folder (made only if ``create``).
    ``spec`` has passed ``check_store_spec``."""
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
    except ValueError as exc:  # e.g. an endpoint variable that breaks the URL rules
        raise CliError(str(exc), hint="e.g. --store 's3://bucket/prefix?endpoint=URL'") from exc


class ByteCounter:
    """Counts bytes into a progress bar, clamped to ``total`` (ciphertext carries a few bytes
    more than the plaintext the bar is measured in), so the bar never runs past 100 %; safe
    from several threads."""

    def __init__(self, progress: Progress, total: int) -> None:
        self._progress = progress
        self._left = total
        self._lock = threading.Lock()

    def count(self, n: int) -> None:
        """Add ``n`` bytes (at most what is left of ``total``)."""
        with self._lock:
            step = min(n, self._left)
            self._left -= step
        if step:
            self._progress.update(step)

    def wrap(self, put: Put) -> Put:
        """``put``, counting each chunk's stored bytes after it is put."""

        def counted(chunk: EncryptedChunk) -> None:
            put(chunk)
            self.count(len(chunk.content))

        return counted

    def finish(self) -> None:
        """Fill the bar: the job is done even if the byte estimate was high."""
        with self._lock:
            step, self._left = self._left, 0
        if step:
            self._progress.update(step)


class CountingStore(WrappingStore):
    """Passes every call to ``inner`` and reports stored/fetched bytes to a progress bar
    (``ByteCounter``: clamped to ``total``). Writes keep the inner store's ``put_named`` and
    ``batch`` (batched durability included); each is counted as it is put.
    """

    def __init__(self, inner: ChunkStore, progress: Progress, total: int) -> None:
        super().__init__(inner)
        self._counter = ByteCounter(progress, total)

    def store(self, chunk: bytes) -> ChunkInfo:
        info = self.inner.store(chunk)
        self._counter.count(len(chunk))
        return info

    def put_named(self, chunk: EncryptedChunk) -> None:
        self._counter.wrap(self.inner.put_named)(chunk)

    @contextlib.contextmanager
    def batch(self) -> Iterator[Put]:
        with self.inner.batch() as put:
            yield self._counter.wrap(put)

    def retrieve(self, info: ChunkInfo) -> bytes:
        content = self.inner.retrieve(info)
        self._counter.count(len(content))
        return content

    def finish(self) -> None:
        """Fill the bar: the job is done even if the byte estimate was high."""
        self._counter.finish()
