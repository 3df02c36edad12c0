"""pqselfenc.distributed on a LocalCluster of 1 and 2 worker processes vs encrypt_file.

Every round times, on the same random file and into a fresh store each time:

- ``encrypt_file`` / ``decrypt_file`` on this machine (the engine's default threads), the base;
- ``distributed.encrypt`` with one and two workers (processes of one thread each), with the
  single-pass halo hashing the library uses and with the two-phase alternative (hash every
  range, then encrypt with the neighbours' hashes: every chunk read and hashed twice);
- ``distributed.decrypt`` into a path with one and two workers.

Ratios are per round against the single-machine time of the same round; the table shows
medians. With ``--s3`` the cluster's source is an object and every store a prefix on a
SeaweedFS server started here (tests/_s3server.py; loopback only; ``encrypt_file`` still reads
a local copy of the same bytes): then the server's request rate is the limit. Keep
``--task-mib`` well above the chunk size (1 MiB): each task also reads two halo chunks.

    python benchmarks/bench_distributed.py [--size MIB] [--rounds N] [--task-mib M] [--s3]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from _common import MiB, machine, mbps, median, report, row, timed

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from distributed import Client, LocalCluster  # noqa: E402

from pqselfenc import DirectoryChunkStore, EncryptionConfig  # noqa: E402
from pqselfenc import distributed as dist  # noqa: E402
from pqselfenc.distributed._cluster import run_encrypt  # noqa: E402
from pqselfenc.distributed._locations import location  # noqa: E402
from pqselfenc.streaming import decrypt_file, encrypt_file  # noqa: E402

CONFIG = EncryptionConfig(chunk_size=MiB)


@contextlib.contextmanager
def cluster(workers: int) -> Iterator[Client]:
    with (
        LocalCluster(
            n_workers=workers,
            processes=True,
            threads_per_worker=1,
            dashboard_address=None,
            host="127.0.0.1",
            silence_logs=logging.ERROR,
            # The scheduler's HTTP endpoint on a free loopback port: 8787 may be taken.
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
        ) as local,
        Client(local) as client,
    ):
        yield client


class Places:
    """Where the source is and where fresh stores go (a folder, or S3 prefixes)."""

    def __init__(self, root: Path, data: bytes, s3: Any) -> None:
        self.root, self.s3 = root, s3
        self.path = root / "in.bin"
        self.path.write_bytes(data)
        self.source = str(self.path)
        if s3 is not None:
            key = f"bench-src-{uuid.uuid4().hex}"
            s3.client().put_object(Bucket=s3.bucket, Key=key, Body=data)
            self.source = f"s3://{s3.bucket}/{key}"

    def fresh_store(self) -> str:
        if self.s3 is not None:
            return f"s3://{self.s3.bucket}/bench-{uuid.uuid4().hex}"
        folder = self.root / f"store-{uuid.uuid4().hex}"
        folder.mkdir()
        return str(folder)

    def drop(self, store: str) -> None:
        if not store.startswith("s3://"):
            shutil.rmtree(store, ignore_errors=True)


def local_store(places: Places, store: str) -> Any:
    if store.startswith("s3://"):
        from pqselfenc.core.stores import S3ChunkStore

        return S3ChunkStore.from_url(store)
    return DirectoryChunkStore(store)


def one_machine(places: Places) -> tuple[float, float]:
    store = places.fresh_store()
    opened = local_store(places, store)
    enc = timed(lambda: encrypt_file(places.path, opened, CONFIG))
    data_map = encrypt_file(places.path, opened, CONFIG)
    out = places.root / "out-local.bin"
    dec = timed(lambda: decrypt_file(data_map, opened, out, CONFIG))
    out.unlink()
    places.drop(store)
    return enc, dec


def on_cluster(client: Client, places: Places, task_size: int) -> dict[str, float]:
    store = places.fresh_store()
    src, where = (
        location(places.source, "source", object_key=True),
        location(store, "s", object_key=False),
    )
    two_phase = lambda: run_encrypt(client, [src], where, CONFIG, task_size, "two-phase")  # noqa: E731
    times = {"two": timed(two_phase)}
    places.drop(store)
    store = places.fresh_store()
    holder: list[Any] = []
    times["enc"] = timed(
        lambda: holder.append(
            dist.encrypt(client, places.source, store, CONFIG, task_size=task_size)
        )
    )
    out = places.root / "out-cluster.bin"
    times["dec"] = timed(lambda: dist.decrypt(client, holder[0], store, out, task_size=task_size))
    out.unlink()
    places.drop(store)
    return times


def warm(client: Client, places: Places) -> None:
    """Import everything on the workers once (not timed)."""
    store = places.fresh_store()
    small = places.root / "warm.bin"
    small.write_bytes(os.urandom(4 * MiB))
    dist.encrypt(client, small, store, CONFIG, task_size=MiB)
    places.drop(store)


def rounds(args: argparse.Namespace, places: Places) -> dict[str, list[float]]:
    runs: dict[str, list[float]] = {}
    task_size = args.task_mib * MiB
    with cluster(1) as one, cluster(2) as two:
        warm(one, places)
        warm(two, places)
        for _ in range(args.rounds):
            enc, dec = one_machine(places)
            sample = {"local_enc": enc, "local_dec": dec}
            for name, client in (("w1", one), ("w2", two)):
                for key, value in on_cluster(client, places, task_size).items():
                    sample[f"{name}_{key}"] = value
            for key, value in sample.items():
                runs.setdefault(key, []).append(value)
                if key.startswith("w"):
                    base = enc if key.endswith(("enc", "two")) else dec
                    runs.setdefault(f"r_{key}", []).append(base / value)
    return runs


def table_rows(runs: dict[str, list[float]], size: int) -> list[dict[str, Any]]:
    m = {key: median(values) for key, values in runs.items()}
    rate: Callable[[str], float] = lambda key: mbps(size, m[key])  # noqa: E731
    b = "distributed"
    return [
        row(b, "encrypt_file, this machine", **{"MB/s": rate("local_enc")}, ratio=1.0),
        row(b, "encrypt, 1 worker", **{"MB/s": rate("w1_enc")}, ratio=m["r_w1_enc"]),
        row(b, "encrypt, 2 workers", **{"MB/s": rate("w2_enc")}, ratio=m["r_w2_enc"]),
        row(b, "encrypt two-phase, 1 worker", **{"MB/s": rate("w1_two")}, ratio=m["r_w1_two"]),
        row(b, "encrypt two-phase, 2 workers", **{"MB/s": rate("w2_two")}, ratio=m["r_w2_two"]),
        row(b, "decrypt_file, this machine", **{"MB/s": rate("local_dec")}, ratio=1.0),
        row(b, "decrypt, 1 worker", **{"MB/s": rate("w1_dec")}, ratio=m["r_w1_dec"]),
        row(b, "decrypt, 2 workers", **{"MB/s": rate("w2_dec")}, ratio=m["r_w2_dec"]),
    ]


@contextlib.contextmanager
def s3_server(root: Path, wanted: bool) -> Iterator[Any]:
    if not wanted:
        yield None
        return
    from _s3server import running_weed

    with running_weed(root / "weed") as server, _env(server):
        yield server


@contextlib.contextmanager
def _env(server: Any) -> Iterator[None]:
    """Credentials for the workers the usual boto3 way: the environment they inherit."""
    names = {
        "AWS_ACCESS_KEY_ID": server.access_key,
        "AWS_SECRET_ACCESS_KEY": server.secret_key,
        "AWS_DEFAULT_REGION": server.region,
        "PQSELFENC_S3_ENDPOINT": server.endpoint,
    }
    saved = {k: os.environ.get(k) for k in names}
    os.environ.update(names)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="MiB of random data (256)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--task-mib", type=int, default=64, help="plaintext per task (64)")
    parser.add_argument("--s3", action="store_true", help="source and store on SeaweedFS")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    size = args.size * MiB
    with tempfile.TemporaryDirectory(prefix="bench-dist-") as folder:
        root = Path(folder)
        with s3_server(root, args.s3) as server:
            places = Places(root, os.urandom(size), server)
            rows = table_rows(rounds(args, places), size)
    where = "SeaweedFS on loopback" if args.s3 else "directory store (fsync on)"
    header = (
        f"{args.size} MiB random, 1 MiB chunks, {args.task_mib} MiB per task, {where}, "
        f"workers = processes of 1 thread, median of {args.rounds}; {machine()}"
    )
    report("bench_distributed", rows, header)


if __name__ == "__main__":
    main()
