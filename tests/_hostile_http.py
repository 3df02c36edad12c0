"""A one-trick HTTP server on 127.0.0.1 for the S3 store's edges: it answers every request by
trickling bytes, staying silent or sending an endless body (``Hostile.mode``)."""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass, field
from typing import Any

from pqselfenc import ChunkInfo

CONTENT = b"chunk bytes " * 10
INFO = ChunkInfo.for_chunk(CONTENT)


@dataclass
class Hostile:
    """A one-trick HTTP server: ``mode`` says how it answers every request."""

    mode: str
    interval: float = 0.3
    sent: int = 0
    sock: socket.socket = field(default_factory=socket.socket)
    threads: list[threading.Thread] = field(default_factory=list)
    conns: list[socket.socket] = field(default_factory=list)
    stopped: threading.Event = field(default_factory=threading.Event)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def start(self) -> None:
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self._spawn(self._accept)

    def _spawn(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self.threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)  # len(conns): connections accepted so far
            self._spawn(self._serve, conn)

    def _serve(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError), conn:
            conn.recv(65536)  # the request (headers; GET has no body)
            getattr(self, f"_{self.mode.replace('-', '_')}")(conn)

    def _send(self, conn: socket.socket, data: bytes) -> None:
        conn.sendall(data)
        self.sent += len(data)

    def _trickle(self, conn: socket.socket, data: bytes) -> None:
        for byte in data:
            if self.stopped.wait(self.interval):
                return
            self._send(conn, bytes([byte]))

    def _trickle_body(self, conn: socket.socket) -> None:
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(CONTENT)}\r\n\r\n".encode()
        self._send(conn, head)
        self._trickle(conn, CONTENT)

    def _trickle_headers(self, conn: socket.socket) -> None:
        self._trickle(conn, b"HTTP/1.1 200 OK\r\nX-Slow: " + b"a" * 10_000 + b"\r\n\r\n")

    def _silent(self, conn: socket.socket) -> None:
        self.stopped.wait(60)

    def _huge(self, conn: socket.socket) -> None:
        self._send(conn, f"HTTP/1.1 200 OK\r\nContent-Length: {3 << 30}\r\n\r\n".encode())
        self._endless(conn)

    def _chunked(self, conn: socket.socket) -> None:
        self._send(conn, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        piece = b"\0" * 65536
        while not self.stopped.is_set():
            self._send(conn, b"%x\r\n%s\r\n" % (len(piece), piece))

    def _endless(self, conn: socket.socket) -> None:
        piece = b"\0" * 65536
        while not self.stopped.is_set():
            self._send(conn, piece)

    def stop(self) -> None:
        self.stopped.set()
        for sock in (self.sock, *self.conns):  # wakes a blocked accept() or sendall()
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        for thread in self.threads:
            thread.join(timeout=10)
            assert not thread.is_alive()
