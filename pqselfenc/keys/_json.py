"""Strict JSON for every file the key store reads back: only a pqselfenc error escapes.

Anyone with write access to the store directory controls these bytes, so ``json.loads`` alone is
not enough: it raises ``RecursionError`` on deep nesting, ``ValueError`` on an integer of more
than 4,300 digits, accepts ``NaN``/``Infinity`` and silently keeps the last of duplicate keys (two
readers could then disagree on a line). ``loads`` refuses all of these with the caller's error
class, and refuses nesting deeper than ``max_depth`` so nothing later (``json.dumps`` of an audit
line when its hash is recomputed) can hit the recursion limit either.
"""

from __future__ import annotations

import json
from typing import Any

from pqselfenc.error import Error

__all__ = ["MAX_DEPTH", "Fields", "canonical", "loads"]

MAX_DEPTH = 16  # our documents nest at most 5 levels (metadata: identities.NAME.versions[i])


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate key in a JSON object")
    return obj


def _depth(obj: Any) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


def loads(data: bytes | str, error: type[Error], what: str, max_depth: int = MAX_DEPTH) -> Any:
    """``data`` parsed as strict JSON; ``error(f"{what} ...")`` for anything else.

    Strict: UTF-8, no ``NaN``/``Infinity``, no duplicate keys, integers of at most 4,300 digits,
    containers nested at most ``max_depth`` deep.
    """
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        obj = json.loads(text, parse_constant=_refuse_constant, object_pairs_hook=_no_duplicates)
    except RecursionError as exc:
        raise error(f"{what} is nested too deeply") from exc
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, the int digit limit, ours
        raise error(f"{what} is not valid JSON") from exc
    if _depth(obj) > max_depth:
        raise error(f"{what} is nested more than {max_depth} levels deep")
    return obj


def canonical(obj: dict[str, Any]) -> bytes:
    """The bytes a hash or MAC covers: sorted keys, no whitespace, ASCII only."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


class Fields:
    """Typed, range-checked access to one parsed JSON object from a file someone else may write.

    Every missing field, wrong type (a bool is never an int) or integer out of range raises
    ``error`` naming ``where`` and the field, so nothing downstream (``struct.pack``, a dict
    lookup, a comparison) ever sees a value of the wrong kind.
    """

    def __init__(self, obj: object, error: type[Error], where: str) -> None:
        if not isinstance(obj, dict):
            raise error(f"{where} must be a JSON object")
        self.obj: dict[str, Any] = obj
        self.error, self.where = error, where

    def get(self, key: str, kind: type | tuple[type, ...]) -> Any:
        """The field ``key``, which must be present and an instance of ``kind``."""
        if key not in self.obj:
            raise self.error(f"{self.where} lacks {key!r}")
        value = self.obj[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            raise self.error(f"{self.where}.{key} has the wrong type")
        return value

    def integer(self, key: str, low: int, high: int, *, optional: bool = False) -> Any:
        """The integer field ``key`` in ``[low, high]`` (None when ``optional`` and absent/null)."""
        if optional and self.obj.get(key) is None:
            return None
        value = self.get(key, int)
        if not low <= value <= high:
            raise self.error(f"{self.where}.{key} is outside [{low}, {high}]")
        return value

    def text(self, key: str, *, optional: bool = False, max_length: int = 1 << 16) -> Any:
        """The string field ``key`` of at most ``max_length`` characters (None: see ``integer``)."""
        if optional and self.obj.get(key) is None:
            return None
        value = self.get(key, str)
        if len(value) > max_length:
            raise self.error(f"{self.where}.{key} is longer than {max_length} characters")
        return value
