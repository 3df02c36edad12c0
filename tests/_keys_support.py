"""Shared fixtures for the key store tests: an injected clock, a small DataMap, store factories."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pqselfenc import DataMap, SelfEncryptor
from pqselfenc.keys import KeyConfig, KeyStore

PASSPHRASE = "gravel orbit candle mosaic tundra"
START = datetime(2026, 1, 1, tzinfo=UTC)


class FakeClock:
    """A clock the test moves by hand: rotation and audit never sleep."""

    def __init__(self, start: datetime = START) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> datetime:
        self.now += timedelta(**kwargs)
        return self.now


def small_map(data: bytes = b"the quick brown fox jumps over the lazy dog" * 50) -> DataMap:
    return SelfEncryptor(data).encrypt()[0]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


StoreFactory = Callable[..., KeyStore]


@pytest.fixture
def open_store(tmp_path: Path, clock: FakeClock) -> StoreFactory:
    """``open_store(**config_overrides)``: a file-backed store in tmp_path with the fake clock."""

    def factory(path: Path | None = None, **overrides: object) -> KeyStore:
        config = KeyConfig(rotation_interval=timedelta(days=30), **overrides)  # type: ignore[arg-type]
        return KeyStore.open(
            path or tmp_path / "ks", config=config, passphrase=PASSPHRASE, clock=clock
        )

    return factory
