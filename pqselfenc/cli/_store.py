"""``pqselfenc store verify|stats|gc|unlock``: check a chunk store, what DataMaps reference
in it, collect what none does (``pqselfenc.core.gc``), and remove stale locks."""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path
from typing import Any

from pqselfenc.cli import _maps
from pqselfenc.cli._keyring import secret_config
from pqselfenc.cli._output import CliError, Progress
from pqselfenc.cli._session import Session
from pqselfenc.cli._values import path_arg
from pqselfenc.core import gc as gc_lib
from pqselfenc.core._store import ChunkInfo, ChunkStore, short_name, verify_chunk
from pqselfenc.core.config import EncryptionConfig
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
        description="Collect chunks that no given map references and that are older than the "
        "grace period, while writers keep working (docs/stores.md). Give it every live map.",
    )
    gc.add_argument("maps", nargs="+", metavar="MAP", type=path_arg)
    _gc_options(gc)
    for reader in (stats, gc):
        _maps.add_policy_options(reader)
    unlock = actions.add_parser(
        "unlock",
        parents=[common],
        help="remove stale store locks left by processes that are gone",
    )
    unlock.add_argument("lock_ids", nargs="+", metavar="ID", help="a lock id 'store stats' shows")
    for parser in (verify, stats, gc, unlock):
        parser.add_argument(
            "--store",
            metavar="DIR|s3://BUCKET/PREFIX",
            help="chunk store (default: $PQSELFENC_STORE, else HOME/chunks)",
        )
    verify.set_defaults(func=verify_store)
    stats.set_defaults(func=store_stats)
    gc.set_defaults(func=collect_garbage)
    unlock.set_defaults(func=unlock_store)


def _gc_options(gc: argparse.ArgumentParser) -> None:
    gc.add_argument(
        "--delete", action="store_true", help="really delete (default: only report what would go)"
    )
    gc.add_argument(
        "--grace",
        type=_duration_arg,
        default=gc_lib.DEFAULT_GRACE,
        metavar="DURATION",
        help="keep whatever was written or reused more recently (default 24h; e.g. 90m, 7d, 0)",
    )
    gc.add_argument(
        "--wait",
        type=_duration_arg,
        default=0.0,
        metavar="DURATION",
        help="wait this long for running writers to finish (default: fail at once)",
    )
    gc.add_argument(
        "--remove-stale-lock",
        action="append",
        default=[],
        metavar="ID",
        help="first remove this stale lock (its process must be gone; repeatable)",
    )


_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def _duration_arg(text: str) -> float:
    number = text.rstrip("acdehimns")
    unit = text[len(number) :]
    try:
        value = float(number)
    except ValueError:
        value = -1.0
    if unit not in _UNITS or not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 30s, 90m, 24h, 7d)")
    return value * _UNITS[unit]


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


# -- what maps reference, stats and gc ----------------------------------------------------------


def _given_maps(session: Session, paths: list[Path]) -> list[gc_lib.GcMap]:
    """The maps named on the command line, each read under the map policy (all refused before
    any work: a swapped map would make gc delete live chunks) and opened (sealed ones with the
    key store), with what walking it needs (a private-dedup map's convergence secret)."""
    policy = _maps.MapPolicy.from_args(session.args)
    files = [_maps.read_map_file(path, policy) for path in paths]
    given = []
    for path, map_file in zip(paths, files, strict=True):
        data_map = map_file.open(session)
        config = secret_config(session, EncryptionConfig(), bool(data_map.secret_id))
        given.append(gc_lib.GcMap(data_map, str(path), config))
    return given


def store_stats(session: Session) -> int:
    store = session.chunk_store(create=False)
    maps = _given_maps(session, session.args.maps)
    report = gc_lib.store_report(store, maps)
    size = "" if report.stored_bytes is None else f", {report.stored_bytes} bytes"
    doc: dict[str, Any] = {"store": session.store_label(), "chunks": report.chunks,
                           "bytes": report.stored_bytes}  # fmt: skip
    lines = [f"{report.chunks} chunks{size}"]
    if maps:
        doc.update(maps=len(maps), referenced=report.referenced, missing=report.missing,
                   unreferenced=report.unreferenced, incomplete=report.incomplete)  # fmt: skip
        lines.append(
            f"{len(maps)} maps reference {report.referenced} chunks, "
            f"{report.missing} of them missing; {report.unreferenced} unreferenced"
        )
        lines += [f"{m}: cannot follow every level (chunks missing)" for m in report.incomplete]
    doc.update(locks=[i.as_dict() for i in report.locks], sessions=report.sessions)
    lines += [i.describe() for i in report.locks]
    lines.append(f"{report.sessions} writer sessions recorded")
    session.console.result(doc, lines)
    return 1 if maps and (report.missing or report.incomplete) else 0


def collect_garbage(session: Session) -> int:
    args = session.args
    store = session.chunk_store(create=False)
    maps = _given_maps(session, args.maps)  # before the lock: a passphrase prompt may wait
    with contextlib.ExitStack() as stack:
        plan = gc_lib.collect_garbage(
            store, maps, delete=args.delete, grace=args.grace, wait=args.wait,
            remove_stale_locks=args.remove_stale_lock, on_step=_progress(session, stack),
        )  # fmt: skip
    hint = ["run again with --delete to remove them"] if plan.candidates and not args.delete else []
    session.console.result({**plan.as_dict(), "store": session.store_label()}, plan.lines() + hint)
    return 0


def _progress(session: Session, stack: contextlib.ExitStack) -> gc_lib.Step:
    """gc's ``on_step``: a bar over the deletes, opened at the first one."""
    bar: list[Progress] = []

    def step(name: str, done: int, total: int) -> None:
        if name != "delete":
            return
        if not bar:
            bar.append(stack.enter_context(session.console.progress(total, "gc")))
        bar[0].update(1)

    return step


def unlock_store(session: Session) -> int:
    store = session.chunk_store(create=False)
    locks = store.locks()
    if locks is None:
        raise CliError(f"{session.store_label()} has no store locks")
    removed = locks.remove_stale(session.args.lock_ids)
    session.console.result(
        {"store": session.store_label(), "removed": [i.as_dict() for i in removed]},
        [f"removed {i.describe()}" for i in removed],
    )
    return 0
