"""The mock as a real HTTP server on 127.0.0.1, for clients that cannot take an httpx transport
(the official SDKs, curl, a browser demo), built to survive abusive clients.

One asyncio event loop in one thread serves every connection (``h11`` parses HTTP/1.1); each
request becomes an ``httpx.Request`` and goes through ``MockLLMServer.ahandle``, the same code
as in process, so the two paths answer alike. What bounds it:

- **connections** cost a coroutine, not a thread: at most ``max_connections`` are open (more are
  closed at once), and one that sends no complete request head within ``read_timeout`` seconds
  (a stalled or slow client, an idle keep-alive) is closed;
- **work**: at most ``workers`` requests are read and answered at once (the worker pool); the
  others wait with their bodies unread;
- **memory**: a body above the mock's ``max_body_bytes`` is answered 413 from its
  Content-Length before a byte of it is read (a chunked one as soon as it passes the limit);
  request heads are limited to ``max_header_bytes``;
- the listen **backlog** is ``backlog`` (1024; the kernel may cap it at ``somaxconn``).

Unparseable HTTP gets a plain 400 (431 for a head too large); an unparseable or too deeply
nested JSON body gets the API's own 400; a wrong content type 415 (both decided by the mock).
A ``timeout`` fault hangs up without answering after the server's ``timeout_after`` (or the
latency); a ``stream_drop`` fault closes the connection mid-body.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import threading
from collections.abc import Iterator
from http import HTTPStatus
from typing import Any

import h11
import httpx

from .._validate import integer, real
from .server import MockLLMServer
from .stream import EventStream

__all__ = ["MockHTTPServer", "make_server", "running", "serve"]

logger = logging.getLogger("llm_patterns.mock")

HOST = "127.0.0.1"
_SKIP_HEADERS = {"content-length", "transfer-encoding", "connection", "keep-alive"}
_READ_SIZE = 64 * 1024
_LINGER = 1.0  # seconds spent discarding an unread body after a 413, so the client reads it


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b""


class _Closed(Exception):
    """The client went away (or never finished its request): drop the connection quietly."""


class MockHTTPServer:
    """The loopback server: ``serve_forever()`` in one thread, ``shutdown()`` from another."""

    def __init__(self, mock: MockLLMServer, port: int = 0, *, workers: int = 64,
                 max_connections: int = 1024, read_timeout: float = 10.0, backlog: int = 1024,
                 max_header_bytes: int = 64 * 1024) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(
                f"port must be an integer in 0..65535 (0: any free port), got {port!r}"
            )
        self.mock = mock
        self.workers = integer("workers", workers, minimum=1)
        self.max_connections = integer("max_connections", max_connections, minimum=1)
        self.read_timeout = real("read_timeout", read_timeout, minimum=0, strict_min=True)
        self.backlog = integer("backlog", backlog, minimum=128)
        self.max_header_bytes = integer("max_header_bytes", max_header_bytes, minimum=1024)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((HOST, port))
            sock.listen(self.backlog)
        except OSError as exc:
            sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise OSError(
                    exc.errno,
                    f"port {port} on {HOST} is already in use; pick another with --port "
                    "(or 0 for any free port)",
                ) from exc
            raise
        sock.setblocking(False)
        self._sock: socket.socket | None = sock
        host, bound = sock.getsockname()[:2]
        self.server_address = (str(host), int(bound))
        self.server_port = int(bound)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._done = threading.Event()
        self._started = threading.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._counts = {"connections_total": 0, "connections_refused": 0, "read_timeouts": 0,
                        "too_large": 0, "bad_http": 0, "requests": 0}
        self._busy = 0

    @property
    def url(self) -> str:
        """The root URL, e.g. ``http://127.0.0.1:8080`` (OpenAI clients append ``/v1``)."""
        return f"http://{HOST}:{self.server_port}"

    @property
    def stats(self) -> dict[str, int]:
        """Connections open / seen / refused, read timeouts, 413s, bad HTTP, requests, busy
        workers (a snapshot)."""
        return {**self._counts, "connections_open": len(self._tasks), "workers_busy": self._busy}

    # ------------------------------------------------------------------ lifecycle

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        """Serve until ``shutdown()`` (``poll_interval`` is accepted for compatibility)."""
        if self._sock is None:
            raise RuntimeError("the server is closed")
        self._done.clear()
        try:
            asyncio.run(self._main())
        finally:
            self._done.set()

    def shutdown(self) -> None:
        """Stop ``serve_forever`` (from another thread) and wait until it has returned."""
        if not self._done.is_set():
            self._started.wait(timeout=10)
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(stop.set)
            self._done.wait(timeout=10)

    def stop_soon(self) -> None:
        """Ask ``serve_forever`` to return, without waiting (safe from a signal handler)."""
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)

    def server_close(self) -> None:
        """Close the listening socket."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    async def _main(self) -> None:
        assert self._sock is not None
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._workers = asyncio.Semaphore(self.workers)
        # asyncio calls listen() again on the socket: pass the backlog, or it falls to 100
        server = await asyncio.start_server(self._accept, sock=self._sock, backlog=self.backlog,
                                            limit=self.max_header_bytes)
        self._started.set()
        try:
            await self._stop.wait()
        finally:
            server.close()
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            self._sock = None  # closed with the asyncio server
            self._loop = None
            self._started.clear()

    # ------------------------------------------------------------------ connections

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._counts["connections_total"] += 1
        if len(self._tasks) >= self.max_connections:
            self._counts["connections_refused"] += 1
            logger.warning("mock HTTP server: %d connections open (max_connections): closing a "
                           "new one (%d refused so far)", len(self._tasks),
                           self._counts["connections_refused"])
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._connection(reader, writer)
        except (_Closed, ConnectionError, h11.ProtocolError, asyncio.CancelledError):
            pass  # the client went away, stalled, or broke HTTP mid-request: just close
        except Exception:  # a bug in the mock must not kill the server
            logger.exception("mock HTTP server: connection failed")
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _read(self, conn: h11.Connection, reader: asyncio.StreamReader,
                    per_read: float, deadline: float | None = None,
                    size: int = _READ_SIZE) -> Any:
        """The next h11 event, reading ``size`` bytes at a time as needed; each read waits at
        most ``per_read`` seconds (and never past ``deadline``); ``_Closed`` when the client is
        gone or too slow."""
        loop = asyncio.get_running_loop()
        while True:
            event = conn.next_event()  # h11 refuses (431) a head past max_header_bytes
            if event is not h11.NEED_DATA:
                return event
            wait = per_read if deadline is None else min(per_read, deadline - loop.time())
            if wait <= 0:
                self._counts["read_timeouts"] += 1
                raise _Closed
            try:
                data = await asyncio.wait_for(reader.read(size), wait)
            except TimeoutError:
                self._counts["read_timeouts"] += 1
                logger.debug("mock HTTP server: no complete request within %.1f s: closing "
                             "(%d read timeouts so far)", self.read_timeout,
                             self._counts["read_timeouts"])
                raise _Closed from None
            conn.receive_data(data)
            if not data and conn.their_state is h11.IDLE:
                raise _Closed

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.max_header_bytes)
        loop = asyncio.get_running_loop()
        while True:
            deadline = loop.time() + self.read_timeout  # the whole request head, idle included
            try:
                event = await self._head(conn, reader, deadline)
            except h11.RemoteProtocolError as exc:
                self._counts["bad_http"] += 1
                await self._plain(writer, exc.error_status_hint, f"bad HTTP request: {exc}")
                return
            if not isinstance(event, h11.Request):
                return
            self._counts["requests"] += 1
            keep = await self._request(conn, reader, writer, event)
            if not keep or conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                return
            conn.start_next_cycle()

    async def _head(self, conn: h11.Connection, reader: asyncio.StreamReader,
                    deadline: float) -> Any:
        """The request head, whole before ``deadline``; read in quarters of the head limit so
        h11's limit holds to within a quarter (a head is never buffered much past it)."""
        return await self._read(conn, reader, self.read_timeout, deadline,
                                size=max(256, self.max_header_bytes // 4))

    async def _request(self, conn: h11.Connection, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter, head: h11.Request) -> bool:
        """Read, answer and write one request; False when the connection must close."""
        method = head.method.decode("ascii", "replace")
        target = head.target.decode("latin-1")
        path = target.split("?", 1)[0]
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in head.headers]
        declared = next((v for k, v in headers if k == "content-length"), None)
        limit = self.mock.max_body_bytes
        if declared is not None and int(declared) > limit:
            await self._too_large(conn, reader, writer, method, path, int(declared))
            return False
        async with self._workers:
            self._busy += 1
            try:
                if conn.they_are_waiting_for_100_continue:  # curl's Expect: 100-continue
                    writer.write(conn.send(h11.InformationalResponse(
                        status_code=100, headers=[], reason=b"Continue")))
                body = bytearray()
                while True:
                    event = await self._read(conn, reader, self.read_timeout)
                    if isinstance(event, h11.EndOfMessage):
                        break
                    if isinstance(event, h11.ConnectionClosed):
                        raise _Closed
                    body += event.data
                    if len(body) > limit:  # a chunked body past the limit
                        await self._too_large(conn, reader, writer, method, path, len(body))
                        return False
                request = httpx.Request(
                    method, f"http://{HOST}:{self.server_port}{target}",
                    headers=[(k, v) for k, v in headers if k not in _SKIP_HEADERS],
                    content=bytes(body),
                )
                del body
                try:
                    response = await self.mock.ahandle(request)
                except (httpx.TimeoutException, httpx.RemoteProtocolError):
                    return False  # no answer: hang up, as a provider that times out
                return await self._respond(conn, writer, response)
            finally:
                self._busy -= 1

    async def _respond(self, conn: h11.Connection, writer: asyncio.StreamWriter,
                       response: httpx.Response) -> bool:
        items = [(k, v) for k, v in response.headers.multi_items()
                 if k.lower() not in _SKIP_HEADERS]
        streamed = isinstance(response.stream, EventStream)
        if not streamed:
            items.append(("content-length", str(len(response.content))))
        writer.write(conn.send(h11.Response(status_code=response.status_code, headers=items,
                                              reason=_reason(response.status_code))))
        if streamed:
            try:
                async for chunk in response.aiter_raw():
                    writer.write(conn.send(h11.Data(data=chunk)))
                    await writer.drain()
            except httpx.RemoteProtocolError:  # a stream_drop fault: cut the body short
                await writer.drain()
                return False
        elif response.content:
            writer.write(conn.send(h11.Data(data=response.content)))
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()
        return True

    async def _too_large(self, conn: h11.Connection, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter, method: str, path: str,
                         length: int) -> None:
        self._counts["too_large"] += 1
        logger.info("mock HTTP server: %s %s with a %d-byte body over max_body_bytes=%d: 413, "
                    "body not read", method, path, length, self.mock.max_body_bytes)
        plan = self.mock.refuse_oversized(method, path, length)
        self.mock.settle(plan)
        content = plan.content()
        items = [(k, v) for k, v in plan.headers.items() if k.lower() not in _SKIP_HEADERS]
        items += [("content-length", str(len(content))), ("connection", "close")]
        assert plan.status is not None
        writer.write(conn.send(h11.Response(status_code=plan.status, headers=items,
                                              reason=_reason(plan.status))))
        writer.write(conn.send(h11.Data(data=content)))
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()
        # lingering close: discard (never keep) what the client still sends, for a moment, so
        # it reads the 413 instead of failing to write its body into a closed socket
        loop = asyncio.get_running_loop()
        until = loop.time() + _LINGER
        with contextlib.suppress(asyncio.TimeoutError, ConnectionError):
            while loop.time() < until:
                if not await asyncio.wait_for(reader.read(_READ_SIZE), until - loop.time()):
                    break

    async def _plain(self, writer: asyncio.StreamWriter, status: int, text: str) -> None:
        body = (text + "\n").encode("utf-8", "replace")
        reason = {400: "Bad Request", 431: "Request Header Fields Too Large"}.get(status, "Error")
        writer.write(f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
                     f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
                     + body)
        with contextlib.suppress(ConnectionError):
            await writer.drain()


def make_server(mock: MockLLMServer, port: int = 0, **options: Any) -> MockHTTPServer:
    """Bind (but do not start) a real HTTP server for ``mock`` on 127.0.0.1:``port``."""
    return MockHTTPServer(mock, port, **options)


def serve(mock: MockLLMServer, port: int = 0,
          **options: Any) -> tuple[MockHTTPServer, threading.Thread]:
    """Serve ``mock`` on 127.0.0.1 in a daemon thread; the bound port is ``httpd.server_port``.

    Stop it with ``httpd.shutdown(); httpd.server_close()`` (or use ``running``).
    """
    httpd = make_server(mock, port, **options)
    thread = threading.Thread(target=httpd.serve_forever, name=f"mock-http-{httpd.server_port}",
                              daemon=True)
    thread.start()
    logger.info("serving %s (%s API) on %s", mock.name, mock.api, httpd.url)
    return httpd, thread


@contextlib.contextmanager
def running(mock: MockLLMServer, port: int = 0, **options: Any) -> Iterator[str]:
    """``with running(mock) as url:`` serves on 127.0.0.1 and yields the root URL."""
    httpd, thread = serve(mock, port, **options)
    try:
        yield httpd.url
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
