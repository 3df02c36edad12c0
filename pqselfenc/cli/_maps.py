"""Reading and writing DataMap files: binary, JSON or sealed, told apart by their first bytes.

Every command that reads a map file reads it through ``read_map_file``, which checks it
against a ``MapPolicy`` and returns a ``MapFile`` (nothing else makes one); ``MapFile.open``
gives the DataMap. The policy is enforced on every kind of map file, so a stated requirement
(a signer, a sealed map) cannot be sidestepped by handing over a map of another kind.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from pqselfenc.cli._keyring import name_arg
from pqselfenc.cli._output import (
    TEMP_PREFIX,
    CliError,
    default_file_mode,
    note_written,
    read_head,
    read_input,
    write_file,
)
from pqselfenc.cli._session import Session
from pqselfenc.core import _durable
from pqselfenc.core import _primitives as P
from pqselfenc.core._trust import why_not_private
from pqselfenc.core.datamap import DataMap
from pqselfenc.error import InvalidDataError

__all__ = [
    "MapFile",
    "MapKind",
    "MapPolicy",
    "add_policy_options",
    "is_sealed",
    "load_map",
    "map_kind",
    "parse_map",
    "read_map_file",
    "write_map",
    "write_maps",
]

SECRET_MODE = 0o600
UNSEALED_WARNING = (
    "{path} is an unsealed DataMap: anyone who can read it can decrypt the content "
    "(written with mode 0600; use --to NAME to seal it)"
)
UNSEALED_MANY_WARNING = (
    "{count} unsealed DataMaps written: anyone who can read one can decrypt its content "
    "(written with mode 0600; use --to NAME to seal them)"
)
_JSON_WHITESPACE = b" \t\n\r"  # RFC 8259 whitespace, all that may precede the opening '{'
_MAGIC_SIZE = max(len(P.MAP_MAGIC), len(P.ENVELOPE_MAGIC))


class MapKind(Enum):
    """What a map file holds, by its first bytes (docs/format.md, "Map files")."""

    SEALED = "sealed"  # starts with ENVELOPE_MAGIC "PQSESEAL"
    BINARY = "binary"  # starts with MAP_MAGIC "PQSEMAP\0"
    JSON = "json"  # first byte after JSON whitespace is '{'


def map_kind(raw: bytes) -> MapKind | None:
    """The kind of map ``raw`` is, or ``None`` when it is none of them."""
    if raw.startswith(P.ENVELOPE_MAGIC):
        return MapKind.SEALED
    if raw.startswith(P.MAP_MAGIC):
        return MapKind.BINARY
    if raw.lstrip(_JSON_WHITESPACE)[:1] == b"{":
        return MapKind.JSON
    return None


def is_sealed(raw: bytes) -> bool:
    """Whether ``raw`` is a sealed map (an envelope)."""
    return map_kind(raw) is MapKind.SEALED


@dataclass(frozen=True)
class MapPolicy:
    """Which maps a command accepts.

    ``signer``: only a map sealed and signed by that name. ``require_sealed``: only sealed
    maps. ``allow_unsealed``: unsealed maps even from a place others can write. With none of
    them, an unsealed map is accepted only from a private place (``core/_trust.py``).
    """

    require_sealed: bool = False
    signer: str | None = None
    allow_unsealed: bool = False
    sealed_hint: str = "--require-sealed accepts only sealed maps ('pqselfenc encrypt --to NAME')"

    def __post_init__(self) -> None:
        if self.allow_unsealed and self.sealed_only:
            flag = f"--signer {self.signer}" if self.signer else "--require-sealed"
            raise CliError(f"--allow-unsealed contradicts {flag}", code=2)

    @property
    def sealed_only(self) -> bool:
        """Whether only sealed maps pass, wherever they are."""
        return self.require_sealed or self.signer is not None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> MapPolicy:
        """The policy the options of ``add_policy_options`` ask for."""
        return cls(
            require_sealed=bool(getattr(args, "require_sealed", False)),
            signer=getattr(args, "signer", None),
            allow_unsealed=bool(getattr(args, "allow_unsealed", False)),
        )

    def check(self, path: Path, kind: MapKind) -> None:
        """Refuse an unsealed map this policy does not accept (``CliError``, exit 1)."""
        if kind is MapKind.SEALED:
            return
        if self.signer is not None:
            raise CliError(
                f"{path} is not sealed: --signer {self.signer} accepts only a map sealed "
                f"and signed by {self.signer}",
                hint=f"ask {self.signer} to seal it for you with "
                f"'pqselfenc encrypt --to YOU --sign-as {self.signer}'",
            )
        if self.require_sealed:
            raise CliError(f"{path} is not a sealed map", hint=self.sealed_hint)
        where = None if self.allow_unsealed else why_not_private(path)
        if where is not None:
            raise CliError(
                f"{path} is an unsealed map in a place others can write ({where})",
                hint="anyone who can write there could have swapped it: use a sealed map "
                "(--signer NAME also proves who made it), move it somewhere private, or "
                "pass --allow-unsealed if you trust that place",
            )


def add_policy_options(parser: argparse.ArgumentParser) -> None:
    """``--signer``, ``--require-sealed`` and ``--allow-unsealed``, for a command reading maps."""
    parser.add_argument(
        "--signer",
        metavar="NAME",
        type=name_arg,
        help="accept only maps sealed and signed by NAME (an identity or a recipient)",
    )
    parser.add_argument(
        "--require-sealed",
        action="store_true",
        help="accept only sealed maps (an unsealed map is refused wherever it is)",
    )
    parser.add_argument(
        "--allow-unsealed",
        action="store_true",
        help="accept an unsealed map even from a place others can write (default: only "
        "from a private place)",
    )


def parse_map(raw: bytes, where: str) -> DataMap:
    """An unsealed map from its binary or JSON form; a one-line error naming ``where``."""
    kind = map_kind(raw)
    try:
        if kind is MapKind.BINARY:
            return DataMap.from_bytes(raw)
        if kind is MapKind.JSON:
            return DataMap.from_json(raw)
    except InvalidDataError as exc:
        raise CliError(
            f"{where}: {exc}", hint="the map file is damaged or is not a pqselfenc map"
        ) from exc
    raise CliError(f"{where} is not a pqselfenc map", hint="give the file 'encrypt' wrote")


@dataclass(frozen=True)
class MapFile:
    """A map file's bytes that a ``MapPolicy`` accepted (only ``read_map_file`` makes one)."""

    path: Path
    raw: bytes
    kind: MapKind
    policy: MapPolicy

    def open(self, session: Session) -> DataMap:
        """The DataMap, opened with the key store if sealed (the signature checked against
        ``policy.signer``)."""
        if self.kind is MapKind.SEALED:
            from pqselfenc.cli._keyring import open_sealed  # keys layer: only when needed

            return open_sealed(session, self.raw, str(self.path), signer=self.policy.signer)
        return parse_map(self.raw, str(self.path))


def read_map_file(path: Path, policy: MapPolicy) -> MapFile:
    """The map file ``path``, refused unless ``policy`` accepts it. Every command that reads a
    map file reads it here."""
    raw = _read_map_bytes(path)
    kind = map_kind(raw)
    if kind is None:
        raise CliError(f"{path} is not a pqselfenc map", hint="give the file 'encrypt' wrote")
    policy.check(path, kind)
    return MapFile(path, raw, kind, policy)


def _read_map_bytes(path: Path) -> bytes:
    """The bytes of a map file: up to ``MAX_MAP_FILE_SIZE`` if it starts as a sealed or binary
    map, else up to ``MAX_MAP_JSON_SIZE`` (a larger file is refused from its size, unread)."""
    if map_kind(read_head(path, "map", _MAGIC_SIZE)) in (MapKind.SEALED, MapKind.BINARY):
        return read_input(path, "map")
    return read_input(path, "map", limit=P.MAX_MAP_JSON_SIZE, too_large=(
        f"{path} is not a pqselfenc map: larger than any JSON map ({P.MAX_MAP_JSON_SIZE} "
        "bytes), and it does not start as a sealed or binary one"))  # fmt: skip


def load_map(session: Session, path: Path, policy: MapPolicy) -> DataMap:
    """The DataMap in ``path``, read through ``read_map_file`` and opened."""
    return read_map_file(path, policy).open(session)


def write_map(
    session: Session, path: Path, data_map: DataMap, recipients: list[str], force: bool
) -> bool:
    """Write ``data_map`` sealed for ``recipients``, or unsealed (0600, with a warning).

    Returns whether it was sealed.
    """
    if recipients:
        from pqselfenc.cli._keyring import seal_map

        write_file(
            path, seal_map(session, data_map, recipients), mode=default_file_mode(), force=force
        )
        return True
    write_file(path, data_map.to_bytes(), mode=SECRET_MODE, force=force)
    session.console.warn(UNSEALED_WARNING.format(path=path))
    return False


def write_maps(
    session: Session, maps: list[tuple[Path, DataMap]], recipients: list[str], force: bool
) -> None:
    """``write_map`` for many maps at once, and as safely: each becomes a temp file next to its
    target, their content is made durable in one wave, then each is renamed (``--force``) or
    linked (never over anything) into place and each folder made durable once
    (``core/_durable.py``: ``settle_wave``). A FIFO, device, socket or folder at a target is
    never replaced. Each map is recorded as written (``note_written``) with its rename, signals
    held, so an interrupt's report names exactly the maps that appeared. No warning here: the
    caller says once how many maps are unsealed."""
    if recipients:
        from pqselfenc.cli._keyring import seal_map

        blobs = [(p, seal_map(session, m, recipients), default_file_mode()) for p, m in maps]
    else:
        blobs = [(p, m.to_bytes(), SECRET_MODE) for p, m in maps]
    folders: dict[Path, int] = {}
    try:
        wave = _temps_for(folders, blobs, force)
        try:
            _durable.settle_wave(wave, exclusive=not force, keep_special=True,
                                 on_publish=lambda i: note_written(maps[i][0]))  # fmt: skip
        except BaseException:  # the maps published before the failure are reported written:
            with contextlib.suppress(OSError):  # their names must be durable too
                _durable.sync_dirs(folders.values())
            raise
        _durable.sync_dirs(folders.values())
    except OSError as exc:
        raise _map_write_error(exc, [p for p, _ in maps]) from exc
    finally:
        for fd in folders.values():
            os.close(fd)


def _temps_for(
    folders: dict[Path, int], blobs: list[tuple[Path, bytes, int]], force: bool
) -> list[tuple[int, str, str]]:
    """The temp files of ``blobs``; on a failure none is left behind."""
    wave: list[tuple[int, str, str]] = []
    try:
        for path, data, mode in blobs:
            wave.append(_temp_for(folders, path, data, mode, force))
    except BaseException:
        for dir_fd, temp, _ in wave:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=dir_fd)
        raise
    return wave


def _temp_for(
    folders: dict[Path, int], path: Path, data: bytes, mode: int, force: bool
) -> tuple[int, str, str]:
    """A closed temp file holding ``data`` next to ``path`` (its folder opened once), with
    ``mode``, or the stricter of it and the permission bits of the file it will replace."""
    parent = path.parent
    if parent not in folders:
        folders[parent] = _durable.open_dir(parent)
    dir_fd = folders[parent]
    old = _durable.check_replaceable(path.name, dir_fd=dir_fd)
    if force:
        mode = _durable.replacing_mode(mode, old)
    temp = _durable.write_closed(dir_fd, data, prefix=TEMP_PREFIX, mode=mode)
    return dir_fd, temp, path.name


def _map_write_error(exc: OSError, paths: list[Path]) -> CliError:
    """The error for a failed batch of map writes, naming the map when it is known."""
    names = {os.fsdecode(n) for n in (exc.filename, exc.filename2) if n}  # link: (temp, name)
    path = next((p for p in paths if p.name in names), None)
    if isinstance(exc, FileExistsError) and path is not None:
        return CliError(f"{path} already exists", hint="use --force to overwrite it")
    if isinstance(exc, _durable.UnsafeFileError) and path is not None:
        return CliError(f"{path} {exc.strerror}", hint="pqselfenc replaces only regular files")
    where = path if path is not None else (paths[0].parent if paths else Path("."))
    return CliError(f"cannot write the maps in {where}: {exc.strerror}")
