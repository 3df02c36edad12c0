"""The client side: plan the tasks, submit them, collect the result, clean up after a failure.

Everything here runs in the caller's process and only orchestrates: the client never reads
the source, never touches the store and needs no credentials. Task keys are
``pqselfenc-<step>-<random token>-<n>``: nothing in them is derived from content or keys.

After any failure the job *settles* before the error is raised: every future is cancelled
and the client waits until no worker still runs one of the job's tasks (a running task
cannot be interrupted; its result is then dropped). Only then does decryption clean up its
destination, so no part upload or range write can arrive after the abort.

An interrupt (Ctrl-C, SIGTERM: a ``KeyboardInterrupt``) is not such a failure: the caller must
get control back at once, so the client only cancels the job and hands the cleanup to the
cluster (``fire_and_forget``): a task that waits there until none of the job's tasks runs, then
removes the temp file or aborts the upload, whether or not the client is still connected.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal

from pqselfenc import DataMap, EncryptionConfig
from pqselfenc.distributed import _decrypt as D
from pqselfenc.distributed import _encrypt as X
from pqselfenc.distributed._engine import MAX_MAP_LEVEL_ENTRIES
from pqselfenc.distributed._locations import Location, S3Location
from pqselfenc.distributed._task import task
from pqselfenc.error import EncryptionError, Error

__all__ = ["Hashing", "chunk_ranges", "run_decrypt", "run_encrypt"]

Hashing = Literal["halo", "two-phase"]

S3_MIN_PART = 5 << 20  # S3 refuses smaller parts (but the last)
S3_MAX_PARTS = 10_000
_SETTLE_TIMEOUT = 300.0  # seconds to wait for running tasks after a failure
_SETTLE_POLL = 0.05  # seconds between looks at running tasks (and at futures, in gather)
_ENDED = frozenset({"error", "cancelled", "lost"})  # future states that end a job early


def chunk_ranges(count: int, per_task: int) -> list[tuple[int, int]]:
    """``[a, b)`` ranges of ``per_task`` chunks covering ``count`` chunks (one empty range for
    an input without chunks)."""
    if count == 0:
        return [(0, 0)]
    return [(a, min(a + per_task, count)) for a in range(0, count, per_task)]


def chunks_per_task(piece: int, task_size: int, count: int, dest: Location | None) -> int:
    """Whole chunks per task: ``task_size`` bytes rounded up; for an S3 destination also at
    least 5 MiB per part and at most 10,000 parts."""
    per_task = max(1, -(-task_size // max(piece, 1)))
    if isinstance(dest, S3Location):
        per_task = max(per_task, -(-S3_MIN_PART // max(piece, 1)), -(-count // S3_MAX_PARTS))
    return per_task


def _translate(exc: BaseException) -> BaseException:
    """pqselfenc errors as they are, and interrupts (``KeyboardInterrupt``, ``SystemExit``);
    the cluster's own failures as ``EncryptionError``."""
    if isinstance(exc, Error) or not isinstance(exc, Exception):
        return exc
    name = type(exc).__name__
    if name == "KilledWorker":
        return EncryptionError(
            "a task was running on workers that died too often; see the workers' logs"
        )
    if name == "CancelledError":
        return EncryptionError("the job was cancelled (the cluster shut down or restarted)")
    if isinstance(exc, OSError | TimeoutError):
        return EncryptionError(f"lost the Dask scheduler ({name})")
    return EncryptionError(f"the Dask cluster failed ({name})")


def _executing(keys: list[str], dask_worker: Any = None) -> list[str]:
    """On a worker: which of ``keys`` are still running there (cancelled ones included)."""
    state = dask_worker.state
    wanted = set(keys)
    return [ts.key for ts in (*state.executing, *state.long_running) if ts.key in wanted]


def _wait_until_settled(client: Any, keys: list[str]) -> None:
    """Wait (up to ``_SETTLE_TIMEOUT``) until no worker runs one of ``keys``."""
    deadline = time.monotonic() + _SETTLE_TIMEOUT
    while time.monotonic() < deadline:
        try:
            running = client.run(_executing, keys, on_error="return")
        except Exception:
            return  # the cluster is gone: nothing of ours runs any more
        # A worker that cannot answer is gone (its tasks with it).
        if not any(isinstance(r, list) and r for r in running.values()):
            return
        time.sleep(_SETTLE_POLL)


@task
def cleanup_when_settled(keys: list[str], cleanup: Callable[..., None], *args: Any) -> None:
    """On a worker, after an interrupt: wait until none of ``keys`` runs, then ``cleanup(*args)``
    (the client is gone by then, or going)."""
    from distributed import get_client

    _wait_until_settled(get_client(), keys)
    cleanup(*args)


class Session:
    """The futures of one job, and its cleanup."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.token = secrets.token_hex(8)
        self.futures: list[Any] = []

    def submit(self, step: str, func: Callable[..., Any], *args: Any) -> Any:
        key = f"pqselfenc-{step}-{self.token}-{len(self.futures)}"
        future = self.client.submit(func, *args, key=key, pure=False)
        self.futures.append(future)
        return future

    def gather(self, futures: Any) -> Any:
        """The results of ``futures`` (a list, or one). The wait is here, in short sleeps, so
        an interrupt lands in this thread's own sleep, never inside a blocking Dask call
        (whose coroutine it would leave behind, to print a traceback later)."""
        pending = futures if isinstance(futures, list) else [futures]
        while not all(f.done() for f in pending):
            if any(f.status in _ENDED for f in pending):
                break  # gather raises it at once, as a failure should end the job
            time.sleep(_SETTLE_POLL)
        try:
            return self.client.gather(futures)
        except BaseException as exc:
            translated = _translate(exc)
            if translated is exc:
                raise
            raise translated from exc

    def settle(self) -> None:
        """Cancel everything and wait until none of the job's tasks runs on any worker."""
        with contextlib.suppress(Exception):
            self.client.cancel(self.futures, force=True)
        _wait_until_settled(self.client, [f.key for f in self.futures])

    def abandon(self, cleanup: Callable[..., None] | None, *args: Any) -> None:
        """After an interrupt: cancel everything without waiting for running tasks, and leave
        ``cleanup(*args)`` to the cluster, to run once none of them runs any more."""
        from distributed import fire_and_forget

        keys = [f.key for f in self.futures]
        with contextlib.suppress(Exception):
            self.client.cancel(self.futures, force=True)
            if cleanup is not None:
                future = self.submit("cleanup", cleanup_when_settled, keys, cleanup, *args)
                fire_and_forget(future)  # type: ignore[no-untyped-call]

    @contextlib.contextmanager
    def failing(self, cleanup: Callable[..., None] | None = None, *args: Any) -> Iterator[None]:
        """On any failure: settle, run the task ``cleanup(*args)`` on the cluster (its own
        failure becomes a note), re-raise. On an interrupt, also during the settling:
        ``abandon``, re-raise at once."""
        try:
            yield
        except KeyboardInterrupt:
            self.abandon(cleanup, *args)
            raise
        except BaseException as exc:
            try:
                self.settle()
                if cleanup is not None:
                    self._clean_up(exc, cleanup, *args)
            except KeyboardInterrupt:
                self.abandon(cleanup, *args)
                raise
            raise

    def _clean_up(self, exc: BaseException, cleanup: Callable[..., None], *args: Any) -> None:
        try:
            self.gather(self.submit("abort", cleanup, *args))
        except Exception as cleanup_exc:
            exc.add_note(f"cleaning up also failed: {cleanup_exc}")


# -- encryption --------------------------------------------------------------------------------


def run_encrypt(
    client: Any,
    sources: list[Location],
    store: Location,
    config: EncryptionConfig,
    task_size: int,
    hashing: Hashing = "halo",
) -> list[DataMap]:
    """The DataMaps of ``sources``, encrypted into ``store`` by the cluster, in order."""
    session = Session(client)
    with session.failing():
        snaps = session.gather([session.submit("measure", X.measure, s, store) for s in sources])
        jobs = [X.Job(s, snap, store, config) for s, snap in zip(sources, snaps, strict=True)]
        for job in jobs:
            _check_fits(job)
        finals = [_submit_encrypt(session, job, task_size, hashing) for job in jobs]
        maps: list[DataMap] = session.gather(finals)
    return maps


def _check_fits(job: X.Job) -> None:
    """Refuse, before any chunk is written, an input whose level-0 map would hold more entries
    than a DataMap may (one machine would fail the same way, but only at the end)."""
    count = job.layout.count
    if count > MAX_MAP_LEVEL_ENTRIES:
        least = -(-job.snap.size // MAX_MAP_LEVEL_ENTRIES)
        raise EncryptionError(
            f"source {job.source} would make {count} chunks, more than the "
            f"{MAX_MAP_LEVEL_ENTRIES} a DataMap holds: use a chunk size of at least {least} bytes"
        )


def _submit_encrypt(session: Session, job: X.Job, task_size: int, hashing: Hashing) -> Any:
    layout = job.layout
    if layout.inline:
        return session.submit("finish", X.finish, job, session.submit("inline", X.read_inline, job))
    per_task = chunks_per_task(layout.piece, task_size, layout.count, None)
    ranges = chunk_ranges(layout.count, per_task)
    if hashing == "halo":
        parts = [session.submit("encrypt", X.encrypt_range, job, a, b) for a, b in ranges]
    else:
        hashes = [session.submit("hash", X.hash_range, job, a, b) for a, b in ranges]
        parts = [
            session.submit(
                "encrypt", X.encrypt_known, job, a, b, *_needed(hashes, per_task, a, layout.count)
            )
            for a, b in ranges
        ]
    return session.submit("finish", X.finish, job, *parts)


def _needed(hashes: list[Any], per_task: int, first: int, count: int) -> list[Any]:
    """The phase-1 results a range starting at ``first`` needs: its own and its ring halo's."""
    owners = {
        first // per_task,
        ((first - 1) % count) // per_task,
        ((first - 2) % count) // per_task,
    }
    return [hashes[t] for t in sorted(owners)]


# -- decryption --------------------------------------------------------------------------------


def run_decrypt(
    client: Any,
    data_map: DataMap,
    store: Location,
    dest: Location,
    config: EncryptionConfig | None,
    options: tuple[int, bool, int],
) -> None:
    """Decrypt ``data_map`` from ``store`` into ``dest``; ``options`` = (task size, overwrite,
    file mode)."""
    task_size, overwrite, mode = options
    session = Session(client)
    with session.failing():
        leaf = session.submit("leaf", D.leaf_of, store, data_map, config)
        count, piece = session.gather(session.submit("shape", D.shape_of, leaf))
        target = session.gather(
            session.submit("prepare", D.prepare, dest, data_map.total_size, overwrite)
        )

    with session.failing(D.abort, target):
        ranges = chunk_ranges(count, chunks_per_task(piece, task_size, count, dest))
        parts = [
            session.submit("decrypt", D.decrypt_range, store, leaf, config, target, a, b, t + 1)
            for t, (a, b) in enumerate(ranges)
        ]
        done = session.submit(
            "commit", D.commit, target, data_map.total_size, mode, overwrite, *parts
        )
        session.gather(done)
