"""``--scheduler ADDRESS``: ``pqselfenc encrypt`` and ``decrypt`` on a Dask cluster.

The same commands, run by the workers of the cluster at ADDRESS (``pqselfenc.distributed``):
inputs may then also be ``s3://bucket/key`` objects, and ``decrypt --out`` an ``s3://`` object.
Paths (inputs, a folder ``--store``, ``--out``) must be the same files for this machine and
every worker. Dask is imported only when ``--scheduler`` is given.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from pqselfenc.cli._output import (
    CliError,
    check_writable,
    default_file_mode,
    note_cluster_output,
)
from pqselfenc.cli._session import Session
from pqselfenc.core.config import EncryptionConfig

__all__ = ["add_option", "decrypt", "encrypt"]

S3_SCHEME = "s3://"
MAP_SUFFIX = ".map"
INSTALL_HINT = "pip install 'pqselfenc[dask]'"


def add_option(parser: argparse.ArgumentParser) -> None:
    """``--scheduler ADDRESS`` on ``encrypt`` / ``decrypt``."""
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run on the Dask cluster whose scheduler is ADDRESS (e.g. tcp://host:8786); "
        "inputs and --out may then be s3://BUCKET/KEY (needs pqselfenc[dask])",
    )


def _connect(session: Session) -> Any:
    """A client of ``--scheduler``, closed when the command ends."""
    address = session.args.scheduler
    try:
        from distributed import Client
    except ImportError as exc:
        raise CliError("--scheduler needs Dask", hint=INSTALL_HINT) from exc
    try:
        client = Client(address, set_as_default=False)  # type: ignore[no-untyped-call]
    except (OSError, TimeoutError, ValueError) as exc:
        raise CliError(
            f"cannot reach the Dask scheduler at {address}",
            hint="check the address and that the scheduler is running",
        ) from exc
    session.keep("dask-client", client, client.close)
    return client


def _store(session: Session, *, create: bool) -> str:
    """The store spec for the workers; a folder is checked (and made) here like any --store,
    an S3 URL is checked by the library (the workers open it)."""
    spec = session.store_spec()
    if spec.startswith(S3_SCHEME):
        return spec
    session.chunk_store(create=create)  # the usual checks and one-line errors
    return str(Path(spec).expanduser())


def _map_path(source: str, out: Path | None, several: bool) -> Path:
    if source.startswith(S3_SCHEME):
        name = PurePosixPath(source.split("?")[0]).name + MAP_SUFFIX
        default = Path(name)
    else:
        default = Path(source).parent / (Path(source).name + MAP_SUFFIX)  # '.' is refused later
    if out is None:
        return default
    if not several and not out.is_dir():
        return out
    if not out.is_dir():
        raise CliError(f"{out} is not a folder", hint="with several FILEs, --out names a folder")
    return out / default.name


@contextlib.contextmanager
def _library_errors() -> Iterator[None]:
    """Misuse found by the library (a URL with credentials, a bad scheme) as one line."""
    try:
        yield
    except (ValueError, TypeError) as exc:
        raise CliError(str(exc)) from exc


Checks = Callable[[Session, list[Path | str], list[Path]], tuple[str, ...]]


def encrypt(
    session: Session,
    options: EncryptionConfig,
    lines: Callable[[list[dict[str, Any]]], list[str]],
    check: Checks,
) -> int:
    """``pqselfenc encrypt --scheduler ADDRESS SOURCE...``: ``options`` is the config the
    command line asks for, ``lines`` formats the results and ``check`` makes the checks
    ``encrypt`` makes on one machine (inputs, collisions, maps, recipients), before any work."""
    from pqselfenc import distributed
    from pqselfenc.cli import _maps
    from pqselfenc.cli._keyring import secret_config

    args = session.args
    sources: list[str] = list(args.files)
    maps = [_map_path(s, args.out, len(sources) > 1) for s in sources]
    escrow = check(session, [s if s.startswith(S3_SCHEME) else Path(s) for s in sources], maps)
    config = secret_config(session, options, args.private_dedup)
    store = _store(session, create=True)
    with _library_errors():
        data_maps = distributed.encrypt_many(_connect(session), sources, store, config)
    done = []
    for source, target, data_map in zip(sources, maps, data_maps, strict=True):
        sealed = _maps.write_map(session, target, data_map, args.to, args.force)
        done.append({"input": source, "map": str(target), "sealed": sealed,
                     "recipients": list(args.to), "escrow": list(escrow),
                     "size": data_map.total_size,
                     "chunks": len(data_map.chunks), "levels": data_map.child + 1})  # fmt: skip
    session.console.result({"encrypted": done, "store": session.store_label()}, lines(done))
    return 0


def decrypt(session: Session, options: EncryptionConfig) -> int:
    """``pqselfenc decrypt --scheduler ADDRESS MAP --out FILE|s3://BUCKET/KEY`` (``options``:
    the config the command line asks for)."""
    from pqselfenc import distributed
    from pqselfenc.cli import _maps
    from pqselfenc.cli._keyring import secret_config

    args = session.args
    if args.out == "-":
        raise CliError("--scheduler writes to a file or an S3 object", hint="add --out FILE")
    if args.range is not None:
        raise CliError("--range reads a few chunks here: drop --scheduler for it")
    if not args.out.startswith(S3_SCHEME):
        check_writable(Path(args.out), args.force)
    map_file = _maps.read_map_file(args.map, _maps.MapPolicy.from_args(args))
    store = _store(session, create=False)
    data_map = map_file.open(session)
    config = secret_config(session, options, bool(data_map.secret_id))
    client = _connect(session)
    note_cluster_output(args.out)  # from here the cluster's rename may happen at any time
    with _library_errors():
        distributed.decrypt(
            client,
            data_map,
            store,
            args.out,
            config,
            overwrite=bool(args.force),
            mode=default_file_mode(),
        )
    session.console.result(
        {"map": str(args.map), "out": args.out, "bytes": data_map.total_size},
        [f"{args.map} -> {args.out} ({data_map.total_size} bytes)"],
    )
    return 0
