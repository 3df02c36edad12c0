#!/usr/bin/env python3
"""Coverage-guided fuzzing (atheris/libFuzzer) of every pqselfenc parser.

Usage::

    python3 tests/fuzz/fuzz_parsers.py TARGET [libFuzzer flags...]
    python3 tests/fuzz/fuzz_parsers.py TARGET -runs=5000 -seed=1
    python3 tests/fuzz/fuzz_parsers.py TARGET -max_total_time=600 corpus_dir/
    python3 tests/fuzz/fuzz_parsers.py --list

Targets are defined in ``fuzz_targets.py`` (and ``fuzz_kem.py`` / ``fuzz_keys.py``). A finding is
any exception that is not a ``pqselfenc.error.Error`` (libFuzzer prints it, saves the input as
``crash-*`` and exits non-zero), a failed assertion inside a target (e.g. a forged chunk that
decrypted), an input that runs longer than ``-timeout`` seconds (default here: 10), or an input
that allocates past the address-space limit (``--as-limit-mb``, default 2048: the process gets
``MemoryError``, which is a finding too) or past ``-rss_limit_mb`` (default here: 1024).
"""

from __future__ import annotations

import resource
import sys
from collections.abc import Callable
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

with atheris.instrument_imports(include=["pqselfenc"]):
    import fuzz_targets as F

    import pqselfenc  # noqa: F401  (instrumented for coverage feedback)

    F.available()  # imports the kem/keys target modules, and so their pqselfenc layers

_DEFAULT_FLAGS = {"-timeout": "10", "-rss_limit_mb": "1024"}


def _take_option(argv: list[str], name: str, default: int) -> int:
    for arg in list(argv):
        if arg.startswith(name + "="):
            argv.remove(arg)
            return int(arg.split("=", 1)[1])
    return default


def _limit_address_space(megabytes: int) -> None:
    """Cap the process's address space, so an unbounded allocation fails fast as MemoryError."""
    limit = megabytes << 20
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _one_input(target: F.Target) -> Callable[[bytes], None]:
    def test_one_input(data: bytes) -> None:
        F.run(target, F.decode_input(target, data))

    return test_one_input


def main(argv: list[str]) -> int:
    targets = F.available()
    if len(argv) < 2 or argv[1] == "--list":
        print("targets:", " ".join(sorted(targets)))
        return 0 if len(argv) >= 2 else 2
    name = argv[1]
    if name not in targets:
        print(f"unknown target {name!r}; known: {' '.join(sorted(targets))}", file=sys.stderr)
        return 2
    rest = argv[2:]
    as_limit = _take_option(rest, "--as-limit-mb", 2048)
    for flag, value in _DEFAULT_FLAGS.items():
        if not any(a.startswith(flag + "=") for a in rest):
            rest.append(f"{flag}={value}")
    target = targets[name]
    F.cached_seeds(name)  # build seeds before the limit and before timing starts
    _limit_address_space(as_limit)
    atheris.Setup([argv[0], *rest], _one_input(target))
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
