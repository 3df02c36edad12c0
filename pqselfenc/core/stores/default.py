"""The embedded default: pqselfenc's home folder and the chunk store inside it.

The home is ``$PQSELFENC_HOME``, else ``$XDG_DATA_HOME/pqselfenc``, else
``~/.local/share/pqselfenc``. Chunks go to ``HOME/chunks`` (a ``DirectoryChunkStore``) when no
store is named: the ``pqselfenc`` command without ``--store``, ``StreamEncryptor`` and
``StreamDecryptor`` without ``chunk_store``. The key store is ``HOME/keys``
(``pqselfenc.keys.defaults``). This is the one place that says so.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from pqselfenc.core.stores.directory import DirectoryChunkStore
from pqselfenc.error import ChunkStoreError

__all__ = ["HOME_ENV", "default_chunk_store", "default_home", "default_store_path"]

HOME_ENV = "PQSELFENC_HOME"
_LOG = logging.getLogger("pqselfenc")


def default_home(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Where keys, the audit log and the default chunk store live.

    ``explicit`` (e.g. the command's ``--home``), else ``$PQSELFENC_HOME``, else
    ``$XDG_DATA_HOME/pqselfenc``, else ``~/.local/share/pqselfenc``. Nothing is created.
    """
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).expanduser()
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data).expanduser() / "pqselfenc"


def default_store_path(home: str | os.PathLike[str] | None = None) -> Path:
    """The folder of the default chunk store: ``HOME/chunks``."""
    return default_home(home) / "chunks"


def default_chunk_store(*, create: bool) -> DirectoryChunkStore:
    """The default chunk store, ``HOME/chunks``, for a job that named no store.

    ``create``: make the folder if it is missing (a writer); a reader gets ``ChunkStoreError``
    instead, since there cannot be chunks in it. Logs the folder at INFO (logger
    ``pqselfenc``), so a program can show where its chunks went.
    """
    path = default_store_path()
    if not create and not path.is_dir():
        raise ChunkStoreError(
            f"no chunk_store given and the default store {path} does not exist: pass the "
            "chunk_store the data was encrypted into"
        )
    _LOG.info("no chunk_store given: using the default chunk store %s", path)
    return DirectoryChunkStore(path)
