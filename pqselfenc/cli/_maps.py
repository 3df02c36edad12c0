"""Reading and writing DataMap files: binary, JSON or sealed, told apart by their first bytes."""

from __future__ import annotations

from pathlib import Path

from pqselfenc.cli._output import CliError, default_file_mode, read_input, write_file
from pqselfenc.cli._session import Session
from pqselfenc.core import _primitives as P
from pqselfenc.core.datamap import DataMap
from pqselfenc.error import InvalidDataError

__all__ = ["decode_map", "is_sealed", "load_map", "parse_map", "write_map"]

SECRET_MODE = 0o600
UNSEALED_WARNING = (
    "{path} is an unsealed DataMap: anyone who can read it can decrypt the content "
    "(written with mode 0600; use --to NAME to seal it)"
)


def is_sealed(raw: bytes) -> bool:
    return raw.startswith(P.ENVELOPE_MAGIC)


def parse_map(raw: bytes, where: str) -> DataMap:
    """An unsealed map from its binary or JSON form; a one-line error naming ``where``."""
    try:
        if raw.startswith(P.MAP_MAGIC):
            return DataMap.from_bytes(raw)
        if raw.lstrip()[:1] == b"{":
            return DataMap.from_json(raw)
    except InvalidDataError as exc:
        raise CliError(
            f"{where}: {exc}", hint="the map file is damaged or is not a pqselfenc map"
        ) from exc
    raise CliError(f"{where} is not a pqselfenc map", hint="give the file 'encrypt' wrote")


def load_map(session: Session, path: Path) -> DataMap:
    """The DataMap in ``path``, opening it with the key store if it is sealed."""
    return decode_map(session, read_input(path, "map"), str(path))


def decode_map(session: Session, raw: bytes, where: str) -> DataMap:
    """The DataMap in ``raw`` (a file's bytes), opened with the key store if sealed."""
    if is_sealed(raw):
        from pqselfenc.cli._keyring import open_sealed  # keys layer: only when needed

        return open_sealed(session, raw, where)
    return parse_map(raw, where)


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
