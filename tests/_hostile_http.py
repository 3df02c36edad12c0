"""A one-trick HTTP server on 127.0.0.1 for the S3 store's edges: it answers every request by
trickling bytes, staying silent, sending an endless body (a chunk, an answer, an error), a body
cut short, or listing pages that never end or never advance (``Hostile.mode``)."""

from __future__ import annotations

import contextlib
import socket
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from pqselfenc import ChunkInfo

CONTENT = b"chunk bytes " * 10
INFO = ChunkInfo.for_chunk(CONTENT)
PREFIX = "p/"  # the prefix of the stores the tests point at this server


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
            request = conn.recv(65536)  # the request (headers; GET has no body)
            mode = self.mode
            if mode.startswith("listed-"):  # a listing of one chunk, then the trick
                if b"list-type=2" in request.split(b"\r\n", 1)[0]:
                    self._list_one(conn)
                    return
                mode = mode.removeprefix("listed-")
            getattr(self, f"_{mode.replace('-', '_')}")(conn)

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

    def _chunked(self, conn: socket.socket, status: str = "200 OK") -> None:
        self._send(conn, f"HTTP/1.1 {status}\r\nTransfer-Encoding: chunked\r\n\r\n".encode())
        piece = b"\0" * 65536
        while not self.stopped.is_set():
            self._send(conn, b"%x\r\n%s\r\n" % (len(piece), piece))

    def _error_endless(self, conn: socket.socket) -> None:
        """A 500 whose body (an "error document") never ends, without a length."""
        self._chunked(conn, "500 Internal Server Error")

    def _error_huge(self, conn: socket.socket) -> None:
        """A 500 that claims a 3 GiB body, and sends it."""
        head = f"HTTP/1.1 500 Internal Server Error\r\nContent-Length: {3 << 30}\r\n\r\n"
        self._send(conn, head.encode())
        self._endless(conn)

    def _cut(self, conn: socket.socket) -> None:
        """200 with ``Content-Length: 1000``, then 10 bytes and the connection closed."""
        self._send(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
        conn.shutdown(socket.SHUT_RDWR)

    def _page(self, conn: socket.socket, entries: str, truncated: bool = True) -> None:
        token = f"<NextContinuationToken>{uuid.uuid4().hex}</NextContinuationToken>"
        body = ('<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>chunks</Name>'
                f"<Prefix>{PREFIX}</Prefix><MaxKeys>1000</MaxKeys>{entries}"
                f"<IsTruncated>{str(truncated).lower()}</IsTruncated>"
                f"{token if truncated else ''}</ListBucketResult>").encode()  # fmt: skip
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        self._send(conn, head.encode() + body)

    def _list_fresh(self, conn: socket.socket) -> None:
        """A truncated page without keys and with a fresh continuation token, every time."""
        self._page(conn, "")

    def _list_stuck(self, conn: socket.socket) -> None:
        """A truncated page listing the same chunk every time, with a fresh token."""
        self._page(conn, f"<Contents><Key>{PREFIX}{INFO.hex_name}</Key>"
                         "<LastModified>2026-01-01T00:00:00.000Z</LastModified>"
                         f"<Size>{len(CONTENT)}</Size></Contents>")  # fmt: skip

    def _list_one(self, conn: socket.socket) -> None:
        """The last page, listing one chunk (``INFO``)."""
        self._page(conn, f"<Contents><Key>{PREFIX}{INFO.hex_name}</Key><Size>3</Size>"
                         "<LastModified>2026-01-01T00:00:00.000Z</LastModified></Contents>",
                   False)  # fmt: skip

    def _list_undated(self, conn: socket.socket) -> None:
        """The last page, listing a chunk without its ``LastModified`` and ``Size``."""
        self._page(conn, f"<Contents><Key>{PREFIX}{INFO.hex_name}</Key></Contents>", False)

    def _list_misdated(self, conn: socket.socket) -> None:
        """The last page, listing a chunk whose ``LastModified`` is not a time."""
        self._page(conn, f"<Contents><Key>{PREFIX}{INFO.hex_name}</Key><Size>3</Size>"
                         "<LastModified>yesterday</LastModified></Contents>", False)  # fmt: skip

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
