"""Provider streams (SPEC §10): OpenAIProvider / AnthropicProvider / the mock's DirectProvider,
sync and async, against the mock's server-sent events on the VirtualClock, and against hand-made
streams for what the mock does not send (stalls, drips, odd line endings, no usage)."""

from __future__ import annotations

import asyncio
import gc
import json
import logging

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llm_patterns.clock import VirtualClock
from llm_patterns.errors import (
    ConnectionFailed,
    ContentFilterError,
    MalformedResponse,
    ProviderTimeout,
    RateLimitError,
    ServerError,
    StreamInterrupted,
    is_outage,
    is_retryable,
    stops_chain,
)
from llm_patterns.mock import MockLLMServer
from llm_patterns.providers import AnthropicProvider, OpenAIProvider, SSEDecoder
from llm_patterns.response import ToolCall, Usage

KEY = "sk-proj-STREAMKEYabcdefghijklmnopqrstuvwxyz0123456789"
PROMPT = "Explain in plain words why retries need jitter and a budget"
MODELS = {"openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5"}
TOOLS = [{"type": "function", "function": {
    "name": "forecast", "description": "Weather forecast",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                    "days": {"type": "integer"}},
                   "required": ["city", "days"]}}}]
APIS = ("openai", "anthropic")


def server(api, **kw):
    kw.setdefault("clock", VirtualClock())
    kw.setdefault("latency", 0.25)
    kw.setdefault("chunk_delay", 0.1)
    return MockLLMServer(api=api, **kw)


def http_provider(srv, name="p", **kw):
    cls = OpenAIProvider if srv.api == "openai" else AnthropicProvider
    return cls(name, MODELS[srv.api], base_url=srv.base_url, api_key=KEY, client=srv.client(),
               async_client=srv.async_client(), clock=srv.clock, **kw)


def providers(srv):
    """The HTTP provider over the in-process transport, and the direct provider."""
    return [http_provider(srv), srv.provider("p", MODELS[srv.api])]


def read(stream):
    with stream as s:
        return list(s), s


async def aread(opening):
    async with opening as s:
        return [d async for d in s], s


# -- a whole stream ------------------------------------------------------------------------------
@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("path", ["http", "direct"])
def test_a_stream_is_the_completion_in_pieces_paced_on_the_clock(api, path):
    srv = server(api)
    p = providers(srv)[path == "direct"]
    whole = p.complete(PROMPT, max_tokens=100)
    clock = srv.clock
    start = clock.now()
    times = []
    with p.stream(PROMPT, max_tokens=100) as s:
        deltas = []
        for delta in s:
            deltas.append(delta)
            times.append(round(clock.now() - start, 6))
    r = s.response
    assert len(deltas) > 3 and "".join(deltas) == whole.text == r.text
    assert r.usage == whole.usage and r.finish_reason == "stop" == whole.finish_reason
    assert r.provider == "p" and r.model == MODELS[api] and r.tool_calls == ()
    # the first delta after the latency, then one every chunk_delay, on the virtual clock
    assert times[0] == 0.25 and times[1] == pytest.approx(0.35)
    assert r.latency_s == pytest.approx(0.25 + 0.1 * (len(deltas) - 1))


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("path", ["http", "direct"])
def test_async_streams_read_the_same_deltas(api, path):
    srv = server(api)
    p = providers(srv)[path == "direct"]
    deltas, sync_stream = read(p.stream(PROMPT, max_tokens=60))
    adeltas, s = asyncio.run(aread(p.astream(PROMPT, max_tokens=60)))
    assert adeltas == deltas and s.response.usage == sync_stream.response.usage


def test_async_streams_overlap_in_virtual_time():
    srv = server("anthropic")
    p = srv.provider("p")

    async def both():
        return await asyncio.gather(aread(p.astream(PROMPT)), aread(p.astream(PROMPT + "!")))

    start = srv.clock.now()
    (a, _), (b, _) = asyncio.run(both())
    longest = max(len(a), len(b))
    assert srv.clock.now() - start == pytest.approx(0.25 + 0.1 * (longest - 1))


def test_the_request_asks_for_a_stream_and_for_usage():
    seen = []
    for api in APIS:
        srv = server(api)
        inner = srv.transport

        def record(request, inner=inner):
            seen.append(json.loads(request.content))
            return inner.handle_request(request)

        transport = httpx.MockTransport(record)
        cls = OpenAIProvider if api == "openai" else AnthropicProvider
        p = cls("p", MODELS[api], base_url=srv.base_url, api_key=KEY,
                client=httpx.Client(transport=transport), clock=srv.clock)
        read(p.stream(PROMPT))
    openai_body, anthropic_body = seen
    assert openai_body["stream"] is True
    assert openai_body["stream_options"] == {"include_usage": True}
    assert anthropic_body["stream"] is True and "stream_options" not in anthropic_body


def test_stream_and_stream_options_are_not_request_fields():
    p = providers(server("openai"))[0]
    for field in ({"stream": True}, {"stream_options": {"include_usage": False}}):
        with pytest.raises(ValueError, match="stream"):
            p.complete(PROMPT, **field)
        with pytest.raises(ValueError, match="stream"):
            p.stream(PROMPT, **field)


# -- tool calls ------------------------------------------------------------------------------------
@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("path", ["http", "direct"])
def test_streamed_tool_calls_are_assembled(api, path):
    srv = server(api)
    p = providers(srv)[path == "direct"]
    whole = p.complete("Weather in Paris for 3 days?", tools=TOOLS, tool_choice="required")
    deltas, s = read(p.stream("Weather in Paris for 3 days?", tools=TOOLS,
                              tool_choice="required"))
    (call,) = s.response.tool_calls
    assert isinstance(call, ToolCall) and call.name == "forecast"
    assert set(call.arguments) == {"city", "days"} and isinstance(call.arguments["days"], int)
    assert s.response.tool_calls == whole.tool_calls
    assert s.response.finish_reason == "tool_calls" == whole.finish_reason
    assert deltas == [] and s.response.text == ""
    assert call.id.startswith("call_" if api == "openai" else "toolu_")


def test_anthropic_text_before_a_tool_call_is_streamed_then_the_call():
    srv = server("anthropic")
    deltas, s = read(srv.provider("p").stream("Weather in Paris?", tools=TOOLS))
    assert "".join(deltas) == s.response.text and "forecast" in s.response.text
    assert [c.name for c in s.response.tool_calls] == ["forecast"]


# -- failures before the first delta: raised as themselves, at open ------------------------------
@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("path", ["http", "direct"])
@pytest.mark.parametrize("kind,cls", [("overloaded", ServerError), ("rate_limit", RateLimitError),
                                      ("timeout", ProviderTimeout)])
def test_a_failure_before_the_first_delta_raises_at_open_and_is_retryable(api, path, kind, cls):
    srv = server(api)
    p = providers(srv)[path == "direct"]
    srv.fail_next(kind)
    with pytest.raises(cls) as info:
        p.stream(PROMPT)
    assert not isinstance(info.value, StreamInterrupted)
    assert is_retryable(info.value) and info.value.provider == "p"
    assert KEY not in repr(info.value) and KEY not in str(info.value)
    deltas, _ = read(p.stream(PROMPT))  # the next one streams
    assert deltas


@pytest.mark.parametrize("api", APIS)
def test_async_failure_before_the_first_delta_raises_at_open(api):
    srv = server(api)
    srv.fail_next("overloaded")
    with pytest.raises(ServerError):
        asyncio.run(aread(srv.provider("p").astream(PROMPT)))


# -- failures after it: StreamInterrupted ---------------------------------------------------------
@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("path", ["http", "direct"])
@pytest.mark.parametrize("kind,cause", [("stream_error", ServerError),
                                        ("stream_drop", ConnectionFailed)])
def test_a_failure_after_text_arrived_is_a_stream_interruption(api, path, kind, cause):
    srv = server(api)
    p = providers(srv)[path == "direct"]
    whole = p.complete(PROMPT).text
    srv.fail_next(kind)
    got = []
    ends = []
    with pytest.raises(StreamInterrupted) as info, p.stream(PROMPT) as s:
        s.on_end(ends.append)
        for delta in s:
            got.append(delta)
    err = info.value
    assert got and err.partial_text == "".join(got) and whole.startswith(err.partial_text)
    assert len(err.partial_text) < len(whole)
    assert isinstance(err.__cause__, cause) and err.cause is err.__cause__
    assert err.provider == "p" and err.request_id == err.cause.request_id
    assert not is_retryable(err) and stops_chain(err)  # never retried, never sent elsewhere
    assert is_outage(err)  # an overloaded or dropped stream counts for a breaker
    if kind == "stream_error":
        assert err.status_code == (529 if api == "anthropic" else 500)
    # the usage seen so far (Anthropic: input at message_start), output from the text
    assert err.usage.prompt_tokens > 0
    assert err.usage.completion_tokens >= 1
    (end,) = ends
    assert end.error is err and end.response is None and end.delivered
    assert end.text == err.partial_text and end.usage == err.usage
    assert KEY not in repr(err) and KEY not in str(err)
    assert err.partial_text not in repr(err)  # the text never goes into logs via repr


def test_an_error_in_the_same_chunk_as_the_first_delta_is_raised_at_open():
    """Nothing reached the caller yet: a retry may still try again."""
    frames = (
        b'data: {"choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}\n\n'
        b'data: {"error":{"message":"boom","type":"server_error"}}\n\n')
    p = handmade("openai", lambda: [frames])
    with pytest.raises(ServerError, match="boom") as info:
        p.stream("x")
    assert not isinstance(info.value, StreamInterrupted)


# -- hand-made streams ----------------------------------------------------------------------------
class Chunks(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body from ``make()`` -> chunks, optionally moving a clock before each chunk."""

    def __init__(self, make, clock=None, gap=0.0):
        self.make, self.clock, self.gap = make, clock, gap

    def __iter__(self):
        for chunk in self.make():
            if self.clock is not None and self.gap:
                self.clock.advance(self.gap)
            yield chunk

    async def __aiter__(self):
        for chunk in self.__iter__():
            yield chunk


def handmade(api, make, clock=None, gap=0.0, headers=None, **kw):
    clock = clock or VirtualClock()
    hdrs = {"content-type": "text/event-stream", **(headers or {})}

    def respond(request):
        return httpx.Response(200, headers=hdrs, stream=Chunks(make, clock, gap))

    transport = httpx.MockTransport(respond)
    cls = OpenAIProvider if api == "openai" else AnthropicProvider
    return cls("hand", MODELS[api], api_key=KEY, client=httpx.Client(transport=transport),
               async_client=httpx.AsyncClient(transport=transport), clock=clock, **kw)


def mock_stream_bytes(api, **kw):
    """The exact bytes the mock streams for PROMPT."""
    srv = server(api, latency=0.0, chunk_delay=0.0, **kw)
    with srv.client() as c:
        path = "/chat/completions" if api == "openai" else "/v1/messages"
        body = {"model": MODELS[api], "max_tokens": 100, "stream": True,
                "messages": [{"role": "user", "content": PROMPT}]}
        if api == "openai":
            body["stream_options"] = {"include_usage": True}
        return c.post(path, json=body).content


@settings(max_examples=40, deadline=None)
@given(cuts=st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=200),
       api=st.sampled_from(APIS), crlf=st.booleans())
def test_any_cutting_of_the_bytes_gives_the_same_answer(cuts, api, crlf):
    raw = mock_stream_bytes(api)
    if crlf:
        raw = raw.replace(b"\n", b"\r\n")
    pieces, i = [], 0
    for n in cuts:
        if i >= len(raw):
            break
        pieces.append(raw[i:i + n])
        i += n
    pieces.append(raw[i:])
    whole = handmade(api, lambda: [raw]).stream("x")
    cut = handmade(api, lambda: list(pieces)).stream("x")
    assert list(cut) == list(whole)
    assert cut.response.text == whole.response.text and cut.response.usage == whole.response.usage


def test_sse_decoder_follows_the_standard():
    d = SSEDecoder()
    events = d.feed(b"\xef\xbb\xbf: keep-alive\n\nevent: ping\ndata: {}\n\n"
                    b"id: 7\nretry: 10\ndata: a\ndata:b\rdata:  c\r\n\r\ndata: tail\n")
    events += d.end()
    assert [(e.event, e.data) for e in events] == [
        ("ping", "{}"), ("message", "a\nb\n c"), ("message", "tail")]
    assert SSEDecoder().feed(b"event: only-a-name\n\n") == []  # no data: no event
    cut = SSEDecoder()
    cut.feed(b"data: unfinished")
    assert cut.end() == []  # a line cut by the end of the body is dropped


def test_a_line_without_end_is_bounded():
    p = handmade("openai", lambda: [b"data: " + b"x" * 5000] * 2000)
    with pytest.raises(MalformedResponse, match=r"longer than|over the"):
        p.stream("x")


def test_a_stream_over_the_size_cap_is_cut():
    chunk = (b'data: {"choices":[{"index":0,"delta":{"content":"' + b"x" * 900
             + b'"},"finish_reason":null}]}\n\n')
    p = handmade("openai", lambda: [chunk] * 5000, max_response_bytes=64 * 1024)
    with pytest.raises(StreamInterrupted) as info, p.stream("x") as s:
        for _ in s:
            pass
    assert isinstance(info.value.cause, MalformedResponse)
    assert "limit" in str(info.value.cause)


def openai_chunk(content=None, finish=None, usage=None, choices=True):
    body = {"id": "c", "object": "chat.completion.chunk", "model": "gpt-4o-mini",
            "choices": [{"index": 0, "delta": {"content": content} if content else {},
                         "finish_reason": finish}] if choices else []}
    if usage is not None:
        body["usage"] = usage
    return f"data: {json.dumps(body)}\n\n".encode()


def test_a_stall_between_events_is_cut_at_the_read_timeout():
    clock = VirtualClock()
    frames = [openai_chunk("a"), openai_chunk("b"), openai_chunk("c")]
    p = handmade("openai", lambda: frames, clock=clock, gap=31.0,
                 timeout=httpx.Timeout(60.0, read=30.0))
    got = []
    with pytest.raises(StreamInterrupted) as info, p.stream("x") as s:
        got.extend(s)
    assert isinstance(info.value.cause, ProviderTimeout) and info.value.partial_text == "a"
    assert got == ["a"] and clock.now() == pytest.approx(62.0)


def test_a_stream_that_keeps_flowing_is_not_cut_by_the_timeout():
    """Streams are how long answers are read: only a gap between events is bounded."""
    clock = VirtualClock()
    frames = [openai_chunk("x")] * 100 + [openai_chunk(finish="stop"), b"data: [DONE]\n\n"]
    p = handmade("openai", lambda: frames, clock=clock, gap=20.0,
                 timeout=httpx.Timeout(60.0, read=30.0))
    deltas, s = read(p.stream("x"))
    assert len(deltas) == 100 and clock.now() > 60 * 30  # 2000 s: far past every timeout
    assert s.response.finish_reason == "stop"


def test_a_drip_that_never_completes_an_event_is_cut():
    clock = VirtualClock()
    p = handmade("openai", lambda: [openai_chunk("a")] + [b"d"] * 10_000, clock=clock, gap=0.5,
                 timeout=httpx.Timeout(60.0, read=5.0))
    with pytest.raises(StreamInterrupted) as info, p.stream("x") as s:
        for _ in s:
            pass
    assert isinstance(info.value.cause, ProviderTimeout)
    assert clock.now() < 10  # cut after ~5 s of drip, not after 10 000 reads


def test_time_left_caps_the_whole_stream():
    clock = VirtualClock()
    frames = [openai_chunk("x")] * 100 + [openai_chunk(finish="stop"), b"data: [DONE]\n\n"]
    p = handmade("openai", lambda: frames, clock=clock, gap=1.0)
    s = p.send_stream(p_request("x"), time_left=10.0)
    with pytest.raises(StreamInterrupted) as info:
        list(s)
    assert isinstance(info.value.cause, ProviderTimeout) and clock.now() <= 12


def p_request(prompt):
    from llm_patterns.request import Request
    return Request(prompt)


def test_a_stream_without_usage_is_counted_from_the_text(caplog):
    """Some OpenAI-compatible servers ignore stream_options: the usage is estimated, loudly."""
    frames = [openai_chunk("Hello "), openai_chunk("world"), openai_chunk(finish="stop"),
              b"data: [DONE]\n\n"]
    p = handmade("openai", lambda: frames)
    with caplog.at_level(logging.WARNING, logger="llm_patterns.providers"):
        deltas, s = read(p.stream("count me"))
    assert deltas == ["Hello ", "world"]
    assert s.response.usage == Usage(prompt_tokens=2, completion_tokens=3)
    assert "no usage" in caplog.text


def test_an_openai_stream_without_done_is_accepted_once_finished_else_malformed():
    ok = [openai_chunk("Hi"), openai_chunk(finish="stop"),
          openai_chunk(usage={"prompt_tokens": 3, "completion_tokens": 1}, choices=False)]
    deltas, s = read(handmade("openai", lambda: ok).stream("x"))
    assert deltas == ["Hi"] and s.response.usage.total_tokens == 4
    cut = [openai_chunk("Hi")]
    with pytest.raises(StreamInterrupted) as info, handmade("openai", lambda: cut).stream("x") as s:
        list(s)
    assert isinstance(info.value.cause, MalformedResponse)


def test_an_anthropic_stream_cut_before_its_stop_reason_is_malformed():
    raw = mock_stream_bytes("anthropic")
    head = raw[: raw.index(b"event: message_delta")]
    with pytest.raises(StreamInterrupted) as info, \
            handmade("anthropic", lambda: [head]).stream("x") as s:
        list(s)
    assert isinstance(info.value.cause, MalformedResponse)
    assert "stop_reason" in str(info.value.cause)


def test_a_server_that_answers_a_stream_with_one_json_body_is_one_delta():
    body = {"id": "c", "object": "chat.completion", "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "whole"},
                         "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 2, "completion_tokens": 1}}
    transport = httpx.MockTransport(lambda r: httpx.Response(200, json=body))
    p = OpenAIProvider("j", "gpt-4o-mini", api_key=KEY, client=httpx.Client(transport=transport))
    deltas, s = read(p.stream("x"))
    assert deltas == ["whole"] and s.response.usage.total_tokens == 3


def test_unreadable_events_and_unknown_ones():
    unknown = (b'event: brand_new\ndata: {"type":"brand_new"}\n\n')
    raw = mock_stream_bytes("anthropic")
    deltas, s = read(handmade("anthropic", lambda: [unknown + raw]).stream("x"))
    assert "".join(deltas) == s.response.text  # unknown events are skipped, as the SDK does
    with pytest.raises(MalformedResponse, match="unreadable"):
        handmade("openai", lambda: [b"data: {not json\n\n"]).stream("x")


def test_an_error_event_never_shows_a_key_it_echoes():
    leak = (b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error",'
            b'"message":"bad key ' + KEY.encode() + b'"}}\n\n')
    with pytest.raises(ServerError) as info:
        handmade("anthropic", lambda: [leak]).stream("x")
    assert KEY not in str(info.value) and KEY not in repr(info.value)


@pytest.mark.parametrize("kind,cls", [("rate_limit_error", RateLimitError),
                                      ("api_error", ServerError),
                                      ("overloaded_error", ServerError)])
def test_anthropic_error_events_map_as_their_status_would(kind, cls):
    raw = mock_stream_bytes("anthropic")
    first = raw.index(b"event: content_block_delta")
    second = raw.index(b"event: content_block_delta", first + 1)
    error = (b'event: error\ndata: {"type":"error","error":{"type":"' + kind.encode()
             + b'","message":"m"}}\n\n')
    with pytest.raises(StreamInterrupted) as info, \
            handmade("anthropic", lambda: [raw[:second], error]).stream("x") as s:
        list(s)
    assert type(info.value.cause) is cls
    assert info.value.outage is is_outage(info.value.cause)


def test_a_content_filter_ending_is_never_an_answer():
    srv = server("openai")
    p = srv.provider("p")
    srv.fail_next("content_filter")
    with pytest.raises(StreamInterrupted) as info, p.stream(PROMPT) as s:
        list(s)
    assert isinstance(info.value.cause, ContentFilterError) and info.value.partial_text


# -- endings: exactly once, however the stream ends --------------------------------------------
@pytest.mark.parametrize("api", APIS)
def test_on_end_runs_once_for_a_complete_stream(api):
    ends = []
    with providers(server(api))[1].stream(PROMPT) as s:
        s.on_end(ends.append)
        text = "".join(s)
    s.close()
    (end,) = ends
    assert end.complete and end.response is s.response and end.error is None
    assert end.text == text and end.usage == s.response.usage and end.delivered


@pytest.mark.parametrize("api", APIS)
def test_breaking_out_ends_the_stream_with_what_arrived(api):
    srv = server(api)
    ends = []
    with http_provider(srv).stream(PROMPT) as s:
        s.on_end(ends.append)
        first = next(iter(s))
    (end,) = ends
    assert end.response is None and end.error is None and end.text == first and end.delivered
    assert end.usage.completion_tokens >= 1 and end.usage.prompt_tokens > 0
    with pytest.raises(RuntimeError, match="not been read"):
        _ = s.response


def test_a_loop_broken_off_goes_on_where_it_stopped_and_gc_closes_the_connection():
    closed = []

    class Tracked(Chunks):
        def close(self):
            closed.append(True)

    frames = [openai_chunk("a"), openai_chunk("b"), openai_chunk(finish="stop"),
              b"data: [DONE]\n\n"]
    transport = httpx.MockTransport(lambda r: httpx.Response(
        200, headers={"content-type": "text/event-stream"}, stream=Tracked(lambda: frames)))
    p = OpenAIProvider("t", "gpt-4o-mini", api_key=KEY, client=httpx.Client(transport=transport))
    s = p.stream("x")
    ends = []
    s.on_end(ends.append)
    first = None
    for delta in s:  # a loop broken off after one delta
        first = delta
        break
    assert first == "a" and not closed and not ends  # a break is not the end: as a file
    assert list(s) == ["b"] and len(ends) == 1 and ends[0].complete and closed
    s = p.stream("x")
    s.on_end(ends.append)
    next(iter(s))
    del s  # abandoned without close(): collected, and settled
    gc.collect()
    assert len(ends) == 2 and ends[1].response is None and ends[1].delivered


def test_async_break_and_cancellation_end_the_stream():
    srv = server("anthropic")
    p = srv.provider("p")
    ends = []

    async def brk():
        async with p.astream(PROMPT) as s:
            s.on_end(ends.append)
            async for _ in s:
                break

    async def cancelled():
        reading = asyncio.Event()

        async def consume():
            async with p.astream(PROMPT) as s:
                s.on_end(ends.append)
                async for _ in s:
                    reading.set()
                    await srv.clock.asleep(100)

        task = asyncio.ensure_future(consume())
        await reading.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(brk())
    asyncio.run(cancelled())
    assert len(ends) == 2 and all(e.response is None and e.error is None for e in ends)


def test_async_on_end_callbacks_may_be_coroutines():
    srv = server("openai")
    seen = []

    async def record(end):
        await asyncio.sleep(0)
        seen.append(end.usage)

    async def go():
        async with srv.provider("p").astream(PROMPT) as s:
            s.on_end(record)
            async for _ in s:
                pass
        return s

    s = asyncio.run(go())
    assert seen == [s.response.usage]


def test_an_answer_without_text_is_judged_at_open():
    """A refusal (or a broken tool call) with no text: nothing reached the caller, so the
    failure is raised when the stream is opened, where a retry or a fallback can act."""
    refusal = [b'data: {"choices":[{"index":0,"delta":{"refusal":"I can\'t help"},'
               b'"finish_reason":null}]}\n\n', openai_chunk(finish="stop"), b"data: [DONE]\n\n"]
    with pytest.raises(ContentFilterError, match="can't help"):
        handmade("openai", lambda: refusal).stream("x")
    bad_call = [b'data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c1",'
                b'"function":{"name":"f","arguments":"{\\"a\\": "}}]},"finish_reason":null}]}\n\n',
                openai_chunk(finish="tool_calls"), b"data: [DONE]\n\n"]
    with pytest.raises(MalformedResponse, match="not valid JSON"):
        handmade("openai", lambda: bad_call).stream("x")


def test_astream_can_be_awaited_or_entered():
    srv = server("openai")
    p = srv.provider("p")

    async def go():
        s = await p.astream(PROMPT)
        try:
            return [d async for d in s]
        finally:
            await s.aclose()

    assert "".join(asyncio.run(go())) == p.complete(PROMPT).text
