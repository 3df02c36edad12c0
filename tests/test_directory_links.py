"""A shared directory store's walk never goes through a link someone planted in it (review #1,
finding 13 and the ``__iter__`` suspicion): ``store stats``, ``store gc``, listing, stamping and
cleaning neither stat() nor list through a chunk name or a shard folder that is a symbolic link,
also when the shard is swapped for a link between the listing of the root and its opening."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from _cli_helpers import run
from _gc_support import encrypt, names

from pqselfenc import DirectoryChunkStore
from pqselfenc.core.gc import collect_garbage, store_report

BIG = 1 << 20  # a planted target's size: counted anywhere, it would show


def outside(tmp_path: Path, shard: str) -> Path:
    """A folder outside the store holding a big file under a chunk name of ``shard`` and an
    old temp file name, as an attacker's link target would."""
    folder = tmp_path / "outside"
    folder.mkdir(exist_ok=True)
    (folder / (shard + "f" * 62)).write_bytes(b"\0" * BIG)
    (folder / ".tmp-00000000000000aa").write_bytes(b"not a temp file of ours")
    os.utime(folder / ".tmp-00000000000000aa", (0, 0))
    return folder


def plant(store: DirectoryChunkStore, tmp_path: Path) -> tuple[str, Path]:
    """A link under a chunk name in a real shard (to a big file outside) and a whole shard
    folder that is a link (to a folder of chunk-named big files outside)."""
    real = next(p for p in sorted(store.root.iterdir()) if len(p.name) == 2)
    target = outside(tmp_path, "cd")
    (real / (real.name + "e" * 62)).symlink_to(target / ("cd" + "f" * 62))
    linked = "cd" if not (store.root / "cd").exists() else "ce"
    if linked == "ce":
        (target / ("ce" + "f" * 62)).write_bytes(b"\0" * BIG)
    (store.root / linked).symlink_to(target)
    return linked, target


def test_stats_and_gc_count_no_byte_through_a_planted_link(tmp_path: Path) -> None:
    store = DirectoryChunkStore(tmp_path / "s")
    keep = encrypt(store, os.urandom(5000))
    before = store_report(store, [keep])
    linked, target = plant(store, tmp_path)
    after = store_report(store, [keep])
    assert (after.chunks, after.stored_bytes, after.missing) == (
        before.chunks, before.stored_bytes, 0)  # fmt: skip
    listed = {c.info.name for c in store.stored_chunks()}
    assert listed == names(keep)
    plan = collect_garbage(store, [keep], delete=True, grace=0)
    assert (plan.chunks, plan.stored_bytes, plan.deleted) == (before.chunks, before.stored_bytes, 0)
    assert store.clean_temp() == 0
    assert {p.name for p in target.iterdir()} >= {linked + "f" * 62, ".tmp-00000000000000aa"}
    assert not any(i.hex_name.startswith(linked) for i in store)  # the linked shard is not listed


def test_the_commands_report_the_same_figures_with_links_planted(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PQSELFENC_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.bin").write_bytes(os.urandom(30000))
    assert run(capsys, "encrypt", "a.bin", "--store", "c", "-q").code == 0

    def figures() -> tuple[Any, ...]:
        stats = run(capsys, "store", "stats", "--store", "c", "a.bin.map", "--json")
        gc = run(capsys, "store", "gc", "--store", "c", "a.bin.map", "--delete", "--json")
        assert (stats.code, gc.code) == (0, 0), (stats.err, gc.err)
        s, g = json.loads(stats.out), json.loads(gc.out)
        return s["chunks"], s["bytes"], g["chunks"], g["bytes"], g["deleted"]

    before = figures()
    plant(DirectoryChunkStore(tmp_path / "c"), tmp_path)
    assert figures() == before and before[4] == 0


@contextmanager
def swapped_when_first_touched(shard: Path, target: Path) -> Iterator[list[bool]]:
    """Swap the folder ``shard`` for a link to ``target`` right after the walk first looks at
    it by name (an lstat, or an open relative to the root): the race a co-tenant of a shared
    store can win."""
    real_stat, real_open, done = os.stat, os.open, [False]

    def touches(path: Any, dir_fd: int | None) -> bool:
        name = os.fspath(path) if isinstance(path, str | os.PathLike) else None
        return not done[0] and (name == str(shard) or (dir_fd is not None and name == shard.name))

    def swap() -> None:
        done[0] = True
        os.rename(shard, shard.with_name("moved"))
        shard.symlink_to(target)

    def stat(path: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        result = real_stat(path, *args, **kwargs)
        if touches(path, kwargs.get("dir_fd")):
            swap()
        return result

    def open_(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        fd = real_open(path, flags, *args, **kwargs)
        if touches(path, kwargs.get("dir_fd")):
            swap()
        return fd

    os.stat, os.open = stat, open_  # type: ignore[assignment]
    try:
        yield done
    finally:
        os.stat, os.open = real_stat, real_open  # type: ignore[assignment]


WALKS: dict[str, Callable[[DirectoryChunkStore], object]] = {
    "iter": lambda store: [i.name for i in store],
    "stored_chunks": lambda store: [c.info.name for c in store.stored_chunks()],
    "clean_temp": lambda store: store.clean_temp(),
}


@pytest.mark.parametrize("walk", sorted(WALKS))
def test_a_shard_swapped_for_a_link_during_the_walk_is_never_walked_through(
    tmp_path: Path, walk: str
) -> None:
    store = DirectoryChunkStore(tmp_path / "s")
    keep = encrypt(store, os.urandom(5000))
    shard = store.path_of(keep.chunks[0]).parent
    target = outside(tmp_path, shard.name)
    with swapped_when_first_touched(shard, target) as done:
        found = WALKS[walk](store)
    assert done[0]  # the race really happened
    if isinstance(found, list):
        assert set(found) <= names(keep)  # nothing from outside the store
    assert {p.name for p in target.iterdir()} == {shard.name + "f" * 62, ".tmp-00000000000000aa"}
