"""``pqselfenc store verify|stats|gc``: check a chunk store, and what DataMaps reference in it."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pqselfenc.cli import _maps
from pqselfenc.cli._keyring import secret_config
from pqselfenc.cli._output import CliError, Console
from pqselfenc.cli._session import Session
from pqselfenc.cli._values import path_arg
from pqselfenc.core._store import ChunkInfo, ChunkStore, short_name, verify_chunk
from pqselfenc.core.config import EncryptionConfig
from pqselfenc.core.datamap import DataMap
from pqselfenc.core.encryptor import SelfEncryptor
from pqselfenc.core.stores import DirectoryChunkStore
from pqselfenc.error import ChunkNotFound, ChunkStoreError, IntegrityError

__all__ = ["add_parsers"]


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    store = sub.add_parser(
        "store",
        help="verify a chunk store, report and collect unreferenced chunks",
        description="Maintain a chunk store. Chunks are named by the SHA-256 of their "
        "bytes, so 'verify' needs no keys.",
    )
    actions = store.add_subparsers(dest="action", metavar="ACTION", required=True)
    verify = actions.add_parser(
        "verify", parents=[common], help="check every stored chunk against its name"
    )
    verify.add_argument(
        "--allow-empty",
        action="store_true",
        help="exit 0 when the store lists no chunk (default: an error, since a mistyped "
        "store or S3 prefix lists nothing)",
    )
    stats = actions.add_parser(
        "stats", parents=[common], help="count chunks, and what the given maps reference"
    )
    stats.add_argument("maps", nargs="*", metavar="MAP", type=path_arg)
    gc = actions.add_parser(
        "gc",
        parents=[common],
        help="find (and with --delete remove) chunks no given map references",
    )
    gc.add_argument("maps", nargs="+", metavar="MAP", type=path_arg)
    gc.add_argument(
        "--delete", action="store_true", help="really delete (default: only report what would go)"
    )
    for reader in (stats, gc):
        _maps.add_policy_options(reader)
    for parser in (verify, stats, gc):
        parser.add_argument(
            "--store",
            metavar="DIR|s3://BUCKET/PREFIX",
            help="chunk store (default: $PQSELFENC_STORE, else HOME/chunks)",
        )
    verify.set_defaults(func=verify_store)
    stats.set_defaults(func=store_stats)
    gc.set_defaults(func=collect_garbage)


# -- verify ------------------------------------------------------------------------------------


def verify_store(session: Session) -> int:
    store = session.chunk_store(create=False)
    infos = list(store)
    bad: list[dict[str, str]] = []
    with session.console.progress(len(infos), "verify") as bar:
        for info in infos:
            problem = _check_chunk(store, info)
            if problem:
                bad.append({"chunk": short_name(info.name), "problem": problem})
            bar.update(1)
    lines = [f"{b['chunk']}…: {b['problem']}" for b in bad]
    lines.append(f"{len(infos) - len(bad)} of {len(infos)} chunks verified")
    label = session.store_label()
    session.console.result({"store": label, "chunks": len(infos), "bad": bad}, lines)
    if not infos and not session.args.allow_empty:
        raise CliError(
            f"the store {label} lists no chunks: nothing was verified",
            hint="is --store right? (an S3 prefix that holds nothing lists nothing); pass "
            "--allow-empty when an empty store is expected",
        )
    if bad:
        raise CliError(
            f"{len(bad)} of {len(infos)} chunks do not match their names",
            hint="restore them from a backup, or re-encrypt the files they belong to",
        )
    return 0


def _check_chunk(store: ChunkStore, info: ChunkInfo) -> str | None:
    try:
        content = store.retrieve(info)
        if not store.verifies_on_retrieve:
            verify_chunk(info, content)
    except IntegrityError:
        return "content does not match its name"
    except ChunkNotFound:
        return "listed but missing"
    except ChunkStoreError as exc:
        return f"unreadable ({exc})"
    return None


# -- what maps reference -----------------------------------------------------------------------


@dataclass
class References:
    """Chunk names the maps reference, and those that could not be followed."""

    names: set[bytes] = field(default_factory=set)
    missing: set[bytes] = field(default_factory=set)
    incomplete: list[str] = field(default_factory=list)


def _walk(
    data_map: DataMap, store: ChunkStore, config: EncryptionConfig, refs: References, where: str
) -> None:
    """Record every chunk each level of ``data_map`` names; a parent level with absent chunks
    cannot be followed, so the map is reported incomplete rather than guessed at."""
    for level in SelfEncryptor.from_data_map(data_map, store, config).levels():
        refs.names.update(c.name for c in level.chunks)
        absent = {c.name for c in level.chunks if not store.has(c)}
        refs.missing |= absent
        if absent and level.child > 0:
            refs.incomplete.append(where)
            return


def references(session: Session, maps: list[Path], store: ChunkStore) -> References:
    refs = References()
    policy = _maps.MapPolicy.from_args(session.args)
    files = [_maps.read_map_file(path, policy) for path in maps]  # all refused before any work
    for path, map_file in zip(maps, files, strict=True):
        data_map = map_file.open(session)
        config = secret_config(session, EncryptionConfig(), bool(data_map.secret_id))
        try:
            _walk(data_map, store, config, refs, str(path))
        except ChunkNotFound:
            refs.incomplete.append(str(path))
    return refs


# -- stats and gc ------------------------------------------------------------------------------


def _sizes(store: ChunkStore, infos: list[ChunkInfo]) -> int | None:
    if not isinstance(store, DirectoryChunkStore):
        return None
    return sum(store.path_of(i).stat().st_size for i in infos)


def store_stats(session: Session) -> int:
    store = session.chunk_store(create=False)
    stored = list(store)
    doc: dict[str, Any] = {
        "store": session.store_label(),
        "chunks": len(stored),
        "bytes": _sizes(store, stored),
    }
    lines = [
        f"{len(stored)} chunks" + (f", {doc['bytes']} bytes" if doc["bytes"] is not None else "")
    ]
    if session.args.maps:
        refs = references(session, session.args.maps, store)
        unreferenced = {i.name for i in stored} - refs.names
        doc.update(
            maps=len(session.args.maps),
            referenced=len(refs.names),
            missing=len(refs.missing),
            unreferenced=len(unreferenced),
            incomplete=refs.incomplete,
        )
        lines.append(
            f"{len(session.args.maps)} maps reference {len(refs.names)} chunks, "
            f"{len(refs.missing)} of them missing; {len(unreferenced)} unreferenced"
        )
        lines += [f"{m}: cannot follow every level (chunks missing)" for m in refs.incomplete]
    session.console.result(doc, lines)
    return 1 if session.args.maps and (refs.missing or refs.incomplete) else 0


def collect_garbage(session: Session) -> int:
    store = session.chunk_store(create=False)
    refs = references(session, session.args.maps, store)
    if refs.incomplete:
        raise CliError(
            f"cannot follow every level of {', '.join(refs.incomplete)}: chunks are missing",
            hint="nothing was deleted; a map whose chunks cannot all be found protects nothing",
        )
    stored = list(store)
    garbage = [i for i in stored if i.name not in refs.names]
    size = _sizes(store, garbage)
    if session.args.delete:
        _delete(store, garbage, session.console)
    verb = "deleted" if session.args.delete else "would delete"
    doc = {
        "store": session.store_label(),
        "chunks": len(stored),
        "referenced": len(refs.names),
        "unreferenced": len(garbage),
        "bytes": size,
        "deleted": session.args.delete,
    }
    line = f"{verb} {len(garbage)} of {len(stored)} chunks" + (f" ({size} bytes)" if size else "")
    hint = [] if session.args.delete or not garbage else ["run again with --delete to remove them"]
    session.console.result(doc, [line, *hint])
    return 0


def _delete(store: ChunkStore, garbage: list[ChunkInfo], console: Console) -> None:
    with console.progress(len(garbage), "gc") as bar:
        for info in garbage:
            store.delete(info)
            bar.update(1)
    if isinstance(store, DirectoryChunkStore):
        store.clean_temp()
