"""``pqselfenc encrypt`` and ``pqselfenc decrypt``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import IO, Any

from pqselfenc.cli import _distributed, _maps
from pqselfenc.cli._keyring import check_recipients, name_arg, secret_config
from pqselfenc.cli._output import (
    CliError,
    atomic_file,
    check_writable,
    default_file_mode,
    read_input,
    refuse_binary_to_terminal,
)
from pqselfenc.cli._session import Session
from pqselfenc.cli._stores import CountingStore
from pqselfenc.core._store import ChunkStore
from pqselfenc.core.config import CompressionConfig, EncryptionConfig, ParallelConfig
from pqselfenc.core.datamap import DataMap
from pqselfenc.core.files import encrypt_file

__all__ = ["add_parsers"]

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
        type=Path,
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
    dec.add_argument("map", type=Path, metavar="MAP")
    _store_option(dec)
    dec.add_argument(
        "--out",
        default="-",
        metavar="FILE",
        help="output file ('-', the default, is stdout when it is not a terminal)",
    )
    dec.add_argument(
        "--signer",
        metavar="NAME",
        type=name_arg,
        help="require a sealed map signed by NAME (an identity or a recipient)",
    )
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
    parser.add_argument("--threads", type=int, metavar="N", help="worker threads")


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


def _size_arg(text: str) -> int:
    number, unit = text.rstrip("KMGkmgiBb"), text[len(text.rstrip("KMGkmgiBb")) :]
    unit = unit.upper().removesuffix("B").removesuffix("I")
    if not number.isdigit() or unit not in _UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 65536, 64K, 1M)")
    return int(number) * _UNITS[unit]


def _range_arg(text: str) -> tuple[int, int]:
    offset, sep, length = text.partition(":")
    if not sep or not offset.isdigit() or not length.isdigit():
        raise argparse.ArgumentTypeError(f"not OFFSET:LEN: {text!r} (e.g. 1000:200)")
    return int(offset), int(length)


# -- configuration -----------------------------------------------------------------------------


def _compression(spec: str | None) -> CompressionConfig:
    if not spec:
        return CompressionConfig()
    name, _, level = spec.partition(":")
    if level and not level.isdigit():
        raise CliError(f"bad compression level {level!r}", hint="e.g. --compress zstd:3")
    try:
        return CompressionConfig(name, int(level) if level else 3)
    except ValueError as exc:
        raise CliError(str(exc), hint="e.g. --compress zstd or --compress zstd:19") from exc


def _config(session: Session) -> EncryptionConfig:
    try:
        config = EncryptionConfig(compression=_compression(session.option("compress")))
        if session.option("chunk_size") is not None:
            config = config.with_chunk_size(session.option("chunk_size"))
        if session.option("threads") is not None:
            config = config.with_parallel(ParallelConfig(max_threads=session.option("threads")))
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    return config


# -- encrypt -----------------------------------------------------------------------------------


def _map_paths(files: list[Path], out: Path | None) -> list[Path]:
    if out is None:
        return [f.with_name(f.name + MAP_SUFFIX) for f in files]
    if len(files) == 1 and not out.is_dir():
        return [out]
    if not out.is_dir():
        raise CliError(f"{out} is not a folder", hint="with several FILEs, --out names a folder")
    return [out / (f.name + MAP_SUFFIX) for f in files]


def _check_inputs(files: list[Path]) -> None:
    for path in files:
        if not path.exists():
            raise CliError(f"input file {path} does not exist")
        if not path.is_file():
            raise CliError(f"input file {path} is not a regular file")


def encrypt(session: Session) -> int:
    args = session.args
    if args.scheduler:
        return _distributed.encrypt(session, _config(session), _lines)
    args.files = [Path(f) for f in args.files]
    _check_inputs(args.files)
    maps = _map_paths(args.files, args.out)
    args.to = list(dict.fromkeys(args.to))  # one stanza per recipient, however often named
    for target in maps:
        check_writable(target, args.force)
    if args.sign_as and not args.to:
        raise CliError("--sign-as signs a sealed map", hint="add --to NAME", code=2)
    if args.to:
        check_recipients(session, args.to)  # fail before any work
    config = secret_config(session, _config(session), args.private_dedup)
    store = session.chunk_store(create=True)
    done = [
        _encrypt_one(session, f, m, store, config) for f, m in zip(args.files, maps, strict=True)
    ]
    session.console.result({"encrypted": done, "store": session.store_spec()}, _lines(done))
    return 0


def _encrypt_one(
    session: Session, path: Path, target: Path, store: ChunkStore, config: EncryptionConfig
) -> dict[str, Any]:
    size = path.stat().st_size
    with session.console.progress(size, f"encrypt {path.name}") as bar:
        counting = CountingStore(store, bar, size)
        data_map = encrypt_file(path, counting, config)
        counting.finish()
    sealed = _maps.write_map(session, target, data_map, session.args.to, session.args.force)
    return {
        "input": str(path),
        "map": str(target),
        "sealed": sealed,
        "recipients": list(session.args.to),
        "size": data_map.total_size,
        "chunks": len(data_map.chunks),
        "levels": data_map.child + 1,
    }


def _lines(done: list[dict[str, Any]]) -> list[str]:
    return [
        f"{d['input']} -> {d['map']} ({d['size']} bytes, "
        + (f"sealed for {', '.join(d['recipients'])})" if d["sealed"] else "unsealed)")
        for d in done
    ]


# -- decrypt -----------------------------------------------------------------------------------


def decrypt(session: Session) -> int:
    args = session.args
    if args.scheduler:
        return _distributed.decrypt(session, _config(session))
    to_stdout = args.out == "-"
    if to_stdout:
        refuse_binary_to_terminal(sys.stdout, "decrypted content")
    else:
        check_writable(Path(args.out), args.force)
    raw = read_input(args.map, "map")
    store = session.chunk_store(create=False)  # cheap checks before any passphrase prompt
    data_map = _maps.decode_map(session, raw, str(args.map))
    config = secret_config(session, _config(session), bool(data_map.secret_id))
    if to_stdout:
        written = _decrypt_into(session, sys.stdout.buffer, data_map, store, config)
        sys.stdout.flush()
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
        reader = StreamDecryptor.from_data_map(data_map, counting, config)
        pieces = iter(reader) if span is None else iter([reader.read_range(*span)])
        written = 0
        for piece in pieces:
            handle.write(piece)
            written += len(piece)
        counting.finish()
    return written
