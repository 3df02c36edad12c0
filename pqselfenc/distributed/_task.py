"""The wrapper every worker task of ``pqselfenc.distributed`` runs in."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from pqselfenc.error import EncryptionError, Error

__all__ = ["task"]

P_ = ParamSpec("P_")
T = TypeVar("T")


def task(func: Callable[P_, T]) -> Callable[P_, T]:
    """A worker task: pqselfenc errors pass as they are; anything else becomes an
    ``EncryptionError`` naming only its type (messages of foreign exceptions may hold paths or
    requests, and must not reach the client's logs)."""

    @functools.wraps(func)
    def run(*args: P_.args, **kwargs: P_.kwargs) -> T:
        try:
            return func(*args, **kwargs)
        except Error:
            raise
        except Exception as exc:
            raise EncryptionError(f"worker task failed: {type(exc).__name__}") from exc

    return run
