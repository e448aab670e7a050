"""The key never leaks from a stream either: every failure mode of test_secrets.py met by a
streamed request, and the failures only streams have (an error event or chunk echoing the key,
the connection breaking part-way with the key in the exception, a drip cut at the deadline),
searched the same way: the error and its chain, the traceback with its locals, the stream's
repr and vars, and every log line."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import pytest
import test_secrets as base  # the failure modes and the search of test_secrets.py

from llm_patterns import VirtualClock
from llm_patterns.errors import LLMError, StreamInterrupted

KEY = base.KEY


def chunk(api, text):
    if api == "openai":
        return ("data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": text},
                                                    "finish_reason": None}]}) + "\n\n").encode()
    return ("event: content_block_delta\ndata: " + json.dumps(
        {"type": "content_block_delta", "index": 0,
         "delta": {"type": "text_delta", "text": text}}) + "\n\n").encode()


def error_event(api, request):
    key = base._sent_key(request)
    if api == "openai":
        return ("data: " + json.dumps({"error": {"message": f"bad {key}", "type": "server_error",
                                                 "code": key}}) + "\n\n").encode()
    return ("event: error\ndata: " + json.dumps(
        {"type": "error", "error": {"type": "overloaded_error", "message": f"bad {key}"}})
        + "\n\n").encode()


class Breaks(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A few chunks, then the connection breaks with the request (and its key) in the error."""

    def __init__(self, chunks, request):
        self.chunks, self.request = chunks, request

    def __iter__(self):
        yield from self.chunks
        raise httpx.ReadError(f"connection reset after {base._sent_key(self.request)}",
                              request=self.request)

    async def __aiter__(self):
        for c in self.__iter__():
            yield c


SSE = {"content-type": "text/event-stream"}


def mid_stream(api, kind):
    def respond(request):
        head = [chunk(api, "Hello "), chunk(api, "there")]
        if kind == "error-event":
            return httpx.Response(200, headers=SSE,
                                  stream=base.Stream([*head, error_event(api, request)]))
        if kind == "broken-connection":
            return httpx.Response(200, headers=SSE, stream=Breaks(head, request))
        if kind == "bad-event":
            bad = f"data: {{not json {base._sent_key(request)}\n\n".encode()
            return httpx.Response(200, headers=SSE, stream=base.Stream([*head, bad]))
        raise AssertionError(kind)

    return respond


def read(p, mode):
    def sync():
        with p.stream("hello") as s:
            for _ in s:
                pass

    async def run_async():
        async with p.astream("hello") as s:
            async for _ in s:
                pass

    try:
        sync() if mode == "sync" else asyncio.run(run_async())
    except LLMError as error:
        return error
    raise AssertionError("expected an LLMError")


@pytest.mark.parametrize("api", base.APIS)
@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("case", sorted(base.FAILURES))
def test_no_failure_of_a_stream_request_leaks_the_key(api, mode, case, caplog):
    caplog.set_level(logging.DEBUG)
    p = base.make(api, base.FAILURES[case])
    error = read(p, mode)
    assert error.provider == "p"
    base.assert_clean([*base.texts_of(error), repr(vars(p)), repr(p), caplog.text])


@pytest.mark.parametrize("api", base.APIS)
@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("kind", ["error-event", "broken-connection", "bad-event"])
def test_a_stream_failing_part_way_does_not_leak(api, mode, kind, caplog):
    caplog.set_level(logging.DEBUG)
    p = base.make(api, mid_stream(api, kind))
    error = read(p, mode)
    assert isinstance(error, StreamInterrupted) and error.partial_text == "Hello there"
    base.assert_clean([*base.texts_of(error), repr(error), str(error.cause), caplog.text])


def test_a_drip_cut_at_the_deadline_does_not_leak(caplog):
    caplog.set_level(logging.DEBUG)
    clock = VirtualClock()

    def respond(request):
        drip = [chunk("openai", "Hi")] + [base._sent_key(request).encode()[:1]] * 50
        return httpx.Response(200, headers=SSE, stream=base.Stream(drip, clock, gap=1.0))

    p = base.make("openai", respond, clock=clock, timeout=httpx.Timeout(10.0, read=5.0))
    error = read(p, "sync")
    assert isinstance(error, StreamInterrupted)
    base.assert_clean([*base.texts_of(error), caplog.text])
