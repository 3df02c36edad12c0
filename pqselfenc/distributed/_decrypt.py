"""Decryption tasks: what the workers run for ``pqselfenc.distributed.decrypt``.

``leaf_of`` follows a hierarchical map down to its level-0 map (each level checked against its
parent) on one worker; the range tasks take that leaf as a dependency, so it moves between
workers and never through the client. Each range task fetches, verifies and decrypts its
chunks with the engine's ``iter_plain`` (name, GCM tag, size, SHA3 of the plaintext: the checks
of every other read) and writes them to the destination prepared by ``prepare``:

- a path: a temp file ``.pqselfenc-*`` next to the destination, created 0600 and preallocated
  to the full size; each task opens it without following links, checks it is still the file
  ``prepare`` made (device, inode and owner, and still 0600: an inode number alone can be
  reused), writes its range with ``pwrite`` and fsyncs. ``commit`` checks the file again and
  what is at the destination now (a FIFO, device, socket or folder is never replaced), sets
  its mode (replacing a file: the stricter of the mode and that file's, as one machine does:
  ``core._durable.replacing_mode``), fsyncs it, renames it over the destination (or links it,
  to refuse an existing one) and fsyncs the folder. ``abort`` removes it (only if it is still
  that file).
- an S3 object: a multipart upload (SHA-256 checksum per part); each task uploads one part.
  ``commit`` completes it (``If-None-Match: *`` when overwriting is refused) and checks the
  object's size; ``abort`` aborts it and checks that the upload is gone.

The client runs ``abort`` after any failure, once no task of the job is running any more, so
nothing is left looking complete under the destination's name.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import os
import stat
import tempfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from pqselfenc import DataMap, EncryptionConfig
from pqselfenc.core import _durable
from pqselfenc.distributed._engine import expand, iter_plain, keys_for_map
from pqselfenc.distributed._locations import Location, S3Location, client_for, open_store, s3_error
from pqselfenc.distributed._task import task
from pqselfenc.error import EncryptionError, IntegrityError

__all__ = [
    "FileTarget",
    "Target",
    "UploadTarget",
    "abort",
    "commit",
    "decrypt_range",
    "leaf_of",
    "prepare",
    "shape_of",
]

TEMP_PREFIX = ".pqselfenc-"
_FETCH_THREADS = 4  # chunk fetches in flight per task: hides store latency behind decryption
_ABORT_TRIES = 3


@dataclass(frozen=True)
class FileTarget:
    """A destination path and the temp file that becomes it: its device, inode and owner.
    (An inode number alone can be reused by a file made after ours was removed.)"""

    path: str
    temp: str
    identity: tuple[int, int, int]

    def made(self, info: os.stat_result) -> bool:
        """Whether ``info`` is of the file ``prepare`` made (wherever it is now)."""
        found = (info.st_dev, info.st_ino, info.st_uid)
        return stat.S_ISREG(info.st_mode) and found == self.identity

    def still_temp(self, info: os.stat_result) -> bool:
        """``made``, and still private (0600 until the commit sets the final mode)."""
        return self.made(info) and not info.st_mode & 0o077


@dataclass(frozen=True)
class UploadTarget:
    """A destination object and the multipart upload that becomes it."""

    where: S3Location
    upload_id: str


Target = FileTarget | UploadTarget


@task
def leaf_of(store: Location, data_map: DataMap, config: EncryptionConfig | None) -> DataMap:
    """The level-0 map of ``data_map`` (checks the convergence secret on the way)."""
    leaf = expand(data_map, open_store(store), config)
    keys_for_map(leaf, config)
    return leaf


@task
def shape_of(leaf: DataMap) -> tuple[int, int]:
    """``(chunk count, size of every chunk but the last)`` of a level-0 map."""
    if not leaf.chunks:
        return 0, 0
    size = leaf.chunks[0].src_size
    assert size is not None
    return len(leaf.chunks), size


@task
def prepare(dest: Location, total: int, overwrite: bool) -> Target:
    """Make the temp file or start the multipart upload."""
    if isinstance(dest, S3Location):
        return _start_upload(dest, overwrite)
    return _make_temp(dest.path, total, overwrite)


@task
def decrypt_range(
    store: Location,
    leaf: DataMap,
    config: EncryptionConfig | None,
    target: Target,
    first: int,
    stop: int,
    part: int,
) -> Any:
    """Decrypt chunks ``first .. stop - 1`` (the inline content for a map without chunks) into
    ``target``: bytes written (a path) or the part's entry (an upload)."""
    keys = keys_for_map(leaf, config)
    offset = first * (leaf.chunks[0].src_size or 0) if leaf.chunks else 0
    with ThreadPoolExecutor(_FETCH_THREADS, thread_name_prefix="pqselfenc-fetch") as pool:
        plain = iter_plain(leaf, open_store(store), keys, pool, 2 * _FETCH_THREADS, first, stop)
        if isinstance(target, UploadTarget):
            return _upload_part(target, part, b"".join(plain))
        return _write_range(target, offset, plain)


@task
def commit(target: Target, total: int, mode: int, overwrite: bool, *parts: Any) -> None:
    """Make the destination appear, complete and verified, under its name."""
    if isinstance(target, UploadTarget):
        _complete_upload(target, total, overwrite, list(parts))
        return
    if sum(parts) != total:
        raise IntegrityError(f"decrypted {sum(parts)} bytes, the map says {total}")
    _publish(target, mode, overwrite)


@task
def abort(target: Target) -> None:
    """Remove the temp file, or abort the multipart upload (until the server lists it no more)."""
    if isinstance(target, UploadTarget):
        _abort_upload(target)
        return
    with contextlib.suppress(FileNotFoundError):
        if target.still_temp(os.lstat(target.temp)):
            os.unlink(target.temp)


# -- a path ------------------------------------------------------------------------------------


def _os_error(path: str, exc: OSError) -> EncryptionError:
    return EncryptionError(f"cannot write {path}: {exc.strerror or type(exc).__name__}")


def _replaceable(path: str, overwrite: bool) -> os.stat_result | None:
    """What is at the destination now, if the decryption may replace it (before any work, and
    again at publish): never a folder, FIFO, device or socket; anything only with
    ``overwrite``."""
    if os.path.isdir(path):
        raise EncryptionError(f"destination {path} is a folder")
    try:
        old = _durable.check_replaceable(path)
    except _durable.UnsafeFileError as exc:
        raise EncryptionError(f"destination {path} {exc.strerror}") from None
    except OSError as exc:
        raise _os_error(path, exc) from exc
    if old is not None and not overwrite:
        raise EncryptionError(f"destination {path} already exists")
    return old


def _make_temp(path: str, total: int, overwrite: bool) -> FileTarget:
    _replaceable(path, overwrite)
    folder = os.path.dirname(path)
    try:
        fd, temp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=folder)  # 0600, O_EXCL, no links
    except OSError as exc:
        raise _os_error(path, exc) from exc
    try:
        _preallocate(fd, total)
        info = os.fstat(fd)
    except OSError as exc:
        os.unlink(temp)
        raise _os_error(path, exc) from exc
    finally:
        os.close(fd)
    return FileTarget(path, temp, (info.st_dev, info.st_ino, info.st_uid))


def _preallocate(fd: int, total: int) -> None:
    if total == 0:
        return
    try:
        os.posix_fallocate(fd, 0, total)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise
        os.ftruncate(fd, total)  # a filesystem without fallocate: sparse, same size


def _open_temp(target: FileTarget, flags: int) -> int:
    """The temp file, refused if it is not the one ``prepare`` made (a link or another file)."""
    try:
        fd = os.open(target.temp, flags | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise _os_error(target.path, exc) from exc
    if not target.still_temp(os.fstat(fd)):
        os.close(fd)
        raise EncryptionError(f"the temp file of {target.path} was replaced by another file")
    return fd


def _write_range(target: FileTarget, offset: int, pieces: Iterable[bytes]) -> int:
    fd = _open_temp(target, os.O_WRONLY)
    written = 0
    try:
        for piece in pieces:
            view = memoryview(piece)
            while view:
                n = os.pwrite(fd, view, offset + written)
                view = view[n:]
                written += n
        os.fsync(fd)
    except OSError as exc:
        raise _os_error(target.path, exc) from exc
    finally:
        os.close(fd)
    return written


def _published(target: FileTarget) -> bool:
    """Whether a previous run of this commit (on a worker that then died) already renamed
    the temp file into place: the destination is then the very file the tasks wrote."""
    with contextlib.suppress(OSError):
        if os.path.lexists(target.temp):
            return False
        return target.made(os.lstat(target.path))
    return False


def _publish(target: FileTarget, mode: int, overwrite: bool) -> None:
    if _published(target):
        return
    old = _replaceable(target.path, overwrite)  # what may have appeared there since prepare
    fd = _open_temp(target, os.O_RDONLY)
    try:
        os.fchmod(fd, _durable.replacing_mode(mode, old))
        os.fsync(fd)
    except OSError as exc:
        raise _os_error(target.path, exc) from exc
    finally:
        os.close(fd)
    try:
        _rename(target.temp, target.path, overwrite)
        _fsync_folder(os.path.dirname(target.path))
    except OSError as exc:
        raise _os_error(target.path, exc) from exc


def _rename(temp: str, path: str, overwrite: bool) -> None:
    if overwrite:
        os.replace(temp, path)
        return
    try:
        os.link(temp, path)  # atomic "only if absent"
    except FileExistsError:
        raise EncryptionError(f"destination {path} already exists") from None
    os.unlink(temp)


def _fsync_folder(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# -- an S3 object ------------------------------------------------------------------------------


def _s3_failure(where: S3Location, exc: Exception) -> EncryptionError:
    _, status, reason = s3_error(exc)
    if status == 412:
        return EncryptionError(f"destination {where} already exists")
    return EncryptionError(f"cannot write destination {where}: {reason}")


def _start_upload(where: S3Location, overwrite: bool) -> UploadTarget:
    client = client_for(where)
    if not overwrite and _exists(client, where):
        raise EncryptionError(f"destination {where} already exists")
    try:
        answer = client.create_multipart_upload(
            Bucket=where.bucket,
            Key=where.key,
            ChecksumAlgorithm="SHA256",
            ContentType="application/octet-stream",
        )
    except Exception as exc:
        raise _s3_failure(where, exc) from exc
    return UploadTarget(where, str(answer["UploadId"]))


def _exists(client: Any, where: S3Location) -> bool:
    try:
        client.head_object(Bucket=where.bucket, Key=where.key)
    except Exception as exc:
        if s3_error(exc)[1] == 404:
            return False
        raise _s3_failure(where, exc) from exc
    return True


def _upload_part(target: UploadTarget, part: int, body: bytes) -> dict[str, Any]:
    where = target.where
    checksum = base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")
    try:
        answer = client_for(where).upload_part(
            Bucket=where.bucket,
            Key=where.key,
            UploadId=target.upload_id,
            PartNumber=part,
            Body=body,
            ChecksumSHA256=checksum,
        )
    except Exception as exc:
        raise _s3_failure(where, exc) from exc
    return {
        "PartNumber": part,
        "ETag": answer["ETag"],
        "ChecksumSHA256": checksum,
        "Size": len(body),
    }


def _complete_upload(target: UploadTarget, total: int, overwrite: bool, parts: list[Any]) -> None:
    where = target.where
    if sum(p["Size"] for p in parts) != total:
        raise IntegrityError(
            f"decrypted {sum(p['Size'] for p in parts)} bytes, the map says {total}"
        )
    listed = [{k: p[k] for k in ("PartNumber", "ETag", "ChecksumSHA256")} for p in parts]
    listed.sort(key=lambda p: p["PartNumber"])
    extra = {} if overwrite else {"IfNoneMatch": "*"}
    client = client_for(where)
    try:
        client.complete_multipart_upload(
            Bucket=where.bucket,
            Key=where.key,
            UploadId=target.upload_id,
            MultipartUpload={"Parts": listed},
            **extra,
        )
    except Exception as exc:
        # A retried commit (its first run completed, then its worker died) finds the upload
        # gone or the object there: fine if the object is the one these parts make.
        if not _completed(client, where, listed, total):
            raise _s3_failure(where, exc) from exc
    head = _head(client, where)
    if int(head["ContentLength"]) != total:
        raise IntegrityError(
            f"destination {where} holds {head['ContentLength']} bytes, not {total}"
        )


def _head(client: Any, where: S3Location) -> Any:
    try:
        return client.head_object(Bucket=where.bucket, Key=where.key)
    except Exception as exc:
        raise _s3_failure(where, exc) from exc


def _multipart_etag(parts: list[dict[str, Any]]) -> str:
    """The ETag S3 gives an object completed from ``parts``: MD5 of the parts' MD5s, ``-N``."""
    digests = b"".join(bytes.fromhex(p["ETag"].strip('"')) for p in parts)
    return f'"{hashlib.md5(digests, usedforsecurity=False).hexdigest()}-{len(parts)}"'


def _completed(client: Any, where: S3Location, parts: list[dict[str, Any]], total: int) -> bool:
    try:
        head = client.head_object(Bucket=where.bucket, Key=where.key)
        return bool(head.get("ETag") == _multipart_etag(parts) and head["ContentLength"] == total)
    except Exception:
        return False  # not there, or ETags that are not MD5s: not provably ours


def _abort_upload(target: UploadTarget) -> None:
    """Abort; parts that were still arriving can outlive one abort, so repeat until the
    server no longer lists the upload."""
    where, client = target.where, client_for(target.where)
    for _ in range(_ABORT_TRIES):
        try:
            client.abort_multipart_upload(
                Bucket=where.bucket, Key=where.key, UploadId=target.upload_id
            )
        except Exception as exc:
            if s3_error(exc)[0] != "NoSuchUpload":
                raise _s3_failure(where, exc) from exc
        if not _upload_listed(client, target):
            return
    raise EncryptionError(f"the multipart upload to {where} could not be aborted")


def _upload_listed(client: Any, target: UploadTarget) -> bool:
    where = target.where
    try:
        page = client.list_multipart_uploads(Bucket=where.bucket, Prefix=where.key)
    except Exception as exc:
        raise _s3_failure(where, exc) from exc
    return any(u.get("UploadId") == target.upload_id for u in page.get("Uploads", ()))
