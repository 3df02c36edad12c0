"""``python -m pqselfenc.cli``: the same as the ``pqselfenc`` command."""

from __future__ import annotations

import sys

from pqselfenc.cli import main

if __name__ == "__main__":
    sys.exit(main())
