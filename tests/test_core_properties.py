"""Property-based tests: round trip for any input and config; the map parser is strict."""

from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pqselfenc import CompressionConfig, DataMap, EncryptionConfig, ParallelConfig, SelfEncryptor
from pqselfenc.error import Error, InvalidDataError

configs = st.builds(
    EncryptionConfig,
    chunk_size=st.integers(1, 300),
    min_chunks=st.integers(1, 6),
    compression=st.sampled_from([CompressionConfig(), CompressionConfig("zstd", 1)]),
    parallel=st.sampled_from([ParallelConfig(max_threads=1), ParallelConfig(max_threads=3)]),
    convergence_secret=st.one_of(st.none(), st.binary(min_size=32, max_size=32)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=2000), cfg=configs)
def test_round_trip(data: bytes, cfg: EncryptionConfig) -> None:
    data_map, chunks = SelfEncryptor(data, cfg).encrypt()
    assert SelfEncryptor.from_data_map(data_map, chunks, cfg).decrypt() == data
    assert DataMap.from_bytes(data_map.to_bytes()) == data_map
    assert DataMap.from_json(data_map.to_json()) == data_map


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=600))
def test_parser_only_raises_invalid_data(raw: bytes) -> None:
    try:
        parsed = DataMap.from_bytes(raw)
    except InvalidDataError:
        return
    assert parsed.to_bytes() == raw  # canonical: one encoding per map


@settings(max_examples=300, deadline=None)
@given(
    data=st.binary(min_size=3, max_size=400),
    edits=st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=4),
)
def test_mutated_maps_parse_canonically_or_fail(data: bytes, edits: list[tuple[int, int]]) -> None:
    cfg = EncryptionConfig(chunk_size=64)
    data_map, chunks = SelfEncryptor(data, cfg).encrypt()
    raw = bytearray(data_map.to_bytes())
    for pos, value in edits:
        raw[pos % len(raw)] = value
    try:
        parsed = DataMap.from_bytes(bytes(raw))
    except InvalidDataError:
        return
    assert parsed.to_bytes() == bytes(raw)
    try:
        out = SelfEncryptor.from_data_map(parsed, chunks, cfg).decrypt()
    except Error:
        return
    assert out == data  # only a no-op edit can decrypt, and then to the original


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=300))
def test_json_parser_only_raises_invalid_data(text: str) -> None:
    with contextlib.suppress(InvalidDataError):
        DataMap.from_json(text)
