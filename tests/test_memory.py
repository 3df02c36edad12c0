"""MemoryConfig and CacheConfig: validated values whose bounds size the task windows."""

from __future__ import annotations

import pytest

from pqselfenc import EncryptionConfig, ParallelConfig
from pqselfenc.memory import CacheConfig, MemoryConfig

MiB = 1 << 20


def test_defaults_and_windows() -> None:
    memory = MemoryConfig()
    cfg = EncryptionConfig(parallel=ParallelConfig(max_threads=2))
    assert memory.encrypt_window(cfg, 4) == 4  # the bound is not what limits here
    tight = MemoryConfig(max_total_memory=6 * MiB)
    assert tight.encrypt_window(cfg, 4) == 2  # 6 chunks: 4 held by the stream, 2 tasks
    assert tight.decrypt_window(MiB, 40) == 5
    assert tight.decrypt_window(0, 3) == 3


@pytest.mark.parametrize(
    ("total", "chunk", "min_chunks"),
    [(4 * MiB, MiB, 3), (5 * MiB - 1, MiB, 3), (10 * MiB, MiB, 10)],
)
def test_a_bound_below_what_the_layout_needs_is_refused(
    total: int, chunk: int, min_chunks: int
) -> None:
    cfg = EncryptionConfig(chunk_size=chunk, min_chunks=min_chunks)
    with pytest.raises(ValueError, match="max_total_memory"):
        MemoryConfig(max_total_memory=total).encrypt_window(cfg, 4)


def test_decrypt_window_needs_two_chunks() -> None:
    with pytest.raises(ValueError, match="max_total_memory"):
        MemoryConfig(max_total_memory=MiB + 1).decrypt_window(MiB, 4)
    assert MemoryConfig(max_total_memory=2 * MiB).decrypt_window(MiB, 4) == 1


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({"max_total_memory": 0}, ValueError),
        ({"max_total_memory": 1.5}, TypeError),
        ({"max_total_memory": True}, TypeError),
        ({"max_chunk_cache": -1}, ValueError),
    ],
)
def test_memory_config_is_validated(kwargs: dict[str, object], exc: type) -> None:
    with pytest.raises(exc):
        MemoryConfig(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({"capacity": 0}, ValueError),
        ({"capacity": "8"}, TypeError),
        ({"ttl": 0}, ValueError),
        ({"ttl": -1.0}, ValueError),
        ({"ttl": float("inf")}, ValueError),
        ({"ttl": float("nan")}, ValueError),
        ({"ttl": "60"}, TypeError),
        ({"ttl": True}, TypeError),
    ],
)
def test_cache_config_is_validated(kwargs: dict[str, object], exc: type) -> None:
    with pytest.raises(exc):
        CacheConfig(**kwargs)  # type: ignore[arg-type]
    assert CacheConfig(capacity=1, ttl=None).ttl is None
    assert CacheConfig(ttl=0.5).ttl == 0.5
