"""Option value types shared by the commands: each refuses what it does not understand as a
usage error (argparse turns ``ArgumentTypeError`` into exit 2), never guesses.

``Path("")`` is ``.``, and ``int()`` takes ``" 3"``, ``"٣"`` and numbers of any size; these
take what they say and nothing else.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

__all__ = ["count_arg", "path_arg"]

_DIGITS = re.compile(r"[0-9]{1,18}")  # ASCII digits, below 2^63


def path_arg(text: str) -> Path:
    """A file or folder path; an empty one is refused (it would mean the current folder)."""
    if not text:
        raise argparse.ArgumentTypeError("an empty path (use . for the current folder)")
    return Path(text)


def count_arg(text: str) -> int:
    """A whole number in ASCII digits, 0 to 10^18 - 1; the command checks its own range."""
    if not _DIGITS.fullmatch(text):
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}")
    return int(text)
