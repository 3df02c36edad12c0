"""``pqselfenc keys``, ``recipients``, ``rewrap`` and ``audit``."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parsers"]


def add_parsers(sub: Any, common: argparse.ArgumentParser) -> None:
    return None
