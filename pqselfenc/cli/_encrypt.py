"""``pqselfenc encrypt`` and ``pqselfenc decrypt``."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from pathlib import Path
from typing import IO, Any, TypeVar

from pqselfenc.cli import _distributed, _escrow, _maps
from pqselfenc.cli._keyring import check_recipients, name_arg, secret_config
from pqselfenc.cli._output import (
    PROG,
    CliError,
    atomic_file,
    check_writable,
    default_file_mode,
)
from pqselfenc.cli._session import Session
from pqselfenc.cli._stores import ByteCounter, CountingStore
from pqselfenc.cli._values import count_arg, path_arg
from pqselfenc.core import _primitives as P
from pqselfenc.core._engine import executor_for
from pqselfenc.core._memory import MemoryConfig
from pqselfenc.core._store import ChunkStore, EncryptedChunk
from pqselfenc.core.config import CompressionConfig, EncryptionConfig, ParallelConfig
from pqselfenc.core.datamap import DataMap
from pqselfenc.core.files import encrypt_into

__all__ = ["add_parsers"]

T = TypeVar("T")
Put = Callable[[EncryptedChunk], None]

MAP_SUFFIX = ".map"


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    enc = sub.add_parser(
        "encrypt",
        parents=[common],
        help="self-encrypt files into a chunk store and write their DataMaps",
        description="Self-encrypt FILEs into the chunk store and write one DataMap per file "
        "(FILE.map by default). With --to the map is sealed for the named recipients; "
        "without, it is an unsealed secret written with mode 0600.",
    )
    enc.add_argument("files", nargs="+", metavar="FILE", help="files to encrypt (see --scheduler)")
    _store_option(enc)
    enc.add_argument(
        "--to",
        action="append",
        default=[],
        metavar="NAME",
        type=name_arg,
        help="seal the map for NAME, a recipient or one of your identities (repeatable)",
    )
    enc.add_argument(
        "--sign-as",
        metavar="NAME",
        type=name_arg,
        help="sign the sealed map with this identity of yours (needs --to)",
    )
    enc.add_argument(
        "--out",
        type=_map_out_arg,
        metavar="MAP",
        help="map file (one FILE) or existing folder for the maps (several)",
    )
    enc.add_argument(
        "--chunk-size",
        type=_size_arg,
        metavar="BYTES",
        help="chunk size (default 1M; suffixes K, M, G)",
    )
    enc.add_argument(
        "--compress",
        metavar="zstd[:LEVEL]",
        help="compress chunks (off by default: sizes then leak compressibility)",
    )
    enc.add_argument(
        "--private-dedup",
        action="store_true",
        help="key chunks with your key store's convergence secret, so only holders "
        "of the secret can match content (recipients need the secret too)",
    )
    _threads_option(enc)
    _distributed.add_option(enc)
    enc.add_argument("--force", action="store_true", help="overwrite existing map files")
    enc.set_defaults(func=encrypt)

    dec = sub.add_parser(
        "decrypt",
        parents=[common],
        help="decrypt a DataMap's content from the chunk store",
        description="Fetch, verify and decrypt the content a map describes. The output "
        "appears under its name only when complete and verified.",
    )
    dec.add_argument("map", type=path_arg, metavar="MAP")
    _store_option(dec)
    dec.add_argument(
        "--out",
        default="-",
        metavar="FILE",
        help="output file ('-', the default, is stdout when it is not a terminal)",
    )
    _maps.add_policy_options(dec)
    dec.add_argument(
        "--range",
        type=_range_arg,
        metavar="OFFSET:LEN",
        help="only LEN bytes from OFFSET (fetches only the chunks needed)",
    )
    _threads_option(dec)
    _distributed.add_option(dec)
    dec.add_argument("--force", action="store_true", help="overwrite an existing output file")
    dec.set_defaults(func=decrypt)


def _store_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--store",
        metavar="DIR|s3://BUCKET/PREFIX",
        help="chunk store (default: $PQSELFENC_STORE, else HOME/chunks)",
    )


def _threads_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--threads", type=count_arg, metavar="N", help="worker threads")


def _map_out_arg(text: str) -> Path:
    """``--out`` of encrypt: a path; ``-`` is refused (maps go to files, never to stdout)."""
    if text == "-":
        raise argparse.ArgumentTypeError(
            "encrypt writes each map to a file, never to stdout (a file named '-': --out ./-)"
        )
    return path_arg(text)


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
_DIGITS = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() also says yes to "²"
_SIZE = re.compile(r"(?P<number>[0-9]+)(?:(?P<unit>[KMG])(?:I?B|I)?|B)?", re.IGNORECASE)


def _size_arg(text: str) -> int:
    """``65536``, ``65536B``, ``64K``, ``64Ki``, ``64KiB``, ``64KB``, ``1M``, ``1G``: K = 1024,
    any letter case, ASCII digits only."""
    found = _SIZE.fullmatch(text)
    if found is None:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 65536, 64K, 1M)")
    return int(found["number"]) * _UNITS[(found["unit"] or "").upper()]


def _range_arg(text: str) -> tuple[int, int]:
    offset, sep, length = text.partition(":")
    if not sep or not _DIGITS.fullmatch(offset) or not _DIGITS.fullmatch(length):
        raise argparse.ArgumentTypeError(f"not OFFSET:LEN: {text!r} (e.g. 1000:200)")
    return int(offset), int(length)


# -- configuration -----------------------------------------------------------------------------


def _compression(spec: str | None) -> CompressionConfig:
    if not spec:
        return CompressionConfig()
    name, _, level = spec.partition(":")
    if level and not _DIGITS.fullmatch(level):
        raise CliError(f"--compress: bad level {level!r}", hint="e.g. --compress zstd:3", code=2)
    return CompressionConfig(name, int(level) if level else 3)


def _option(flag: str, build: Callable[[], T]) -> T:
    """``build()``; a value the library refuses is a usage error naming ``flag``."""
    try:
        return build()
    except ValueError as exc:
        raise CliError(f"{flag}: {exc}", hint=f"see '{PROG} --help' for {flag}", code=2) from exc


def _config(session: Session) -> EncryptionConfig:
    compression = _option("--compress", lambda: _compression(session.option("compress")))
    config = EncryptionConfig(compression=compression)
    size, threads = session.option("chunk_size"), session.option("threads")
    if size is not None:
        config = _option("--chunk-size", lambda: config.with_chunk_size(size))
    if threads is not None:
        parallel = _option("--threads", lambda: ParallelConfig(max_threads=threads))
        config = config.with_parallel(parallel)
    return config


# -- encrypt -----------------------------------------------------------------------------------


def _map_paths(files: list[Path], out: Path | None) -> list[Path]:
    """Each file's map path (never raising: ``.`` or ``/`` has no name to add a suffix to, and
    is refused afterwards by ``check_encrypt`` as an input that is not a regular file)."""
    if out is None:
        return [f.parent / (f.name + MAP_SUFFIX) for f in files]
    if len(files) == 1 and not out.is_dir():
        return [out]
    if not out.is_dir():
        raise CliError(f"{out} is not a folder", hint="with several FILEs, --out names a folder")
    return [out / (f.name + MAP_SUFFIX) for f in files]


def _check_inputs(files: list[Path | str]) -> None:
    """Every local input exists and is a regular file (an S3 URL, text, is the workers' to
    read)."""
    for path in files:
        if isinstance(path, str):
            continue
        if not path.exists():
            raise CliError(f"input file {path} does not exist")
        if not path.is_file():
            raise CliError(f"input file {path} is not a regular file")


def _file_id(path: Path | str) -> tuple[int, int] | str | None:
    """What makes two paths one file (device, inode), following links; None if absent. An S3
    URL (text) is itself."""
    if isinstance(path, str):
        return path
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    return info.st_dev, info.st_ino


def _check_collisions(files: list[Path | str], maps: list[Path]) -> None:
    """Before any work: no input twice (by name, link or ``..``; an S3 URL by its text), no two
    maps on one path, no map over an input (``--force`` would replace it with its own map)."""
    inputs: dict[tuple[int, int] | str | None, Path | str] = {}  # _check_inputs: all exist
    for path in files:
        key = _file_id(path)
        if key in inputs:
            raise CliError(f"{path} is the same file as {inputs[key]}", hint="give it once")
        inputs[key] = path
    targets: dict[str, Path | str] = {}
    for path, target in zip(files, maps, strict=True):
        real = os.path.realpath(target)
        if real in targets:
            raise CliError(f"{targets[real]} and {path} would both write {target}",
                           hint="encrypt them into different --out folders")  # fmt: skip
        targets[real] = path
        key = _file_id(target)
        if key is not None and key in inputs:
            raise CliError(f"{target} would overwrite the input {inputs[key]}",
                           hint="choose another --out")  # fmt: skip


def _check_one_suite(session: Session, names: list[str]) -> None:
    """One suite per envelope (docs/format.md 3.1): refuse a mix before any work."""
    from pqselfenc.cli._keyring import key_store  # (kept off the shared import lines)

    store = key_store(session)
    identities = store.identities
    suites = {n: identities[n].suite if n in identities else store.recipients.get(n).suite
              for n in names}  # fmt: skip
    if len(set(suites.values())) > 1:
        mix = ", ".join(f"{n} ({s})" for n, s in suites.items())
        raise CliError(f"the recipients of one sealed map must share one KEM suite: {mix}",
                       hint="seal separately for each suite: one 'encrypt --to' run per "
                       "suite (a mixed envelope would be only as strong as its weakest "
                       "stanza)")  # fmt: skip


def check_encrypt(
    session: Session, sources: list[Path | str], maps: list[Path]
) -> tuple[str, ...]:
    """Every check ``encrypt`` makes before any work, on this machine or on a cluster
    (``--scheduler``; its S3 sources are text): the inputs, their collisions, the map paths,
    ``--sign-as``, the recipients (one suite) and the escrow policy; the escrow recipients
    every sealed map also goes to."""
    args = session.args
    _check_inputs(sources)
    _check_collisions(sources, maps)
    args.to = list(dict.fromkeys(args.to))  # one stanza per recipient, however often named
    for target in maps:
        check_writable(target, args.force)
    if args.sign_as and not args.to:
        raise CliError("--sign-as signs a sealed map", hint="add --to NAME", code=2)
    escrow: tuple[str, ...] = ()
    if args.to:
        check_recipients(session, args.to)  # fail before any work
        _check_one_suite(session, args.to)
        escrow = _escrow.check_seal(session, args.to)
        _escrow.escrow_note(session, escrow, args.private_dedup)
    return escrow


def encrypt(session: Session) -> int:
    args = session.args
    if args.scheduler:
        return _distributed.encrypt(session, _config(session), _lines, check_encrypt)
    args.files = [Path(f) for f in args.files]
    maps = _map_paths(args.files, args.out)
    escrow = check_encrypt(session, list(args.files), maps)
    config = secret_config(session, _config(session), args.private_dedup)
    store = session.chunk_store(create=True)
    done: list[dict[str, Any]] = []
    try:  # one writer lock and one thread pool for every file and its map: gc waits for maps
        with store.writing(), executor_for(config) as pool:
            for group in _groups(list(zip(args.files, maps, strict=True))):
                done += _encrypt_group(session, group, store, config, pool, escrow)
    finally:
        _warn_unsealed(session, [d["map"] for d in done if not d["sealed"]])
    session.console.result({"encrypted": done, "store": session.store_label()}, _lines(done))
    return 0


# Files are encrypted in groups that share one store batch: when a group ends its chunks are
# made durable together (a directory store settles small chunks in one wave), and only then
# are its maps written, together too. A group holds at most this many files, or bytes.
GROUP_FILES = 1024
GROUP_BYTES = 64 << 20

Group = list[tuple[Path, Path, int]]  # (input, map, size)


def _groups(pairs: list[tuple[Path, Path]]) -> Iterator[Group]:
    group: Group = []
    total = 0
    for path, target in pairs:
        size = path.stat().st_size
        group.append((path, target, size))
        total += size
        if len(group) >= GROUP_FILES or total >= GROUP_BYTES:
            yield group
            group, total = [], 0
    if group:
        yield group


def _encrypt_group(
    session: Session,
    group: Group,
    store: ChunkStore,
    config: EncryptionConfig,
    pool: Executor | None,
    escrow: tuple[str, ...],
) -> list[dict[str, Any]]:
    """Encrypt a group of files in one store batch; write their maps once it is durable (each
    sealed one also to the ``escrow`` recipients, which its result names)."""
    memory = MemoryConfig().fit_encrypt(config.chunk_size, config.min_chunks)
    with store.batch() as put:  # exits only when every chunk of the group is durable
        made = [
            (target, _encrypt_one(session, path, size, put, config, memory, pool))
            for path, target, size in group
        ]
    _maps.write_maps(session, made, session.args.to, session.args.force)
    return [_result(session, path, target, data_map) | {"escrow": list(escrow)}
            for (path, target, _), (_, data_map) in zip(group, made, strict=True)]  # fmt: skip


def _encrypt_one(
    session: Session,
    path: Path,
    size: int,
    put: Put,
    config: EncryptionConfig,
    memory: MemoryConfig,
    pool: Executor | None,
) -> DataMap:
    """One file's chunks into the group's batch (its map is valid once the batch exits)."""
    with session.console.progress(size, f"encrypt {path.name}") as bar:
        counter = ByteCounter(bar, size)
        data_map = encrypt_into(path, counter.wrap(put), config, memory=memory, executor=pool)
        counter.finish()
    return data_map


def _result(session: Session, path: Path, target: Path, data_map: DataMap) -> dict[str, Any]:
    return {
        "input": str(path),
        "map": str(target),
        "sealed": bool(session.args.to),
        "recipients": list(session.args.to),
        "size": data_map.total_size,
        "chunks": len(data_map.chunks),
        "levels": data_map.child + 1,
    }


def _warn_unsealed(session: Session, written: list[str]) -> None:
    """One warning line for the unsealed maps written, however many (even after a failure)."""
    if len(written) == 1:
        session.console.warn(_maps.UNSEALED_WARNING.format(path=written[0]))
    elif written:
        session.console.warn(_maps.UNSEALED_MANY_WARNING.format(count=len(written)))


def _lines(done: list[dict[str, Any]]) -> list[str]:
    return [f"{d['input']} -> {d['map']} ({d['size']} bytes, {_sealing(d)})" for d in done]


def _sealing(d: dict[str, Any]) -> str:
    if not d["sealed"]:
        return "unsealed"
    escrow = f"; escrow: {', '.join(d['escrow'])}" if d.get("escrow") else ""
    return f"sealed for {', '.join(d['recipients'])}{escrow}"


# -- decrypt -----------------------------------------------------------------------------------


def decrypt(session: Session) -> int:
    args = session.args
    if args.scheduler:
        return _distributed.decrypt(session, _config(session))
    to_stdout = args.out == "-"
    if to_stdout:  # refused on a terminal; the result then goes to stderr, never into the data
        stream = session.console.data_stdout("decrypted content")
    else:
        check_writable(Path(args.out), args.force)
    map_file = _maps.read_map_file(args.map, _maps.MapPolicy.from_args(args))
    store = session.chunk_store(create=False)  # cheap checks before any passphrase prompt
    data_map = map_file.open(session)
    config = secret_config(session, _config(session), bool(data_map.secret_id))
    if to_stdout:
        written = _decrypt_into(session, stream, data_map, store, config)
        stream.flush()
    else:
        with atomic_file(Path(args.out), mode=default_file_mode(), force=args.force) as handle:
            written = _decrypt_into(session, handle, data_map, store, config)
    out = "stdout" if to_stdout else args.out
    session.console.result(
        {"map": str(args.map), "out": out, "bytes": written},
        [] if to_stdout else [f"{args.map} -> {out} ({written} bytes)"],
    )
    return 0


def _decrypt_into(
    session: Session,
    handle: IO[bytes],
    data_map: DataMap,
    store: ChunkStore,
    config: EncryptionConfig,
) -> int:
    """Write verified plaintext (all, or ``--range``) to ``handle`` one chunk at a time."""
    span = session.args.range
    total = data_map.total_size if span is None else min(span[1], data_map.total_size)
    with session.console.progress(total, f"decrypt {session.args.map.name}") as bar:
        from pqselfenc.streaming import StreamDecryptor  # asyncio: only decrypt needs it

        counting = CountingStore(store, bar, total)
        memory = MemoryConfig().fit_decrypt(P.MAX_CHUNK_SIZE)  # any chunk a writer makes
        reader = StreamDecryptor.from_data_map(data_map, counting, config, memory=memory)
        pieces = iter(reader) if span is None else reader.iter_range(*span)
        written = 0
        try:
            for piece in pieces:
                handle.write(piece)
                written += len(piece)
        except BaseException:
            _close(pieces)  # now, while an interrupt is handled: no worker is waited for
            raise
        counting.finish()
    return written


def _close(pieces: Iterator[bytes]) -> None:
    close = getattr(pieces, "close", None)
    if callable(close):
        close()
