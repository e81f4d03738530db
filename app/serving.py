"""The HTTP server's side of a graceful shutdown: drain keep-alive connections, don't cut them.

On SIGTERM uvicorn stops listening, lets requests in flight finish (answering them with
``Connection: close``) and closes every *idle* keep-alive connection at once. "Idle"
only means no request has been parsed yet: a client that has just sent its next
request on that connection (the bytes in flight, or already in our socket buffer) has
it destroyed: closing a socket with unread data sends a reset, and the client cannot
tell whether its request ran. Under load that hit 2-8 requests per SIGTERM
(``python -m bench.sigterm``).

:class:`DrainingHttpToolsProtocol` closes an idle connection only after
``DRAIN_SECONDS`` without a request; a request that arrives meanwhile is served as
usual and answered with ``Connection: close``, which tells the client, in the answer
itself, that this connection is done (its next request opens a new one, refused at
once once nothing listens: unambiguous, safe to retry elsewhere). Busy clients, which
send within milliseconds of their last answer, thus never race the close. A client
idle for longer than the window can still send at the very moment the server closes;
that race is inherent to HTTP/1.1 keep-alive (either side may close an idle connection
at any time, RFC 9112 §9.5) and clients must retry idempotent requests that fail that
way (§9.3.1; README, "Failure modes").

Under gunicorn the listening socket is shared by every worker, and each closes its
copy when it handles SIGTERM, up to a tick (0.1 s) apart: a client whose connection was
just closed reconnects, the kernel queues the new connection on the socket that a
worker still holds but no longer accepts from, and closing that last copy resets it.
:class:`DrainingServer` therefore accepts whatever is queued before it closes its
listening sockets, and drains those connections like the others.

``housing-api serve`` uses the protocol for one worker (uvicorn, which closes its
listener before anything else, so a reconnecting client is refused at once) and, with
the server, through :class:`DrainingUvicornWorker` for gunicorn's workers.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from typing import Any

from gunicorn.arbiter import Arbiter
from uvicorn import Server
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn_worker import UvicornWorker

# Long enough for any client that is sending (it sends within milliseconds of its last
# answer), and longer than Nginx keeps an idle upstream connection (its upstream
# keepalive_timeout, 1 s), so behind Nginx the edge always closes first and never
# races us; short enough not to hold a shutdown: uvicorn waits for these connections.
DRAIN_SECONDS = 2.0


class DrainingHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing idle keep-alive connections gracefully."""

    draining = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        # Accepted just before the shutdown but set up after it had asked every
        # connection to close: drain this one too, or it would serve on, keep-alive.
        if getattr(self.server_state, "draining", False):
            self.shutdown()

    def shutdown(self) -> None:
        self.server_state.draining = True  # type: ignore[attr-defined]
        self.draining = True
        if self.cycle is None or self.cycle.response_complete:
            # Wait for a request that may be on its way; data_received cancels this
            # timer (it is the keep-alive timer's slot) and the request is answered.
            self._unset_keepalive_if_required()
            self.timeout_keep_alive_task = self.loop.call_later(DRAIN_SECONDS, self._close_idle)
        else:
            self.cycle.keep_alive = False

    def _close_idle(self) -> None:
        self.timeout_keep_alive_task = None
        if self.cycle is None or self.cycle.response_complete:
            self.transport.close()

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        if self.draining and self.cycle is not None:
            self.cycle.keep_alive = False  # answered with Connection: close, then closed


class DrainingServer(Server):
    """uvicorn's server, taking the connections already queued on its listening sockets
    before closing them (closing a socket resets the connections queued on it)."""

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self.server_state.draining = True  # type: ignore[attr-defined]
        while await self._accept_queued():
            pass
        # No await between the last empty pass and the close in super().shutdown().
        await super().shutdown(sockets)

    async def _accept_queued(self) -> int:
        """Accept every queued connection and register it (so the shutdown drains it);
        how many there were."""
        loop = asyncio.get_running_loop()
        accepted = []
        for server in self.servers:
            for listening in server.sockets:
                # A duplicate descriptor: closing it leaves the server's own open.
                listener = socket.socket(fileno=os.dup(listening.fileno()))
                try:
                    while True:
                        try:
                            connection, _ = listener.accept()
                        except OSError:  # BlockingIOError: the queue is empty
                            break
                        connection.setblocking(False)
                        accepted.append(connection)
                finally:
                    listener.close()
        await asyncio.gather(
            *(loop.connect_accepted_socket(self._new_protocol, c) for c in accepted)
        )
        return len(accepted)

    def _new_protocol(self) -> asyncio.Protocol:
        protocol: asyncio.Protocol = self.config.http_protocol_class(  # type: ignore[call-arg]
            config=self.config, server_state=self.server_state, app_state=self.lifespan.state
        )
        return protocol


class DrainingUvicornWorker(UvicornWorker):  # type: ignore[misc]  # untyped base
    """gunicorn's uvicorn worker with the draining protocol and server, and no
    ``Server`` header."""

    CONFIG_KWARGS: dict[str, Any] = {  # noqa: RUF012 - the base class's own shape
        "loop": "auto",
        "http": "app.serving:DrainingHttpToolsProtocol",
        # gunicorn has no setting for uvicorn's Server header: the software a service
        # runs is nobody's business (the single-process serve passes it to uvicorn).
        "server_header": False,
    }

    async def _serve(self) -> None:  # uvicorn_worker's, with DrainingServer
        self.config.app = self.wsgi
        server = DrainingServer(config=self.config)
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
