"""One command invocation: its options, its console, the stores and key store it opens."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pqselfenc.cli._output import Console
from pqselfenc.cli._stores import (
    check_store_spec,
    default_store_path,
    describe_store,
    open_store,
)
from pqselfenc.core._store import ChunkStore
from pqselfenc.core.stores.default import default_home

__all__ = ["Session", "home_dir"]

STORE_ENV = "PQSELFENC_STORE"


def home_dir(explicit: str | None = None) -> Path:
    """Where keys (file backend), the audit log and the default chunk store live.

    ``--home``, else the library's default home (``$PQSELFENC_HOME``, else
    ``$XDG_DATA_HOME/pqselfenc``, else ``~/.local/share/pqselfenc``): one rule for the command,
    ``KeyStore(config)`` and a stream's default store.
    """
    return default_home(explicit)


@dataclass
class Session:
    """The parsed options and everything opened from them, opened at most once."""

    args: argparse.Namespace
    console: Console
    _opened: dict[str, Any] = field(default_factory=dict)
    _closers: list[Callable[[], None]] = field(default_factory=list)

    def option(self, name: str, default: Any = None) -> Any:
        return getattr(self.args, name, default)

    @property
    def home(self) -> Path:
        return home_dir(self.option("home"))

    def store_spec(self) -> str:
        """``--store``, else ``$PQSELFENC_STORE`` (empty counts as unset), else the default
        folder; checked (``check_store_spec``), so a mistyped store is an error, not a guess."""
        spec, origin = self.option("store"), "--store"
        if spec is None:
            spec, origin = os.environ.get(STORE_ENV) or None, f"${STORE_ENV}"
        if spec is None:
            return str(default_store_path(self.home))
        return check_store_spec(str(spec), origin)

    def store_label(self) -> str:
        """The store as results show it: an S3 store's canonical URL, or the folder."""
        return describe_store(self.store_spec())

    def opened(self, key: str) -> Any:
        """What ``keep`` stored under ``key``, or None."""
        return self._opened.get(key)

    def keep(self, key: str, value: Any, close: Callable[[], None] | None = None) -> None:
        """Remember ``value`` for this command; ``close`` runs when the command ends."""
        self._opened[key] = value
        if close is not None:
            self._closers.append(close)

    def close(self) -> None:
        """Close what was opened, newest first (e.g. the key store's audit checkpoint)."""
        while self._closers:
            self._closers.pop()()

    def chunk_store(self, *, create: bool) -> ChunkStore:
        """The chunk store of ``--store`` (``$PQSELFENC_STORE``, else the default folder)."""
        key = f"store:{create}"
        if key not in self._opened:
            store = open_store(self.store_spec(), create=create)
            close = getattr(store, "close", None)  # e.g. the S3 store's connection pool
            self.keep(key, store, close if callable(close) else None)
        opened: ChunkStore = self._opened[key]
        return opened
