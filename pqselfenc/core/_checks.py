"""Argument checks the public classes share: bounded ints and byte-like input.

Misuse is a ``TypeError`` (wrong kind of value) or a ``ValueError`` (right kind, out of range)
at construction, naming the argument, as pyca's classes do.
"""

from __future__ import annotations

__all__ = ["Data", "as_view", "check_int"]

Data = bytes | bytearray | memoryview
"""What every entry point accepts as input bytes."""


def check_int(name: str, value: object, low: int, high: int) -> int:
    """``value`` if it is an int (not a bool) in ``[low, high]``; else the error naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {value}")
    return value


def as_view(data: object) -> memoryview:
    """``data`` (bytes, bytearray or memoryview) as a flat byte view, without a copy."""
    if not isinstance(data, Data):
        raise TypeError(f"data must be bytes, bytearray or memoryview, not {type(data).__name__}")
    view = memoryview(data)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")
