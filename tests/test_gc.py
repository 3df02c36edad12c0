"""gc beside writers (issue 14): the invariant that makes it safe, tested directly, and the
lock protocol it rests on (docs/stores.md, "Sharing a store and garbage collection").

The invariant (pqselfenc/core/gc.py): gc deletes a chunk only if no map it was given names it
and its stamp, read again just before the delete, is at or before
``min(L - grace, start of every writer session that ended after L - grace)``, while it holds
the store alone. Writers stamp everything they write or reuse at or after their session's
start. The model test at the end drives random interleavings against that statement.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from pathlib import Path

import pytest
from _gc_support import (
    CFG,
    FakeClock,
    both_create_before_either_lists,
    content,
    decrypts,
    encrypt,
    gone_process,
    names,
    old_gc,
    plant_lock,
    segments,
    stored,
)
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from pqselfenc import (
    ChunkInfo,
    ChunkStore,
    DataMap,
    DirectoryChunkStore,
    MemoryChunkStore,
    SelfEncryptor,
)
from pqselfenc.core._locks import LockPolicy
from pqselfenc.core._lockspace import EndedSession
from pqselfenc.core.gc import GcMap, _cutoff, collect_garbage, store_report
from pqselfenc.error import ChunkNotFound, ChunkStoreError, StoreLockedError

HOUR = 3600.0


def memory(clock: FakeClock, **policy: float) -> MemoryChunkStore:
    return MemoryChunkStore(clock=clock, locks=LockPolicy(**policy) if policy else None)


# -- the cutoff -----------------------------------------------------------------------------------


def test_cutoff_is_the_grace_horizon_or_the_start_of_a_session_that_ended_within_it() -> None:
    long_ago = EndedSession("a", start=0.0, end=10.0)  # ended before the horizon: ignored
    recent = EndedSession("b", start=500.0, end=950.0)
    cutoff, count = _cutoff(1000.0, 100.0, [long_ago], slack=0.0)
    assert (cutoff, count) == (900.0, 0)
    cutoff, count = _cutoff(1000.0, 100.0, [long_ago, recent], slack=2.0)
    assert count == 1 and cutoff < 498.0 and cutoff > 497.999  # strictly before start - slack
    assert _cutoff(1000.0, 0.0, [recent], slack=0.0) == (1000.0, 0)  # grace 0: nothing recent
    # a session ending exactly at the horizon is not recent: its maps must be given
    assert _cutoff(1000.0, 50.0, [EndedSession("c", 1.0, 950.0)], 0.0)[1] == 0


# -- what gc deletes ------------------------------------------------------------------------------


def test_gc_deletes_only_unreferenced_chunks_older_than_the_grace_period() -> None:
    clock = FakeClock()
    store = memory(clock)
    keep_data, drop_data = os.urandom(5000), os.urandom(3000)
    keep, drop = encrypt(store, keep_data), encrypt(store, drop_data)
    clock.advance(30)
    plan = collect_garbage(store, [GcMap(keep, "keep.map")], delete=True, grace=60)
    assert (plan.maps, plan.referenced, plan.unreferenced, plan.young) == (1, 5, 3, 3)
    assert plan.deleted == 0 and stored(store) == names(keep, drop)
    clock.advance(31)
    plan = collect_garbage(store, [GcMap(keep, "keep.map")], delete=True, grace=60)
    assert (plan.deleted, plan.young, plan.kept) == (3, 0, 0)
    assert plan.freed_bytes == plan.unreferenced_bytes > 3000
    assert stored(store) == names(keep) and decrypts(store, keep, keep_data)
    assert "1 maps given" in plan.lines()[0] and "deleted 3 of 8 chunks" in plan.lines()[-1]


def test_a_dry_run_says_what_it_would_delete_and_deletes_nothing() -> None:
    clock = FakeClock()
    store = memory(clock)
    keep, _ = encrypt(store, os.urandom(4000)), encrypt(store, os.urandom(4000))
    clock.advance(HOUR)
    plan = collect_garbage(store, [keep], grace=60)
    assert not plan.delete and len(plan.candidates) == plan.unreferenced == 4
    assert plan.lines()[-1] == f"would delete 4 of 8 chunks ({plan.candidate_bytes} bytes)"
    assert len(stored(store)) == 8
    doc = plan.as_dict()
    assert (doc["maps"], doc["candidates"], doc["deleted"], doc["delete"]) == (1, 4, 0, False)


def test_a_dedup_hit_stamps_what_it_reuses_once_per_session() -> None:
    clock = FakeClock()
    store = memory(clock)
    shared = segments(2)
    encrypt(store, content(shared, [0, 1]))  # abandoned: no map kept
    old = {n: store.stamp_of(ChunkInfo(n)) for n in stored(store)}
    clock.advance(HOUR)
    with store.writing():
        start = store.locks().session_start
        assert start == clock.now
        second = encrypt(store, content(shared, [0, 1]))
        reused = names(second) & set(old)
        assert reused and all(store.stamp_of(ChunkInfo(n)) == start for n in reused)
        clock.advance(5)
        encrypt(store, content(shared, [0, 1]))  # reused again, already stamped this session
        assert all(store.stamp_of(ChunkInfo(n)) == start for n in reused)


def test_a_long_session_is_protected_as_a_whole_by_its_record() -> None:
    """The hole the grace period alone leaves: a writer reuses an old chunk early in a session
    longer than the grace period and writes its map at the end; gc runs just after, without
    that map. The chunk's stamp is older than L - grace, but not older than the session."""
    clock = FakeClock()
    store = memory(clock)
    shared = segments(2)
    keep_data = os.urandom(3000)
    keep = encrypt(store, keep_data)
    encrypt(store, content(shared, [0, 1]))  # abandoned
    clock.advance(10 * HOUR)
    with store.writing():
        late_data = content(shared, [0, 1])
        late = encrypt(store, late_data)  # reuses the abandoned chunks: stamped now
        clock.advance(30 * HOUR)  # a long session (e.g. many files)
    clock.advance(1)
    given = [GcMap(keep, "keep.map")]  # the late map is not given: written a moment ago
    record = store.locks().space.ended()[-1]
    plan = collect_garbage(store, given, delete=True, grace=24 * HOUR)
    assert plan.sessions == 1 and plan.cutoff < record.start
    assert names(late) <= stored(store) and decrypts(store, late, late_data)
    # Without the record, the same gc would take the reused chunks: it is what protects them.
    store.locks().space.forget(record.name)
    plan = collect_garbage(store, given, grace=24 * HOUR)
    assert {c.info.name for c in plan.candidates} & names(late)


def test_the_stamp_is_read_again_right_before_each_delete() -> None:
    clock = FakeClock()
    store = memory(clock)
    keep = encrypt(store, os.urandom(2000))
    drop_data = os.urandom(3000)
    drop = encrypt(store, drop_data)
    clock.advance(HOUR)

    def reuse_between_plan_and_delete(name: str, done: int, total: int) -> None:
        if name == "planned":  # a client that ignores locks reuses the chunks meanwhile
            for chunk in SelfEncryptor(drop_data, CFG).encrypt()[1]:
                store.put_named(chunk)

    plan = collect_garbage(
        store, [keep], delete=True, grace=60, on_step=reuse_between_plan_and_delete
    )
    assert len(plan.candidates) == 3 and (plan.deleted, plan.kept) == (0, 3)
    assert decrypts(store, drop, drop_data)


def test_gc_refuses_no_maps_a_store_without_locks_and_maps_of_another_store() -> None:
    clock = FakeClock()
    store, other = memory(clock), memory(clock)
    encrypt(store, os.urandom(3000))
    foreign = encrypt(other, os.urandom(3000))
    clock.advance(HOUR)
    with pytest.raises(ValueError, match="at least one map"):
        collect_garbage(store, [], delete=True, grace=0)
    with pytest.raises(ValueError, match="at least one map"):
        collect_garbage(store, list, delete=True, grace=0)  # a folder with no maps, read late
    assert store.locks().inspect() == []  # the lock was given back
    with pytest.raises(ChunkStoreError, match=r"chunks the store does not have.*deleted nothing"):
        collect_garbage(store, [GcMap(foreign, "b.map")], delete=True, grace=0)
    assert len(stored(store)) == 3

    class Plain(ChunkStore):
        def store(self, chunk: bytes) -> ChunkInfo:
            raise NotImplementedError

        def retrieve(self, info: ChunkInfo) -> bytes:
            raise ChunkNotFound("none")

    with pytest.raises(ChunkStoreError, match="no store locks"):
        collect_garbage(Plain(), [foreign], grace=0)
    with pytest.raises(ValueError, match="grace"):
        collect_garbage(store, [foreign], grace=-1)


def test_session_records_are_kept_for_a_week_then_pruned() -> None:
    clock = FakeClock()
    store = memory(clock)
    keep = encrypt(store, os.urandom(2000))
    clock.advance(8 * 24 * HOUR)
    encrypt(store, os.urandom(2000))
    assert len(store.locks().space.ended()) == 2
    plan = collect_garbage(store, [keep], delete=True, grace=60)
    assert plan.pruned == 1 and len(store.locks().space.ended()) == 1


def test_a_map_read_once_the_store_is_locked_is_the_set_gc_keeps() -> None:
    clock = FakeClock()
    store = memory(clock)
    folder: list[DataMap] = []
    data = os.urandom(3000)
    folder.append(encrypt(store, data))
    clock.advance(HOUR)
    plan = collect_garbage(store, lambda: list(folder), delete=True, grace=0)
    assert plan.maps == 1 and plan.deleted == 0 and decrypts(store, folder[0], data)


# -- the lock protocol ----------------------------------------------------------------------------


def test_writers_share_one_lock_per_store_object_and_re_enter(tmp_path: Path) -> None:
    one, two = DirectoryChunkStore(tmp_path), DirectoryChunkStore(tmp_path)
    with one.writing(), one.batch(), one.writing():
        assert [i.kind for i in one.locks().inspect()] == ["shared"]
        with two.batch():
            assert sorted(i.kind for i in one.locks().inspect()) == ["shared", "shared"]
    assert one.locks().inspect() == [] and len(one.locks().space.ended()) == 2


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_takes_its_own_lock(tmp_path: Path) -> None:
    store = DirectoryChunkStore(tmp_path)
    with store.writing():
        pid = os.fork()
        if pid == 0:  # the parent's lock is not the child's: it may be released any time
            with store.writing():
                os._exit(0 if len(store.locks().inspect()) == 2 else 1)
        assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0


def test_gc_cannot_start_while_a_writer_holds_the_store(tmp_path: Path) -> None:
    writer, gc_side = DirectoryChunkStore(tmp_path), DirectoryChunkStore(tmp_path)
    data = os.urandom(3000)
    with writer.writing():
        kept = encrypt(writer, data)
        with pytest.raises(StoreLockedError, match=rf"shared lock .*pid {os.getpid()}"):
            collect_garbage(gc_side, [encrypt(gc_side, b"x" * 3000)], delete=True, grace=0)
    assert names(kept) <= stored(gc_side) and gc_side.locks().inspect() == []


def test_gc_waits_for_writers_to_drain_while_its_lock_keeps_new_ones_out(tmp_path: Path) -> None:
    quick = LockPolicy(refresh=1, stale=30, wait=0)
    writer = DirectoryChunkStore(tmp_path)
    gc_side, late = DirectoryChunkStore(tmp_path), DirectoryChunkStore(tmp_path, locks=quick)
    keep = encrypt(writer, os.urandom(3000))
    held, seen = threading.Event(), []

    def write_until_gc_waits() -> None:
        with writer.writing():
            held.set()
            for _ in range(500):  # until gc's lock is there, waiting for us to finish
                if any(i.kind == "exclusive" for i in writer.locks().inspect()):
                    break
                time.sleep(0.01)
            with pytest.raises(StoreLockedError, match="exclusive lock") as caught:
                late.locks().shared().__enter__()  # a new writer is kept out meanwhile
            seen.append(str(caught.value))

    thread = threading.Thread(target=write_until_gc_waits)
    thread.start()
    held.wait(10)
    plan = collect_garbage(gc_side, [keep], delete=True, grace=0, wait=30)
    thread.join()
    assert seen and plan.maps == 1


def test_a_writer_waits_for_a_running_gc(tmp_path: Path) -> None:
    gc_side, writer = DirectoryChunkStore(tmp_path), DirectoryChunkStore(tmp_path)
    keep = encrypt(gc_side, os.urandom(2000))
    order: list[str] = []
    started = threading.Event()

    def write() -> None:
        started.set()
        with writer.writing():
            order.append("writer holds")

    thread = threading.Thread(target=write)

    def step(name: str, done: int, total: int) -> None:
        if name == "planned":
            thread.start()
            started.wait(10)
            time.sleep(0.3)  # the writer is trying meanwhile: it must not get in
            order.append("gc still holds")

    collect_garbage(gc_side, [keep], delete=True, grace=0, on_step=step)
    order.append("gc done")
    thread.join()
    assert order == ["gc still holds", "gc done", "writer holds"]


@pytest.mark.parametrize("other", ["writer", "gc"])
def test_create_then_list_never_lets_gc_share_the_store(tmp_path: Path, other: str) -> None:
    barrier = threading.Barrier(2)
    gc_side = DirectoryChunkStore(tmp_path)
    rival = DirectoryChunkStore(tmp_path, locks=LockPolicy(refresh=1, stale=30, wait=0))
    keep = encrypt(gc_side, os.urandom(2000))
    both_create_before_either_lists(gc_side, barrier)
    both_create_before_either_lists(rival, barrier)
    inside, overlap, outcomes = [], [], {}
    mutex = threading.Lock()

    def enter(who: str) -> None:
        with mutex:
            overlap.append(bool(inside))
            inside.append(who)
        time.sleep(0.2)
        with mutex:
            inside.remove(who)

    def run(who: str, action) -> None:  # type: ignore[no-untyped-def]
        try:
            action()
            outcomes[who] = "held"
        except StoreLockedError:
            outcomes[who] = "refused"

    def rival_action() -> None:
        if other == "writer":
            with rival.writing():
                enter("writer")
        else:
            collect_garbage(rival, [keep], grace=0, on_step=entering("gc2"))

    def entering(who: str):  # type: ignore[no-untyped-def]
        return lambda name, *_: name == "locked" and enter(who)

    def gc_action() -> None:
        collect_garbage(gc_side, [keep], grace=0, on_step=entering("gc"))

    sides = (("gc", gc_action), ("rival", rival_action))
    threads = [threading.Thread(target=run, args=side) for side in sides]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not any(overlap)
    assert "refused" in outcomes.values()  # at least one saw the other


def test_a_stale_lock_is_reported_and_blocks_gc_until_removed_by_name() -> None:
    clock = FakeClock()
    store = memory(clock)
    keep, drop = encrypt(store, os.urandom(2000)), encrypt(store, os.urandom(2000))
    ghost = plant_lock(store.locks().space, "shared", host="elsewhere", pid=7)
    clock.advance(HOUR)  # never refreshed: stale after 30 minutes
    [info] = store.locks().inspect()
    assert info.stale and not info.dead and info.lock_id == ghost
    assert info.describe().startswith(f"stale shared lock {ghost} (pid 7 on host elsewhere")
    with pytest.raises(StoreLockedError, match=rf"{ghost}.*pqselfenc store unlock {ghost}"):
        collect_garbage(store, [keep], delete=True, grace=60)
    with pytest.raises(StoreLockedError, match="no lock 0000000000000000"):
        collect_garbage(store, [keep], grace=60, remove_stale_locks=["0000000000000000"])
    assert len(stored(store)) == 6
    plan = collect_garbage(store, [keep], delete=True, grace=60, remove_stale_locks=[ghost])
    assert [i.lock_id for i in plan.removed_locks] == [ghost]
    assert plan.lines()[0].startswith("removed")
    # The removed writer's session ends now: what it touched since its start stays protected.
    assert plan.sessions == 1 and plan.deleted == 0 and names(drop) <= stored(store)


def test_a_live_lock_is_never_removed_on_request(tmp_path: Path) -> None:
    store = DirectoryChunkStore(tmp_path)
    with store.writing():
        [info] = store.locks().inspect()
        with pytest.raises(StoreLockedError, match="is not stale: it was not removed"):
            store.locks().remove_stale([info.lock_id])
        assert store.locks().inspect()[0].lock_id == info.lock_id


def test_a_writer_whose_lock_was_removed_fails_before_its_map(tmp_path: Path) -> None:
    store = DirectoryChunkStore(tmp_path, locks=LockPolicy(refresh=0.1, stale=2.0))
    with pytest.raises(StoreLockedError, match="was removed"), store.writing():
        encrypt(store, os.urandom(2000))
        [info] = store.locks().inspect()
        store.locks().space.remove(f"shared-{info.lock_id}")  # what an operator must not do
        for _ in range(200):
            time.sleep(0.025)
            with contextlib.suppress(StoreLockedError):
                store.locks().check()
                continue
            break
        with pytest.raises(StoreLockedError):
            encrypt(store, os.urandom(2000))  # no new batch joins a lost lock
    assert store.locks().inspect() == []  # the refresher did not bring it back


def test_a_lock_not_refreshed_in_time_is_not_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = DirectoryChunkStore(tmp_path, locks=LockPolicy(refresh=0.05, stale=0.3))
    space = store.locks().space

    def unreachable(name: str) -> bool:
        raise ChunkStoreError("the store does not answer")

    monkeypatch.setattr(space, "refresh", unreachable)
    with pytest.raises(StoreLockedError, match="could not be refreshed in time"), store.writing():
        time.sleep(0.4)


def test_writers_pass_a_dead_gc_lock_but_not_a_stale_one_from_elsewhere(tmp_path: Path) -> None:
    store = DirectoryChunkStore(tmp_path)
    dead = plant_lock(store.locks().space, "exclusive", **gone_process())
    data = os.urandom(3000)
    data_map = encrypt(store, data)  # the gc that left it is gone from this machine: no conflict
    assert decrypts(store, data_map, data)
    [info] = store.locks().inspect()
    assert info.lock_id == dead and info.dead and info.stale  # still there: reported, not broken
    store.locks().remove_stale([dead])
    elsewhere = plant_lock(store.locks().space, "exclusive", host="elsewhere")
    os.utime(tmp_path / "locks" / f"exclusive-{elsewhere}", (0, time.time() - HOUR))
    with pytest.raises(StoreLockedError, match=f"stale exclusive lock {elsewhere}"):
        encrypt(store, os.urandom(3000))


def test_a_lock_that_does_not_parse_still_counts(tmp_path: Path) -> None:
    store = DirectoryChunkStore(tmp_path, locks=LockPolicy(wait=0))
    locks = tmp_path / "locks"
    with store.writing():
        pass
    (locks / "exclusive-0123456789abcdef").write_bytes(b"not json")
    (locks / "README").write_text("not a lock")  # ignored: not a lock's name
    [info] = store.locks().inspect()
    assert info.holder is None and "holder unknown" in info.describe()
    with pytest.raises(StoreLockedError, match="exclusive lock 0123456789abcdef"):
        store.locks().shared().__enter__()


def test_a_deeply_nested_lock_body_is_a_lock_of_an_unknown_holder(tmp_path: Path) -> None:
    """Anyone who can write a shared store's folder planted 3,000 ``[`` as a lock: every
    encrypt, stats and gc then ended in an internal error (RecursionError, exit 70)."""
    store = DirectoryChunkStore(tmp_path, locks=LockPolicy(wait=0))
    with store.writing():
        pass
    (tmp_path / "locks" / "exclusive-0123456789abcdef").write_bytes(b"[" * 4000)
    [info] = store.locks().inspect()
    assert info.holder is None and "holder unknown" in info.describe()
    with pytest.raises(StoreLockedError, match="exclusive lock 0123456789abcdef"):
        store.locks().shared().__enter__()


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-32", "utf-8-sig"])
def test_a_lock_body_in_another_encoding_names_no_holder(tmp_path: Path, encoding: str) -> None:
    """Lock bodies are UTF-8 JSON, decoded strictly (review #1, finding 15: ``json.loads``
    guessed UTF-16 and UTF-32 and skipped a byte-order mark); another encoding still counts
    as a lock, of an unknown holder."""
    store = DirectoryChunkStore(tmp_path, locks=LockPolicy(wait=0))
    with store.writing():
        pass
    body = {"format": "pqselfenc-lock/1", "kind": "exclusive", "host": "elsewhere", "pid": 7}
    name = tmp_path / "locks" / "exclusive-0123456789abcdef"
    name.write_bytes(json.dumps(body).encode())
    [info] = store.locks().inspect()
    assert info.holder is not None and info.holder["host"] == "elsewhere"
    name.write_bytes(json.dumps(body).encode(encoding))
    [info] = store.locks().inspect()
    assert info.holder is None and "holder unknown" in info.describe()
    with pytest.raises(StoreLockedError, match="exclusive lock 0123456789abcdef"):
        store.locks().shared().__enter__()


# -- the old gc, and the same interleavings with the new one ------------------------------------


def test_the_old_gc_loses_a_writers_chunks_the_new_one_keeps() -> None:
    """The race of issue 14, made deterministic. A writer reuses chunks nothing references
    any more (abandoned), and gc runs before the writer's map exists (1) or with a list of
    maps read before it was written (2). The old gc deletes the reused chunks both times."""
    for collect in ("old", "new"):
        clock = FakeClock()
        store = memory(clock)
        shared = segments(2)
        keep = encrypt(store, os.urandom(2000))
        encrypt(store, content(shared, [0, 1]))  # abandoned
        clock.advance(HOUR)
        maps_now = [keep]
        with contextlib.ExitStack() as writing:
            writing.enter_context(store.writing())
            data = content(shared, [0, 1])
            late = encrypt(store, data)  # (1) gc runs here, before the map is written
            if collect == "old":
                old_gc(store, maps_now)
            else:
                with pytest.raises(StoreLockedError):
                    collect_garbage(store, maps_now, delete=True, grace=60)
        clock.advance(1)  # (2) the map exists now, but gc's list was read before
        if collect == "old":
            old_gc(store, maps_now)
            assert not names(late) <= stored(store)
            with pytest.raises(ChunkNotFound):
                decrypts(store, late, data)
        else:
            collect_garbage(store, maps_now, delete=True, grace=60)
            assert decrypts(store, late, data)


# -- the invariant, against random interleavings ---------------------------------------------------


class SharedStoreModel(RuleBasedStateMachine):
    """Writer sessions (each encrypting files with shared content, so chunks are reused, with
    time passing inside, writing or abandoning each map, a gc refused in the middle), lone
    batches, passing time, deleted maps, and gc runs given every map written at or before
    ``now - grace`` plus any subset of the newer ones (what the operator rule allows). No live
    map may ever lose a chunk."""

    @initialize(grace=st.sampled_from([5.0, 100.0]))
    def start(self, grace: float) -> None:
        self.clock = FakeClock()
        self.store = MemoryChunkStore(clock=self.clock, locks=LockPolicy(wait=0))
        self.grace = grace
        self.shared = segments(2, seed=7)
        self.live: dict[int, tuple[DataMap, bytes, float]] = {}  # id -> map, data, written
        self.serial = 0

    def _file(self, picks: list[int], keep: bool) -> None:
        data = content(self.shared, picks, unique=512)
        data_map = encrypt(self.store, data)
        if keep:
            self.serial += 1
            self.live[self.serial] = (data_map, data, self.clock.now)

    @rule(seconds=st.sampled_from([1.0, 50.0, 200.0]))
    def tick(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(picks=st.lists(st.integers(0, 1), min_size=1, max_size=2), keep=st.booleans())
    def lone_batch(self, picks: list[int], keep: bool) -> None:
        self._file(picks, keep)  # a batch of its own; its map written (or not) at once

    @rule(
        files=st.lists(
            st.tuples(st.lists(st.integers(0, 1), min_size=1, max_size=2), st.booleans(),
                      st.sampled_from([0.0, 50.0, 200.0])),
            min_size=1, max_size=4,
        ),
        gc_inside=st.booleans(),
        gc_after=st.booleans(),
    )  # fmt: skip
    def session(
        self, files: list[tuple[list[int], bool, float]], gc_inside: bool, gc_after: bool
    ) -> None:
        with self.store.writing():
            for picks, keep, pause in files:
                self.clock.advance(pause)
                self._file(picks, keep)
                if gc_inside and self.live:
                    with pytest.raises(StoreLockedError):
                        self._gc("all")
        if gc_after:  # at once, without the maps just written: the race of issue 14
            self._gc("none")

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def delete_a_map(self, data: st.DataObject) -> None:
        del self.live[data.draw(st.sampled_from(sorted(self.live)))]

    @precondition(lambda self: self.live)
    @rule(which=st.sampled_from(["none", "none", "none", "half", "all"]))
    def gc(self, which: str) -> None:
        self._gc(which)

    def _gc(self, which: str) -> None:
        horizon = self.clock.now - self.grace
        must = [m for m, _, at in self.live.values() if at <= horizon]
        newer = [m for m, _, at in self.live.values() if at > horizon]
        chosen = must + {"none": [], "half": newer[::2], "all": newer}[which]
        if chosen:
            collect_garbage(self.store, chosen, delete=True, grace=self.grace)

    @invariant()
    def every_live_map_is_whole(self) -> None:
        if hasattr(self, "store"):
            have = stored(self.store)
            for data_map, _, _ in self.live.values():
                assert names(data_map) <= have

    def teardown(self) -> None:
        for data_map, data, _ in getattr(self, "live", {}).values():
            assert decrypts(self.store, data_map, data)


TestSharedStoreModel = SharedStoreModel.TestCase
TestSharedStoreModel.settings = settings(
    max_examples=60, stateful_step_count=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)  # fmt: skip


def test_store_report_counts_chunks_maps_and_locks(tmp_path: Path) -> None:
    store = DirectoryChunkStore(tmp_path)
    keep = encrypt(store, os.urandom(3000))
    encrypt(store, os.urandom(2000))
    with store.writing():
        report = store_report(store, [keep])
    assert (report.chunks, report.referenced, report.unreferenced, report.missing) == (6, 3, 3, 0)
    assert report.stored_bytes and [i.kind for i in report.locks] == ["shared"]
    assert report.sessions == 2


@pytest.mark.parametrize("kind", ["shared", "exclusive"])
@pytest.mark.parametrize("step", ["entries", "read"])
def test_an_interrupt_while_a_lock_is_taken_leaves_no_lock_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str, step: str
) -> None:
    """Ctrl-C (or SIGTERM through its handler) after our lock object exists but before the lock
    is ours: the object goes, so it never turns stale and stops gc until ``store unlock``."""
    store = DirectoryChunkStore(tmp_path, locks=LockPolicy(refresh=1, stale=30, wait=5))
    space = store.locks().space
    other = plant_lock(space, "exclusive" if kind == "shared" else "shared", host="elsewhere")

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    take = store.locks().shared if kind == "shared" else store.locks().exclusive
    with monkeypatch.context() as patch:
        patch.setattr(space, step, interrupted)
        with pytest.raises(KeyboardInterrupt), take():
            pytest.fail("the lock was taken")
    assert [i.lock_id for i in store.locks().inspect()] == [other]


def test_a_writer_whose_start_time_cannot_be_read_is_alive(monkeypatch: pytest.MonkeyPatch) -> None:
    """``/proc`` mounted with ``hidepid`` (or another user's process) hides a live writer's start
    time: that proves nothing, so its lock still counts; only a pid with no process, or one
    with another start time, is gone."""
    from pqselfenc.core import _owner

    me = _owner.identity()
    assert not _owner.is_dead(me)
    gone = {**me, **gone_process()}
    assert _owner.is_dead(gone)
    assert _owner.is_dead({**me, "pid_start": me["pid_start"] + 1})  # the pid was reused
    monkeypatch.setattr(_owner, "process_start", lambda pid: None)  # hidepid=2
    assert not _owner.is_dead(me) and not _owner.is_dead({**me, "pid_start": 1})
    assert _owner.is_dead(gone)  # no such pid at all: still provably gone
