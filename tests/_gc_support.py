"""Helpers for the gc and store-lock tests: a hand-moved clock, content that deduplicates
across files, lock objects planted as another process would leave them, and the old gc
(list the store, subtract what the maps reference, delete the rest), kept to show its race."""

from __future__ import annotations

import contextlib
import json
import os
import random
import secrets
import subprocess
import sys
import threading
from typing import Any

from pqselfenc import ChunkStore, DataMap, EncryptionConfig, SelfEncryptor
from pqselfenc.core._lockspace import LockSpace
from pqselfenc.core._owner import identity, process_start

CFG = EncryptionConfig(chunk_size=1024)
SEGMENT = 4 * 1024  # four chunks: the inner ones of a shared run deduplicate across files


class FakeClock:
    """A store clock the test moves by hand (``MemoryChunkStore(clock=...)``)."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def segments(count: int, seed: int = 1) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(SEGMENT) for _ in range(count)]


def content(shared: list[bytes], picks: list[int], unique: int = 1024) -> bytes:
    """Some shared segments (dedup across files) and a unique tail (chunks of its own)."""
    return b"".join(shared[i] for i in picks) + os.urandom(unique)


def encrypt(store: ChunkStore, data: bytes) -> DataMap:
    return SelfEncryptor(data, CFG, chunk_store=store).encrypt()[0]


def decrypts(store: ChunkStore, data_map: DataMap, data: bytes) -> bool:
    return SelfEncryptor.from_data_map(data_map, store, CFG).decrypt() == data


def names(*maps: DataMap) -> set[bytes]:
    return {c.name for m in maps for c in m.chunks}


def stored(store: ChunkStore) -> set[bytes]:
    return {i.name for i in store}


def old_gc(store: ChunkStore, maps: list[DataMap]) -> int:
    """gc before locks and grace periods: everything the maps do not name goes at once."""
    keep = names(*maps)
    gone = [i for i in store if i.name not in keep]
    for info in gone:
        store.delete(info)
    return len(gone)


def plant_lock(space: LockSpace, kind: str, **holder: Any) -> str:
    """A lock object as another process leaves it (this process's identity, overridden by
    ``holder``); its id. It is nobody's here: nothing refreshes it."""
    lock_id = secrets.token_hex(8)
    body = {"format": "pqselfenc-lock/1", "kind": kind, **identity(), **holder}

    def make(start: float | None) -> bytes:
        return json.dumps({**body, "start": start}).encode()

    space.create(f"{kind}-{lock_id}", make)
    return lock_id


def gone_process() -> dict[str, Any]:
    """The pid and start time of a process of this host that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    start = process_start(child.pid)
    child.wait()
    return {"pid": child.pid, "pid_start": start}


def both_create_before_either_lists(store: ChunkStore, barrier: threading.Barrier) -> None:
    """Make this store object's lock creation wait for the other side's: the interleaving in
    which a writer and a gc (or two gcs) start together."""
    locks = store.locks()
    assert locks is not None
    space = locks.space
    real = space.create

    def create(name, body):  # type: ignore[no-untyped-def]
        start = real(name, body)
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(30)  # a slow machine only waits longer; a broken barrier goes on
        return start

    space.create = create  # type: ignore[method-assign]
