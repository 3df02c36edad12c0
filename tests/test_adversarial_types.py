"""Type-confused and out-of-range fields in every core parser (issue 11, item 7).

``DataMap.from_json`` with ``"compression": []`` raised ``TypeError`` (the CLI: "internal
error", exit 70): a field was used before its type was checked. Every field of the JSON and
binary forms is now checked for type and range first. Hypothesis puts any JSON value into any
field (and any integer into any binary field); only ``InvalidDataError`` may come out, and a
map that parses must round-trip. The structured fuzz targets (tests/fuzz/fuzz_structured.py)
do the same under atheris, for chunk frames and sealed envelopes too.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pqselfenc import ChunkInfo, CompressionConfig, DataMap, EncryptionConfig, SelfEncryptor
from pqselfenc.error import InvalidDataError

CFG = EncryptionConfig(chunk_size=64, compression=CompressionConfig("zstd", 3))
MAP, _ = SelfEncryptor(b"typed " * 40, CFG).encrypt()
DOC: dict[str, Any] = json.loads(MAP.to_json())
SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])  # fmt: skip

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([-1, 2**32 - 1, 2**32, 2**63, 2**64, -(2**64), 10**40])
    | st.floats()
    | st.text(max_size=70),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def parse(text: str) -> None:
    try:
        parsed = DataMap.from_json(text)
    except InvalidDataError:
        return
    assert DataMap.from_json(parsed.to_json()) == parsed


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("compression", []),  # the example: TypeError before
        ("compression", {}),
        ("compression", None),
        ("compression", 1),
        ("level", "3"),
        ("level", 3.0),
        ("level", True),
        ("level", 2**64),
        ("version", True),
        ("version", [1]),
        ("child", -1),
        ("total_size", 2**64),
        ("total_size", 1e3),
        ("chunks", {}),
        ("chunks", "x"),
        ("chunks", [[]]),
        ("inline", 0),
        ("convergence_secret_id", ["00" * 16]),
        ("format", {"pqselfenc-datamap": 1}),
    ],
)
def test_a_wrong_type_in_a_field_is_invalid_data(field: str, value: object) -> None:
    doc = {**DOC, field: value}
    with pytest.raises(InvalidDataError):
        DataMap.from_json(json.dumps(doc))


@pytest.mark.parametrize("value", [[], {}, None, "64", 64.0, True, -1, 2**32, 2**70])
@pytest.mark.parametrize("field", ["src_size", "src_hash", "name"])
def test_a_wrong_type_in_an_entry_is_invalid_data(field: str, value: object) -> None:
    entries = [dict(e) for e in DOC["chunks"]]
    entries[1][field] = value
    with pytest.raises(InvalidDataError):
        DataMap.from_json(json.dumps({**DOC, "chunks": entries}))


@pytest.mark.parametrize(
    "text",
    [
        json.dumps(DOC).replace('"level": 3', '"level": 3, "level": 4'),  # a key twice
        json.dumps(DOC).replace('"level": 3', '"level": NaN'),
        json.dumps(DOC).replace('"level": 3', '"level": Infinity'),
        json.dumps(DOC).replace('"compression": "zstd"', '"compression": "zst\\u00e9"'),
        json.dumps(DOC).replace('"chunks": [', '"chunks": ' + "[" * 100_000, 1),
        json.dumps([DOC]),
        "\xff" + json.dumps(DOC),
    ],
    ids=["duplicate-key", "nan", "infinity", "non-ascii", "deep", "list", "non-json"],
)
def test_hostile_json_text_is_invalid_data(text: str) -> None:
    with pytest.raises(InvalidDataError):
        DataMap.from_json(text)


@SETTINGS
@given(field=st.sampled_from(sorted(DOC)), value=JSON_VALUES)
def test_any_value_in_any_field(field: str, value: object) -> None:
    parse(json.dumps({**DOC, field: value}))


@SETTINGS
@given(index=st.integers(0, len(DOC["chunks"]) - 1), field=st.sampled_from(["src_hash", "name",
       "src_size", "extra"]), value=JSON_VALUES)  # fmt: skip
def test_any_value_in_any_entry_field(index: int, field: str, value: object) -> None:
    entries = [dict(e) for e in DOC["chunks"]]
    entries[index][field] = value
    parse(json.dumps({**DOC, "chunks": entries}))


@SETTINGS
@given(doc=JSON_VALUES)
def test_any_json_document(doc: object) -> None:
    parse(json.dumps(doc))


# -- binary fields out of range --------------------------------------------------------------------

RAW = MAP.to_bytes()
# (offset, struct format) of every integer field; entries from offset 25 (no secret id here)
FIELDS = {
    "version": (8, ">B"),
    "child": (9, ">B"),
    "compression": (10, ">B"),
    "level": (11, ">B"),
    "secret_id_len": (12, ">B"),
    "total_size": (13, ">Q"),
    "count": (21, ">I"),
    **{f"src_size[{i}]": (25 + 68 * i + 64, ">I") for i in range(len(MAP.chunks))},
}


@SETTINGS
@given(field=st.sampled_from(sorted(FIELDS)), value=st.integers(0, 2**64 - 1))
def test_any_integer_in_any_binary_field(field: str, value: int) -> None:
    offset, fmt = FIELDS[field]
    size = struct.calcsize(fmt)
    raw = RAW[:offset] + struct.pack(fmt, value % (1 << (8 * size))) + RAW[offset + size :]
    try:
        parsed = DataMap.from_bytes(raw)
    except InvalidDataError:
        return
    assert parsed.to_bytes() == raw


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({"total_size": "5"}, TypeError),
        ({"total_size": 5.0}, TypeError),
        ({"total_size": True}, TypeError),
        ({"compression": "zstd"}, TypeError),
        ({"level": None}, TypeError),
        ({"inline": "ab"}, TypeError),
        ({"secret_id": bytearray(16)}, TypeError),
        ({"chunks": "abc"}, TypeError),
        ({"chunks": (object(),)}, TypeError),
        ({"chunks": (ChunkInfo(bytes(32), bytes(32), 5.0),)}, TypeError),  # type: ignore[arg-type]
        ({"version": 3}, InvalidDataError),
        ({"version": 2}, InvalidDataError),  # version 2 is for compressed pipelines only
    ],
)
def test_constructor_misuse_is_a_type_error(kwargs: dict[str, object], exc: type) -> None:
    args: dict[str, object] = {"total_size": 2, "inline": b"hi", **kwargs}
    with pytest.raises(exc):
        DataMap(**args)  # type: ignore[arg-type]
