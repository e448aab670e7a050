"""The API key never reaches anything a traceback, an error reporter or a log follows.

For every failure mode of both providers (error statuses with the key echoed in the body and a
header, transport errors quoting it, malformed 200s holding it, a refusal quoting it, bodies over
the cap, broken gzip, the deadline), the error and everything chained to it (``__cause__``,
``__context__``, their ``vars()``, ``args``, any ``request``/``response`` and its headers, a
``JSONDecodeError.doc``), its traceback rendered with ``capture_locals=True``, ``vars()`` of
the provider, and every log line (httpx and httpcore at DEBUG over a real loopback socket) are
searched for the key.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import traceback
from collections.abc import Callable

import httpx
import pytest

from llm_patterns import VirtualClock
from llm_patterns._secret import Secret
from llm_patterns.errors import LLMError
from llm_patterns.providers import AnthropicProvider, OpenAIProvider

KEY = "sk-ant-api03-LEAKCANARY0123456789abcdefghijklmnopqrstuvwxyz"
PREFIX = KEY[:24]  # not even the recognisable start of it
APIS = ["openai", "anthropic"]


def _sent_key(request: httpx.Request) -> str:
    return request.headers.get("x-api-key") or request.headers.get("authorization", "")


def _error_json(request):
    key = _sent_key(request)
    return {"type": "error", "error": {"type": "invalid_request_error",
                                       "message": f"bad key {key}", "code": key}}


class Stream(httpx.SyncByteStream, httpx.AsyncByteStream):
    def __init__(self, chunks, clock=None, gap=0.0):
        self.chunks, self.clock, self.gap = chunks, clock, gap

    def __iter__(self):
        for c in self.chunks:
            if self.clock:
                self.clock.advance(self.gap)
            yield c

    async def __aiter__(self):
        for c in self:
            yield c


def _status(status):
    return lambda request: httpx.Response(status, json=_error_json(request),
                                          headers={"x-echo": _sent_key(request)})


def _raises(exc_type):
    def respond(request):
        raise exc_type(f"failed sending {_sent_key(request)}", request=request)

    return respond


def _body(content: bytes | Callable, **headers):
    def respond(request):
        data = content(request) if callable(content) else content
        return httpx.Response(200, stream=Stream([data]), headers=headers)

    return respond


FAILURES: dict[str, Callable] = {
    **{f"status-{s}": _status(s) for s in
       (301, 400, 401, 402, 403, 404, 408, 409, 413, 422, 429, 500, 503, 529)},
    **{f"transport-{e.__name__}": _raises(e) for e in
       (httpx.ConnectError, httpx.ConnectTimeout, httpx.ReadTimeout, httpx.WriteTimeout,
        httpx.PoolTimeout, httpx.ReadError, httpx.RemoteProtocolError,
        httpx.LocalProtocolError)},
    "html-200": _body(lambda r: f"<html>{_sent_key(r)}</html>".encode()),
    "truncated-json-200": _body(lambda r: f'{{"choices": "{_sent_key(r)}'.encode()),
    "error-json-200": _body(lambda r: json.dumps(_error_json(r)).encode()),
    "wrong-shape-200": _body(lambda r: json.dumps({"choices": [{"message": {
        "content": 5}}], "content": _sent_key(r), "usage": {}}).encode()),
    "over-the-cap": _body(lambda r: (f'{{"x": "{_sent_key(r)}' + "y" * 5000).encode()),
    "broken-gzip": _body(lambda r: _sent_key(r).encode(), **{"content-encoding": "gzip"}),
}


def make(api, handler, **kw):
    cls = OpenAIProvider if api == "openai" else AnthropicProvider
    transport = httpx.MockTransport(handler)
    return cls("p", "m", api_key=KEY, client=httpx.Client(transport=transport),
               async_client=httpx.AsyncClient(transport=transport),
               max_response_bytes=2048, **kw)


def failure(fn: Callable[[], object]) -> LLMError:
    try:
        fn()
    except LLMError as error:
        return error
    raise AssertionError("expected an LLMError")


def texts_of(error: BaseException) -> list[str]:
    """Everything an error reporter could show about ``error`` and its chain."""
    out = ["".join(traceback.TracebackException(
        type(error), error, error.__traceback__, capture_locals=True).format())]
    out += traceback.format_exception(error)
    seen: set[int] = set()
    stack: list[BaseException | None] = [error]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        out += [str(e), repr(e), repr(e.args), repr(getattr(e, "__dict__", {})),
                str(getattr(e, "doc", ""))]
        for attr in ("request", "response"):
            try:
                value = getattr(e, attr)
            except Exception:
                continue
            out += [repr(value), repr(getattr(value, "headers", "")),
                    repr(list(getattr(getattr(value, "headers", None), "raw", [])))]
        stack += [e.__cause__, e.__context__]
    return out


def assert_clean(texts: list[str]) -> None:
    joined = "\n".join(texts)
    assert KEY not in joined
    assert PREFIX not in joined


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("case", sorted(FAILURES))
def test_no_failure_mode_leaks_the_key(api, mode, case, caplog):
    caplog.set_level(logging.DEBUG)
    p = make(api, FAILURES[case])
    if mode == "sync":
        error = failure(lambda: p.complete("hello"))
    else:
        error = failure(lambda: asyncio.run(p.acomplete("hello")))
    assert error.provider == "p"
    assert_clean([*texts_of(error), repr(vars(p)), repr(p), caplog.text])


@pytest.mark.parametrize("api", APIS)
def test_deadline_and_refusal_do_not_leak(api, caplog):
    caplog.set_level(logging.DEBUG)
    clock = VirtualClock()
    slow = make(api, lambda r: httpx.Response(200, stream=Stream(
        [_sent_key(r).encode()] * 100, clock=clock, gap=0.5)), clock=clock, timeout=1.0)
    refusal = {"choices": [{"message": {"content": None, "refusal": "no"},
                            "finish_reason": "stop"}], "usage": {}}

    def refuse(request):
        refusal["choices"][0]["message"]["refusal"] = f"no, {_sent_key(request)}"
        return httpx.Response(200, json=refusal)

    errors = [failure(lambda: slow.complete("x"))]
    if api == "openai":
        errors.append(failure(lambda: make(api, refuse).complete("x")))
    for error in errors:
        assert_clean([*texts_of(error), caplog.text])


@pytest.mark.parametrize("api", APIS)
def test_vars_and_repr_of_a_provider_and_its_secret(api):
    p = make(api, _status(200))
    assert_clean([repr(vars(p)), repr(p), str(p), repr(p._key), str(p._key),
                  repr(vars(p._key)), f"{p._key}", f"{p._key!r}"])
    assert vars(p._key) == {"value": "***"}
    with pytest.raises(TypeError, match="pickle"):
        import pickle

        pickle.dumps(p._key)


def test_credentials_in_base_url_never_shown():
    seen = []

    def handler(request):
        seen.append((str(request.url), request.headers.get("authorization")))
        return httpx.Response(500, json={"error": {"message": f"upstream {request.url}"}})

    p = OpenAIProvider("p", "m", api_key=KEY,
                       base_url="https://gwuser:GATEWAYPASSWORD123@gw.example/v1?key=QUERYKEY9876",
                       client=httpx.Client(transport=httpx.MockTransport(handler)))
    assert p.base_url == "https://gwuser:***@gw.example/v1?key=***"
    error = failure(lambda: p.complete("x"))
    assert seen[0][0] == ("https://gwuser:GATEWAYPASSWORD123@gw.example/v1/chat/completions"
                          "?key=QUERYKEY9876")  # sent as given, the path before the query
    joined = "\n".join([*texts_of(error), repr(p), repr(vars(p))])
    assert "GATEWAYPASSWORD123" not in joined and "QUERYKEY9876" not in joined


def test_a_secret_is_a_small_opaque_type():
    s = Secret("value-that-must-not-show")
    assert (repr(s), str(s), f"{s}", vars(s)) == ("Secret('***')", "***", "***",
                                                 {"value": "***"})
    assert s.reveal() == "value-that-must-not-show"
    with pytest.raises(TypeError):
        Secret(b"bytes")  # type: ignore[arg-type]


# -- real sockets: httpx's and httpcore's own log lines --------------------------------------------
def _echo_server(stop: threading.Event) -> tuple[socket.socket, threading.Thread]:
    """Answers each request with 401 and a header echoing the key it was sent."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)

    def serve():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                data = conn.recv(65536).decode("latin-1")
                key = next((line.split(":", 1)[1].strip() for line in data.split("\r\n")
                            if line.lower().startswith(("x-api-key:", "authorization:"))), "")
                body = json.dumps({"error": {"message": f"invalid key {key}"}}).encode()
                conn.sendall(b"HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\n"
                             b"x-echo: " + key.encode() + b"\r\n"
                             b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body) + body)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return server, thread


@pytest.mark.parametrize("api", APIS)
def test_httpcore_debug_log_and_real_errors_do_not_leak(api, caplog):
    caplog.set_level(logging.DEBUG)
    stop = threading.Event()
    server, thread = _echo_server(stop)
    port = server.getsockname()[1]
    cls = OpenAIProvider if api == "openai" else AnthropicProvider
    base = f"http://127.0.0.1:{port}" + ("/v1" if api == "openai" else "")
    try:
        with cls("p", "m", base_url=base, api_key=KEY, timeout=5.0) as p:
            echoed = failure(lambda: p.complete("x"))

            async def run():
                async with cls("p", "m", base_url=base, api_key=KEY, timeout=5.0) as q:
                    return await _afailure(q)

            aechoed = asyncio.run(run())
    finally:
        stop.set()
        server.close()
        thread.join(5)
    # a refused connection: a real httpx/httpcore exception chain
    closed = socket.create_server(("127.0.0.1", 0))
    free_port = closed.getsockname()[1]
    closed.close()
    with cls("p", "m", base_url=f"http://127.0.0.1:{free_port}", api_key=KEY, timeout=5.0) as p:
        refused = failure(lambda: p.complete("x"))
    echo_lines = [r.getMessage() for r in caplog.records
                  if r.name.startswith("httpcore") and "x-echo" in r.getMessage()]
    assert echo_lines and all("***" in line for line in echo_lines)  # logged, and scrubbed
    assert echoed.status_code == 401 and aechoed.status_code == 401
    assert type(refused).__name__ == "ConnectionFailed"
    assert_clean(texts_of(echoed) + texts_of(aechoed) + texts_of(refused) + [caplog.text])


async def _afailure(provider) -> LLMError:
    try:
        await provider.acomplete("x")
    except LLMError as error:
        return error
    raise AssertionError("expected an LLMError")
