"""Hypothesis over every parser target (tests/fuzz/fuzz_targets.py): raw noise and mutated seeds.

For each input: only a ``pqselfenc.error.Error`` may escape; the call finishes within a per-input
time limit (SIGALRM, so a hang fails the test instead of stalling CI); the Python heap peak stays
within a constant plus a small multiple of the input size (tracemalloc), so nothing is allocated
for a count or length that is only claimed.
"""

from __future__ import annotations

import contextlib
import signal
import struct
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parent / "fuzz"))

import fuzz_targets as F

from pqselfenc.core import _primitives as P
from pqselfenc.error import InvalidDataError

TARGETS = sorted(F.available())
TIME_LIMIT = 10.0  # seconds per input; the slowest legitimate input takes well under 1 s
FIXED_BUDGET = 24 << 20  # heap a target may use whatever the input (seed stores, parent maps)
PER_INPUT_BYTE = 64

COMMON = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class Hang(Exception):
    """Raised by the alarm: an input ran past TIME_LIMIT (never a pqselfenc Error)."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    def on_alarm(signum: int, frame: object) -> None:
        raise Hang(f"input still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def check(name: str, data: bytes) -> None:
    """Run one input through ``name`` under the three rules of this module."""
    target = F.available()[name]
    F.cached_seeds(name)  # seeds are built outside the measured call
    F.run(target, b"")  # warm any per-process caches (samples, identities) before measuring
    tracemalloc.start()
    try:
        with time_limit(TIME_LIMIT):
            F.run(target, data)  # anything but a pqselfenc Error propagates and fails the test
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= FIXED_BUDGET + PER_INPUT_BYTE * len(data), f"{name}: heap peak {peak} bytes"


@pytest.mark.parametrize("name", TARGETS)
@COMMON
@given(data=st.binary(max_size=2048))
def test_raw_bytes(name: str, data: bytes) -> None:
    check(name, data)


@pytest.mark.parametrize("name", TARGETS)
@COMMON
@given(seed=st.integers(0, 255), edits=st.binary(min_size=4, max_size=40))
def test_mutated_seeds(name: str, seed: int, edits: bytes) -> None:
    pool = F.cached_seeds(name)
    check(name, F.apply_edits(pool[seed % len(pool)], edits))


@pytest.mark.parametrize("name", TARGETS)
def test_every_seed_is_accepted(name: str) -> None:
    """The seeds are valid inputs: the target gets past its parser on each (not vacuous)."""
    for seed in F.cached_seeds(name):
        assert F.run(F.available()[name], seed) is not None or name == "chunk_decrypt"


def test_the_rules_catch_a_hang_and_a_foreign_exception() -> None:
    with pytest.raises(Hang), time_limit(0.05):
        signal.pause()
    with pytest.raises(ValueError):
        F.run(F.Target("t", lambda d: int("x"), lambda: [b""]), b"")


# -- envelopes and key text that claim more than they hold -----------------------------------------

_FIXED = struct.Struct(">8sBB16sH")


def _envelope_head(suite: int, count: int) -> bytes:
    return _FIXED.pack(P.ENVELOPE_MAGIC, P.ENVELOPE_VERSION, suite, bytes(16), count)


HOSTILE_ENVELOPES = {
    "65535-stanzas": _envelope_head(P.SUITE_XWING, 0xFFFF) + bytes(64),
    "1024-stanzas-truncated": _envelope_head(P.SUITE_XWING, P.MAX_STANZAS) + bytes(100),
    "zero-stanzas": _envelope_head(P.SUITE_MLKEM768, 0) + bytes(64),
    "unknown-suite": _envelope_head(200, 1) + bytes(64),
}


@pytest.mark.parametrize("raw", HOSTILE_ENVELOPES.values(), ids=HOSTILE_ENVELOPES.keys())
def test_hostile_envelope_headers(raw: bytes) -> None:
    from pqselfenc.kem import inspect

    with pytest.raises(InvalidDataError):
        inspect(raw)
    check("envelope_parse", raw)


def test_envelope_claiming_a_4_GiB_payload_allocates_nothing() -> None:
    from pqselfenc.kem import inspect

    sealed = F.cached_seeds("envelope_parse")[0]  # one x-wing stanza, unsigned
    info = inspect(sealed)
    header_len = len(sealed) - info.payload_size - P.HEADER_MAC_SIZE
    for size in (0, P.TAG_SIZE, P.ENVELOPE_MAX_PAYLOAD + 1, 2**32 - 1):
        raw = sealed[: header_len - 4] + struct.pack(">I", size) + sealed[header_len:]
        with pytest.raises(InvalidDataError):
            inspect(raw)
        check("envelope_parse", raw)


@pytest.mark.parametrize(
    "text",
    [
        "pqse-pub-x-wing:" + "a" * 20_000,
        "pqse-pub-x-wing:" + "a" * 15_000,
        " " * 16_000 + "pqse-pub-x-wing:aa",
        "pqse-pub-" + "x" * 10_000 + ":aaaa",
        "pqse-pub-x-wing:" + "7" * 3000,
    ],
    ids=["over-limit", "under-limit-long", "whitespace", "long-name", "bad-checksum"],
)
def test_hostile_key_text(text: str) -> None:
    from pqselfenc.kem import PublicKey, VerifyingKey

    for cls in (PublicKey, VerifyingKey):
        with pytest.raises(InvalidDataError):
            cls.parse(text)
    check("public_key_text", text.encode())
