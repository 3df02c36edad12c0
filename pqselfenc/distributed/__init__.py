"""Encrypt and decrypt on a Dask cluster (``pip install 'pqselfenc[dask]'``).

>>> from dask.distributed import Client
>>> from pqselfenc import distributed
>>> with Client("tcp://scheduler:8786") as client:
...     data_map = distributed.encrypt(client, "s3://data/archive.tar", "s3://chunks/pqselfenc")
...     distributed.decrypt(client, data_map, "s3://chunks/pqselfenc", "s3://data/restored.tar")

The input is cut into ranges of whole chunks, one task each; workers read their ranges
straight from the source (ranged S3 reads, or a path every worker sees), put the chunks
straight into the store and hand back only the DataMap entries. The DataMap is byte-identical
to what ``SelfEncryptor`` and ``encrypt_file`` make of the same bytes and config, for any
number of workers and any ``task_size``. Decryption writes ranges in parallel into a temp file
next to the destination or into an S3 multipart upload, each chunk verified as on every read;
the destination appears only when complete (after a failure the temp file is removed, the
upload aborted).

Sources, stores and destinations are given as ``s3://bucket/key`` URLs (``?endpoint=URL`` and
``?region=NAME`` as for ``S3ChunkStore.from_url``) or paths that every worker sees. They never
carry credentials (such a URL is refused): workers use their own, the usual boto3 way. What
does travel in task arguments is what the workers need to do the work: the config (with the
convergence secret, if any) and, for decryption, the DataMap; results carry chunk source
hashes. Those are secrets: run the cluster where you would run the encryption, and use TLS
(``tls://`` addresses and a ``distributed.security.Security``) on any network you do not trust.
docs/distributed.md says how it scales and where the limits are.

Importing this module does not import dask; calling one of its functions does.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from pqselfenc import DataMap, EncryptionConfig
from pqselfenc.distributed._locations import location
from pqselfenc.error import EncryptionError

if TYPE_CHECKING:
    from distributed import Client

__all__ = ["DEFAULT_TASK_SIZE", "decrypt", "encrypt", "encrypt_many"]

DEFAULT_TASK_SIZE = 64 << 20  # bytes of plaintext per task, rounded up to whole chunks
_MAX_TASK_SIZE = 1 << 40

Place = str | os.PathLike[str]


def encrypt(
    client: Client,
    source: Place,
    store: Place,
    config: EncryptionConfig | None = None,
    *,
    task_size: int = DEFAULT_TASK_SIZE,
) -> DataMap:
    """Self-encrypt ``source`` into ``store`` on the cluster behind ``client``; the DataMap.

    ``source`` is an ``s3://bucket/key`` object or a file every worker can read at that path;
    ``store`` is an ``s3://bucket/prefix`` or a folder every worker can write (it must exist).
    ``task_size`` is the plaintext per task in bytes, rounded up to whole chunks; it never
    changes the output. Raises ``EncryptionError`` for a missing, unreadable or changing
    source, ``ChunkStoreError`` for a missing or failing store, ``ValueError`` for a URL that
    carries credentials.
    """
    return encrypt_many(client, [source], store, config, task_size=task_size)[0]


def encrypt_many(
    client: Client,
    sources: Sequence[Place],
    store: Place,
    config: EncryptionConfig | None = None,
    *,
    task_size: int = DEFAULT_TASK_SIZE,
) -> list[DataMap]:
    """``encrypt`` for many inputs at once (their tasks share the cluster); the DataMaps in
    the order of ``sources``. The first failure cancels the rest and is raised."""
    from pqselfenc.distributed._cluster import run_encrypt

    if isinstance(sources, str | bytes | os.PathLike):
        raise TypeError("sources must be a sequence of sources, not one source")
    places = [location(s, "source", object_key=True) for s in sources]
    where = location(store, "store", object_key=False)
    config = _config(config)
    if not places:
        return []
    return run_encrypt(_client(client), places, where, config, _task_size(task_size))


def decrypt(
    client: Client,
    data_map: DataMap,
    store: Place,
    destination: Place,
    config: EncryptionConfig | None = None,
    *,
    task_size: int = DEFAULT_TASK_SIZE,
    overwrite: bool = True,
    mode: int = 0o600,
) -> None:
    """Decrypt ``data_map`` from ``store`` into ``destination`` on the cluster.

    ``destination`` is an ``s3://bucket/key`` object (a multipart upload, parts in parallel;
    parts are at least 5 MiB, so ``task_size`` is raised to that) or a path every worker can
    write (a temp file beside it, renamed into place; the file gets ``mode``). With
    ``overwrite=False`` an existing destination is refused. ``config`` supplies the convergence
    secret if the map needs one. Every chunk is verified (``IntegrityError``); on any failure
    nothing appears under the destination's name.
    """
    from pqselfenc.distributed._cluster import run_decrypt

    if not isinstance(data_map, DataMap):
        raise TypeError("data_map must be a DataMap")
    if config is not None and not isinstance(config, EncryptionConfig):
        raise TypeError("config must be an EncryptionConfig")
    where = location(store, "store", object_key=False)
    dest = location(destination, "destination", object_key=True)
    if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 0o7777:
        raise ValueError("mode must be a file mode (an int between 0 and 0o7777)")
    options = (_task_size(task_size), bool(overwrite), mode)
    run_decrypt(_client(client), data_map, where, dest, config, options)


def _config(config: EncryptionConfig | None) -> EncryptionConfig:
    if config is None:
        return EncryptionConfig()
    if not isinstance(config, EncryptionConfig):
        raise TypeError("config must be an EncryptionConfig")
    return config


def _task_size(task_size: object) -> int:
    if isinstance(task_size, bool) or not isinstance(task_size, int):
        raise TypeError("task_size must be an int")
    if not 1 <= task_size <= _MAX_TASK_SIZE:
        raise ValueError(f"task_size must be between 1 and {_MAX_TASK_SIZE} bytes")
    return task_size


def _client(client: object) -> Client:
    try:
        from distributed import Client
    except ImportError as exc:
        raise EncryptionError(
            "pqselfenc.distributed needs dask: pip install 'pqselfenc[dask]'"
        ) from exc
    if not isinstance(client, Client):
        raise TypeError("client must be a dask.distributed.Client")
    if client.asynchronous:
        raise TypeError("client must be a synchronous Client (asynchronous=False)")
    return client
