"""The key store's folder: private, and in a private place, before any file in it is read.

Whoever can write the store folder could plant links in it or rewrite its files; whoever can
write a folder on the way to it could rename the store away and put another in its place (an
older copy of it: a rollback; their own: their keys and recipients). So on every path that
reads a store (``KeyStore.open``, ``KeyStore.verify_audit``, ``KeyStore.backend_of`` and the
default store's choice in ``keys/defaults.py``, which the command uses), before the first file
in it is read, ``check_store_folder`` requires:

* the folder itself private (``core/_durable.check_private_directory``): a folder of this user
  that nobody else may write, and so is ``secrets/`` if it is there, never a link;
* the folder in a private place (``core/_trust.py``, the rule an unsealed map's place obeys):
  along its real path every folder and link belongs to this user or root, and nobody else may
  write a folder on the way (mode bits or an access control list) unless its sticky bit keeps
  them from renaming what is ours. A group-writable folder whose group's only member is its
  owner (umask 002 with user private groups) is private.

``make_store_folder`` creates a missing store folder, and every missing folder on the way,
with mode 0700 (as the XDG base directory specification asks of a data home), so a store made
under umask 002 does not sit in a folder its group may write.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from pqselfenc.core._durable import check_private_directory
from pqselfenc.core._trust import why_not_private
from pqselfenc.error import KeyStoreError

__all__ = ["check_store_folder", "make_store_folder"]

SECRETS = "secrets"


def check_store_folder(directory: Path) -> None:
    """``KeyStoreError`` unless the store folder ``directory`` is private and in a private place
    (module docstring). Nothing to check, and nothing to read, when there is no folder."""
    if not directory.exists():
        return
    check_private_directory(directory, KeyStoreError, subfolders=(SECRETS,))
    inner = directory / SECRETS  # a folder here (checked above): the store's, as a last step
    where = why_not_private(directory) or (why_not_private(inner) if inner.is_dir() else None)
    if where is not None:
        raise KeyStoreError(
            f"the key store {directory} is in a place others can change ({where}): whoever "
            "can write there could put another store in its place (an older copy of it, or "
            "one of their own); make every folder on the way yours alone (chmod go-w), or "
            "move the store"
        )


def make_store_folder(directory: Path) -> None:
    """Create ``directory`` and every missing folder on the way with mode 0700, then
    ``check_store_folder``."""
    missing = []
    here = directory
    while not here.exists() and here != here.parent:
        missing.append(here)
        here = here.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made by another process meanwhile
            folder.mkdir(mode=0o700)
    check_store_folder(directory)
