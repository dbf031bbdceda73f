"""A Unix-socket proxy in front of a real redis-server that can hold back the
replies of one connection, to stage a race deterministically.

    with HoldingProxy(tmp_path, r.socket) as p:        # r: a RedisServer
        Daemon(..., redis_url=p.url)                  # every connection goes through the proxy
        p.hold_replies_after(b"nearcache:k")          # the connection that next sends these bytes ...
        ...                                           # ... gets no more replies: they are buffered
        p.hold_where(b"SUBSCRIBE")                    # or every connection that already sent them
        p.wait_held()                                 # a reply is being held back
        p.release()                                   # deliver them, in order; stop holding
        p.cut()                                       # a partition: open connections dropped, new ones refused
        p.heal()                                      # connections pass again

Bytes pass through unchanged in both directions; only their delivery to the
client is delayed. Every other connection (e.g. the daemon's invalidation
connection) is never held.
"""
from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

from .wait import wait_for


class _Pair:
    def __init__(self, client: socket.socket, upstream: socket.socket):
        self.client = client
        self.upstream = upstream
        self.lock = threading.Lock()
        self.held = False
        self.buffer = bytearray()
        self.sent = bytearray()  # the first bytes the client sent, for hold_where()


class HoldingProxy:
    def __init__(self, directory, upstream_socket: str, name: str = "proxy"):
        self.path = str(Path(directory) / f"{name}.sock")
        if os.path.exists(self.path):
            os.unlink(self.path)
        self.upstream = upstream_socket
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.path)
        self.listener.listen(64)
        self.pairs: list[_Pair] = []
        self.needle: bytes | None = None
        self.lock = threading.Lock()
        self.closed = False
        self.cutting = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    # -- control -------------------------------------------------------------
    def hold_replies_after(self, needle: bytes) -> None:
        """The next connection that sends `needle` gets its later replies held back."""
        with self.lock:
            self.needle = needle

    def hold_where(self, needle: bytes) -> int:
        """Holds the replies of every open connection whose first bytes sent contain `needle`; returns how many."""
        n = 0
        with self.lock:
            pairs = list(self.pairs)
        for p in pairs:
            with p.lock:
                if needle in p.sent:
                    p.held = True
                    n += 1
        return n

    def held_bytes(self) -> int:
        with self.lock:
            return sum(len(p.buffer) for p in self.pairs if p.held)

    def wait_held(self, timeout: float = 5.0) -> None:
        wait_for(self.held_bytes, timeout, "a reply to be held back", interval=0.001)

    def release(self) -> None:
        with self.lock:
            self.needle = None
            pairs = list(self.pairs)
        for p in pairs:
            with p.lock:
                if p.buffer:
                    p.client.sendall(bytes(p.buffer))
                    p.buffer.clear()
                p.held = False

    def cut(self) -> None:
        """A partition: every open connection is shut and new ones are closed at once until heal()."""
        with self.lock:
            self.cutting = True
            pairs = list(self.pairs)
        for p in pairs:
            self._shut(p)

    def heal(self) -> None:
        with self.lock:
            self.cutting = False

    def close(self) -> None:
        self.closed = True
        self.listener.close()
        with self.lock:
            pairs = list(self.pairs)
        for p in pairs:
            for s in (p.client, p.upstream):
                try:
                    s.close()
                except OSError:
                    pass

    def __enter__(self) -> "HoldingProxy":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- pumping -------------------------------------------------------------
    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                cutting = self.cutting
            if cutting:
                client.close()
                continue
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                upstream.connect(self.upstream)
            except OSError:
                client.close()
                continue
            p = _Pair(client, upstream)
            with self.lock:
                self.pairs.append(p)
            threading.Thread(target=self._pump, args=(p, p.client, lambda d, p=p: self._to_server(p, d)),
                             daemon=True).start()
            threading.Thread(target=self._pump, args=(p, p.upstream, lambda d, p=p: self._to_client(p, d)),
                             daemon=True).start()

    def _pump(self, p: _Pair, source: socket.socket, forward) -> None:
        """Reads `source` until EOF or an error, handing each chunk to forward(); then shuts the pair."""
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                forward(data)
        except OSError:
            pass
        self._shut(p)

    def _to_server(self, p: _Pair, data: bytes) -> None:
        with p.lock:
            if len(p.sent) < 65536:
                p.sent += data[:65536 - len(p.sent)]
        with self.lock:
            if self.needle is not None and self.needle in data:
                self.needle = None
                with p.lock:
                    p.held = True
        p.upstream.sendall(data)

    def _to_client(self, p: _Pair, data: bytes) -> None:
        with p.lock:
            if p.held:
                p.buffer += data
                return
        p.client.sendall(data)

    def _shut(self, p: _Pair) -> None:
        for s in (p.client, p.upstream):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
