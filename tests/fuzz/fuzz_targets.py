"""Parser fuzz targets, shared by the atheris harness and the hypothesis tests.

A target feeds untrusted bytes to one parser (and, for some, on into the code that acts on what
was parsed). The contract every target checks: the call returns, or raises a subclass of
``pqselfenc.error.Error``. Anything else escaping (a ``cryptography``/``zstandard``/``json``
exception, ``MemoryError``, ``RecursionError``, ``AssertionError``...) is a finding.

Inputs reach a target in one of two shapes (``decode_input``): raw bytes, or a valid seed of that
target with a list of byte edits applied, so a fuzzer explores near-valid inputs as well as
noise. Seeds are built deterministically with the library itself (``seeds()``).

Targets whose module is not there yet (kem/keys land in parallel) are simply absent from
``available()``; ``ALL_TARGETS`` names every target the harness knows.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

from pqselfenc import (
    CompressionConfig,
    DataMap,
    EncryptedChunk,
    EncryptionConfig,
    ParallelConfig,
    SelfEncryptor,
)
from pqselfenc.error import Error

Parse = Callable[[bytes], object]


@dataclass(frozen=True)
class Target:
    """One fuzz target: ``parse`` takes untrusted bytes; ``seeds`` builds valid inputs."""

    name: str
    parse: Parse
    seeds: Callable[[], list[bytes]]


def det_bytes(label: str, n: int) -> bytes:
    """``n`` deterministic pseudo-random bytes named by ``label`` (SHAKE-256)."""
    return hashlib.shake_256(label.encode()).digest(n)


# -- input shapes ---------------------------------------------------------------------------------


def apply_edits(seed: bytes, edits: bytes) -> bytes:
    """Apply byte edits to ``seed``: each 4-byte group is (op, pos_hi, pos_lo, value).

    op % 5: 0 set a byte, 1 xor a byte, 2 insert a byte, 3 delete a byte, 4 truncate.
    """
    out = bytearray(seed)
    for i in range(0, len(edits) - 3, 4):
        op, hi, lo, value = edits[i : i + 4]
        pos = ((hi << 8) | lo) % (len(out) + 1)
        kind = op % 5
        if kind == 2:
            out[pos:pos] = bytes((value,))
        elif pos == len(out):
            continue
        elif kind == 0:
            out[pos] = value
        elif kind == 1:
            out[pos] ^= value or 1
        elif kind == 3:
            del out[pos]
        else:
            del out[pos:]
    return bytes(out)


def decode_input(target: Target, data: bytes) -> bytes:
    """First byte even: the rest is raw input. Odd: seed ``byte >> 1`` with the rest as edits."""
    if not data or data[0] % 2 == 0:
        return data[1:]
    pool = cached_seeds(target.name)
    return apply_edits(pool[(data[0] >> 1) % len(pool)], data[1:])


def run(target: Target, data: bytes) -> object | None:
    """Call the target; ``None`` when it raised a pqselfenc ``Error`` (the allowed failure)."""
    try:
        return target.parse(data)
    except Error:
        return None


# -- core: DataMap bytes and JSON, and maps acted on -----------------------------------------------

# One thread: a fuzz input must not pay for a thread pool (output never depends on threads).
_CORE_CFG = EncryptionConfig(chunk_size=64, min_chunks=3, parallel=ParallelConfig(max_threads=1))
_SECRET = det_bytes("fuzz convergence secret", 32)
_CORE_INPUTS = [
    (det_bytes("inline", 2), _CORE_CFG),
    (det_bytes("three", 100), _CORE_CFG),
    (det_bytes("many", 64 * 7 + 5), _CORE_CFG.with_convergence_secret(_SECRET)),
    (b"compressible " * 40, _CORE_CFG.with_compression(CompressionConfig("zstd", 3))),
    # more than 4096 entries: a parent map (child = 1) over an encrypted child map
    (det_bytes("parent", 4200), _CORE_CFG.with_chunk_size(1)),
]


@functools.cache
def core_samples() -> tuple[tuple[DataMap, tuple[EncryptedChunk, ...], bytes], ...]:
    """(map, chunks, plaintext) for each core input, encrypted once per process."""
    out = []
    for data, cfg in _CORE_INPUTS:
        data_map, chunks = SelfEncryptor(data, cfg).encrypt()
        out.append((data_map, tuple(chunks), data))
    return tuple(out)


def _map_seeds() -> list[bytes]:
    return [m.to_bytes() for m, _, _ in core_samples()]


def _json_seeds() -> list[bytes]:
    return [m.to_json().encode() for m, _, _ in core_samples()]


def _parse_map(data: bytes) -> object:
    parsed = DataMap.from_bytes(data)
    assert parsed.to_bytes() == data, "a map parsed from non-canonical bytes"
    return parsed


def _parse_json(data: bytes) -> object:
    parsed = DataMap.from_json(data)
    assert DataMap.from_json(parsed.to_json()) == parsed
    return parsed


def _decrypt_hostile_map(data: bytes) -> object:
    """Parse a (mutated) map and decrypt it against the chunks of every sample.

    Only an ``Error`` may come out; when decryption succeeds, the bytes must be (a prefix of) one
    sample's plaintext: a forged map never yields other bytes. Parent maps are read through
    ``read_range`` so each input expands every level but decrypts one leaf chunk, not 4200.
    """
    parsed = DataMap.from_bytes(data)
    cfg = _CORE_CFG.with_convergence_secret(_SECRET)
    reader = SelfEncryptor.from_data_map(parsed, list(_all_chunks()), cfg)
    out = reader.read_range(0, 64) if parsed.child else reader.decrypt()
    if not parsed.chunks:
        return parsed  # an inline map carries its content itself: nothing to forge
    plains = [plain for _, _, plain in core_samples()]
    assert any(out == p[: len(out)] for p in plains), "a forged map decrypted to other bytes"
    assert parsed.child or out in plains, "a forged map decrypted to a part of a sample"
    return parsed


@functools.cache
def _all_chunks() -> tuple[EncryptedChunk, ...]:
    return tuple({c.name: c for _, chunks, _ in core_samples() for c in chunks}.values())


def _chunk_seeds() -> list[bytes]:
    return [c.content for _, chunks, _ in core_samples()[:4] for c in chunks]


def _decrypt_hostile_chunk(data: bytes) -> object:
    """Put ``data`` in place of one chunk of a small sample (picked by the input's length): only
    an ``Error`` or, for the unchanged chunk, the exact original plaintext may come out."""
    slots = [(s, i) for s in core_samples()[1:4] for i in range(len(s[1]))]
    (data_map, chunks, plain), i = slots[len(data) % len(slots)]
    forged = list(chunks)
    forged[i] = EncryptedChunk(chunks[i].name, data)
    cfg = _CORE_CFG.with_convergence_secret(_SECRET)
    out = SelfEncryptor.from_data_map(data_map, forged, cfg).decrypt()
    assert out == plain and data == chunks[i].content, "a forged chunk was accepted"
    return out


CORE_TARGETS = [
    Target("datamap_bytes", _parse_map, _map_seeds),
    Target("datamap_json", _parse_json, _json_seeds),
    Target("datamap_decrypt", _decrypt_hostile_map, _map_seeds),
    Target("chunk_decrypt", _decrypt_hostile_chunk, _chunk_seeds),
]


# -- registry -------------------------------------------------------------------------------------


def _module_present(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:
        return False


def _escape(data: bytes) -> object:
    if len(data) >= 2:
        raise ValueError("a non-pqselfenc exception escaping")
    return None


def _hang(data: bytes) -> object:
    if len(data) >= 2:
        threading.Event().wait()  # never set: an input that hangs
    return None


def _allocate(data: bytes) -> object:
    if len(data) >= 2:
        return bytearray(8 << 30)  # an unbounded allocation (8 GiB)
    return None


# Known-bad targets that prove the harness reports each kind of finding; only with this variable.
SELFTEST_ENV = "PQSELFENC_FUZZ_SELFTEST"
SELFTEST_TARGETS = [
    Target("selftest_escape", _escape, lambda: [b"ok"]),
    Target("selftest_hang", _hang, lambda: [b"ok"]),
    Target("selftest_allocate", _allocate, lambda: [b"ok"]),
]


@functools.cache
def available() -> dict[str, Target]:
    """Every target whose modules exist in this tree, by name."""
    targets = list(CORE_TARGETS)
    if os.environ.get(SELFTEST_ENV) == "1":
        targets += SELFTEST_TARGETS
    from fuzz_structured import structured_targets  # type: ignore[import-not-found]

    targets += structured_targets(with_kem=_module_present("fuzz_kem"))
    if _module_present("fuzz_kem"):
        from fuzz_kem import kem_targets  # type: ignore[import-not-found]

        targets += kem_targets()
    if _module_present("fuzz_keys"):
        from fuzz_keys import keys_targets  # type: ignore[import-not-found]

        targets += keys_targets()
    return {t.name: t for t in targets}


@functools.cache
def cached_seeds(name: str) -> tuple[bytes, ...]:
    seeds = tuple(available()[name].seeds())
    assert seeds, f"target {name} has no seeds"
    return seeds
