"""The mock as a real HTTP server on 127.0.0.1, for clients that cannot take an httpx transport
(the official SDKs in another process, curl, a browser demo).

Standard library only (``http.server.ThreadingHTTPServer``): each raw request becomes an
``httpx.Request``, goes through ``MockLLMServer.handle`` (the same code as in process), and the
``httpx.Response`` is written back. A ``timeout`` fault hangs up without answering, after the
server's ``timeout_after`` (or its latency), so the client sees the connection drop.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socketserver
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from .server import MockLLMServer

__all__ = ["MockHTTPServer", "make_server", "running", "serve"]

logger = logging.getLogger("llm_patterns.mock")

HOST = "127.0.0.1"
_SKIP_HEADERS = {"content-length", "transfer-encoding", "connection", "keep-alive"}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the SDKs' connection pools expect
    server: MockHTTPServer

    def _dispatch(self) -> None:
        if "chunked" in (self.headers.get("transfer-encoding") or "").lower():
            self._write(411, {"content-type": "text/plain"}, b"send a Content-Length\n")
            return
        try:
            length = int(self.headers.get("content-length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self._write(400, {"content-type": "text/plain"}, b"bad Content-Length\n")
            return
        content = self.rfile.read(length) if length else b""
        request = httpx.Request(
            self.command,
            f"http://{HOST}:{self.server.server_port}{self.path}",
            headers=[(k, v) for k, v in self.headers.items() if k.lower() not in _SKIP_HEADERS],
            content=content,
        )
        try:
            response = self.server.mock.handle(request)
        except httpx.TimeoutException:
            # hang up without an answer: what a client sees when the provider times out
            self.close_connection = True
            return
        except Exception:  # a bug in the mock must not kill the serving thread silently
            logger.exception("mock failed on %s %s", self.command, self.path)
            self._write(500, {"content-type": "text/plain"}, b"mock server crashed\n")
            return
        self._write(response.status_code, response.headers.multi_items(), response.content)

    do_POST = do_GET = do_PUT = do_PATCH = do_DELETE = _dispatch

    def _write(self, status: int, headers, body: bytes) -> None:
        items = headers.items() if isinstance(headers, dict) else headers
        self.send_response(status)
        for key, value in items:
            if key.lower() not in _SKIP_HEADERS:
                self.send_header(key, value)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        logger.debug("%s %s", self.address_string(), format % args)


class MockHTTPServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer bound to 127.0.0.1 that answers with ``mock``."""

    daemon_threads = True

    def __init__(self, mock: MockLLMServer, port: int = 0) -> None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(
                f"port must be an integer in 0..65535 (0: any free port), got {port!r}"
            )
        self.mock = mock
        try:
            super().__init__((HOST, port), _Handler)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise OSError(
                    exc.errno,
                    f"port {port} on {HOST} is already in use; pick another with --port "
                    "(or 0 for any free port)",
                ) from exc
            raise

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse-DNS lookup (getfqdn) that can stall; skip it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    @property
    def url(self) -> str:
        """The root URL, e.g. ``http://127.0.0.1:8080`` (OpenAI clients append ``/v1``)."""
        return f"http://{HOST}:{self.server_port}"


def make_server(mock: MockLLMServer, port: int = 0) -> MockHTTPServer:
    """Bind (but do not start) a real HTTP server for ``mock`` on 127.0.0.1:``port``."""
    return MockHTTPServer(mock, port)


def serve(mock: MockLLMServer, port: int = 0) -> tuple[MockHTTPServer, threading.Thread]:
    """Serve ``mock`` on 127.0.0.1 in a daemon thread; the bound port is ``httpd.server_port``.

    Stop it with ``httpd.shutdown(); httpd.server_close()`` (or use ``running``).
    """
    httpd = make_server(mock, port)
    thread = threading.Thread(
        target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
        name=f"mock-http-{httpd.server_port}", daemon=True,
    )
    thread.start()
    logger.info("serving %s (%s API) on %s", mock.name, mock.api, httpd.url)
    return httpd, thread


@contextlib.contextmanager
def running(mock: MockLLMServer, port: int = 0) -> Iterator[str]:
    """``with running(mock) as url:`` serves on 127.0.0.1 and yields the root URL."""
    httpd, thread = serve(mock, port)
    try:
        yield httpd.url
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
