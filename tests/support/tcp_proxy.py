"""A TCP proxy in front of a real server, to play its outages in process, precisely.

``refuse()`` closes every connection and the listening socket (connection refused, as
a stopped server); ``hang()`` keeps every connection open and accepts new ones but
forwards nothing (as a server stopped with SIGSTOP: its kernel still accepts bytes);
``restore()`` goes back to forwarding. The fault suite (tests/faults/) stops and
freezes the real processes instead; this is for tests that need exact timing.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

from deploy.processes import HOST


class TcpProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = self._listen(0)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._forwarding = threading.Event()
        self._forwarding.set()
        self._closed = False
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def _listen(self, port: int) -> socket.socket:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((HOST, port))
        listener.listen(128)
        return listener

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # closed: refuse() or close()
                return
            try:
                upstream = socket.create_connection((HOST, self.target_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._sockets |= {client, upstream}
            for source, target in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                while not self._forwarding.wait(0.05):  # hung: hold the bytes
                    if self._closed:
                        return
                target.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def _drop_connections(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _stop_listening(self) -> None:
        # shutdown() wakes the thread blocked in accept(); close() alone would not.
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()

    def refuse(self) -> None:
        """Connection refused, and every open connection dropped."""
        self._stop_listening()
        self._drop_connections()

    def hang(self) -> None:
        """Connections accepted and kept, bytes never forwarded."""
        self._forwarding.clear()

    def restore(self) -> None:
        """Forward again; listen again (on the same port) after ``refuse()``."""
        if self._listener.fileno() == -1:
            deadline = time.monotonic() + 5
            while True:
                try:
                    self._listener = self._listen(self.port)
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()
        self._forwarding.set()

    def close(self) -> None:
        self._closed = True
        self._stop_listening()
        self._drop_connections()


@contextlib.contextmanager
def tcp_proxy(target_port: int) -> Iterator[TcpProxy]:
    proxy = TcpProxy(target_port)
    try:
        yield proxy
    finally:
        proxy.close()
