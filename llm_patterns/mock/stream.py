"""Server-sent events in each API's own format, paced on the injected clock.

OpenAI (``chat.completion.chunk``): a first chunk with the role, one chunk per text piece (or
per piece of a tool call's JSON arguments, as ``tool_calls`` deltas), a chunk with the
``finish_reason``, then, when the request asked ``stream_options.include_usage``, a chunk with
empty ``choices`` and the ``usage`` (every earlier chunk then carries ``"usage": null``), and
``data: [DONE]``.

Anthropic: ``message_start`` (input usage), for each content block ``content_block_start``,
``content_block_delta`` (``text_delta`` or ``input_json_delta``) and ``content_block_stop``, a
``ping`` after the first block starts, ``message_delta`` (stop reason and cumulative usage) and
``message_stop``. Shapes follow the official SDKs' stream event types, which parse them.

Faults part-way (after half of the content deltas, at least one): ``stream_error`` sends
Anthropic's ``event: error`` (``overloaded_error``) or an OpenAI error chunk and ends the
stream; ``stream_drop`` ends it without the last chunk, as a dropped connection does
(``httpx.RemoteProtocolError`` in process, a connection closed mid-body over HTTP).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from ..clock import Clock
from .replies import FINISH, Reply
from .wire import Usage, message_id, usage_body

__all__ = ["EventStream", "StreamPlan", "build_stream"]

_PIECE = re.compile(r"\s*\S+\s*|\s+")
_ARG_PIECE = 12  # characters of JSON arguments per delta
DROPPED = "peer closed connection without sending complete message body (incomplete chunked read)"


@dataclass(frozen=True)
class StreamPlan:
    """The frames of one stream and the wait before each; ``drop_after``: hang up after that
    many frames (None: the stream ends normally)."""

    frames: tuple[bytes, ...]
    delays: tuple[float, ...]
    drop_after: int | None = None


def _sse(data: Any, event: str | None = None) -> bytes:
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {text}\n\n".encode()


def _pieces(text: str, size: int | None = None) -> list[str]:
    if size is not None:
        return [text[i:i + size] for i in range(0, len(text), size)] or [""]
    return _PIECE.findall(text)


@dataclass
class _Frames:
    frames: list[bytes]
    delays: list[float]
    content: list[int]  # indexes of the content deltas
    gap: float

    def add(self, frame: bytes, content: bool = False) -> None:
        if content:
            self.delays.append(self.gap if self.content else 0.0)
            self.content.append(len(self.frames))
        else:
            self.delays.append(0.0)
        self.frames.append(frame)


def _openai(f: _Frames, *, ident: str, created: int, model: str, reply: Reply, usage: Usage,
            include_usage: bool) -> None:
    base = {"id": message_id("openai", ident), "object": "chat.completion.chunk",
            "created": created, "model": model, "service_tier": "default",
            "system_fingerprint": "fp_mock"}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        body: dict[str, Any] = {**base, "choices": [{"index": 0, "delta": delta,
                                                     "logprobs": None, "finish_reason": finish}]}
        if include_usage:
            body["usage"] = None
        return _sse(body)

    if reply.tool_calls:
        f.add(chunk({"role": "assistant", "content": None, "refusal": None}))
        for index, call in enumerate(reply.tool_calls):
            f.add(chunk({"tool_calls": [{"index": index, "id": f"call_{call.id}",
                                         "type": "function",
                                         "function": {"name": call.name, "arguments": ""}}]}))
            for piece in _pieces(call.arguments_json, _ARG_PIECE):
                f.add(chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}),
                      content=True)
    else:
        f.add(chunk({"role": "assistant", "content": "", "refusal": None}))
        for piece in _pieces(reply.text):
            f.add(chunk({"content": piece}), content=True)
    f.add(chunk({}, FINISH["openai"][reply.finish]))
    if include_usage:
        f.add(_sse({**base, "choices": [], "usage": usage_body("openai", usage)}))
    f.add(b"data: [DONE]\n\n")


def _anthropic(f: _Frames, *, ident: str, model: str, reply: Reply, usage: Usage) -> None:
    start_usage = usage_body("anthropic", Usage(usage.input_tokens, 1, usage.cache_read,
                                                usage.cache_write_5m, usage.cache_write_1h))
    f.add(_sse({"type": "message_start", "message": {
        "id": message_id("anthropic", ident), "type": "message", "role": "assistant",
        "model": model, "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": start_usage}}, "message_start"))
    index = 0
    if reply.text:
        f.add(_sse({"type": "content_block_start", "index": index,
                    "content_block": {"type": "text", "text": ""}}, "content_block_start"))
        f.add(_sse({"type": "ping"}, "ping"))
        for piece in _pieces(reply.text):
            f.add(_sse({"type": "content_block_delta", "index": index,
                        "delta": {"type": "text_delta", "text": piece}}, "content_block_delta"),
                  content=True)
        f.add(_sse({"type": "content_block_stop", "index": index}, "content_block_stop"))
        index += 1
    for call in reply.tool_calls:
        f.add(_sse({"type": "content_block_start", "index": index,
                    "content_block": {"type": "tool_use", "id": f"toolu_{call.id}",
                                      "name": call.name, "input": {}}}, "content_block_start"))
        if index == 0:
            f.add(_sse({"type": "ping"}, "ping"))
        for piece in ["", *_pieces(call.arguments_json, _ARG_PIECE)]:
            f.add(_sse({"type": "content_block_delta", "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": piece}},
                       "content_block_delta"), content=bool(piece))
        f.add(_sse({"type": "content_block_stop", "index": index}, "content_block_stop"))
        index += 1
    final = usage_body("anthropic", usage)
    f.add(_sse({"type": "message_delta",
                "delta": {"stop_reason": FINISH["anthropic"][reply.finish], "stop_sequence": None},
                "usage": {key: final[key] for key in ("input_tokens",
                                                      "cache_creation_input_tokens",
                                                      "cache_read_input_tokens",
                                                      "output_tokens")}}, "message_delta"))
    f.add(_sse({"type": "message_stop"}, "message_stop"))


def build_stream(api: str, *, ident: str, created: int, model: str, reply: Reply, usage: Usage,
                 include_usage: bool, gap: float, fault: str | None = None,
                 request_id: str | None = None) -> StreamPlan:
    """The events answering a streamed request; ``gap``: seconds between content deltas."""
    f = _Frames([], [], [], gap)
    if api == "anthropic":
        _anthropic(f, ident=ident, model=model, reply=reply, usage=usage)
    else:
        _openai(f, ident=ident, created=created, model=model, reply=reply, usage=usage,
                include_usage=include_usage)
    if fault is None or not f.content:
        return StreamPlan(tuple(f.frames), tuple(f.delays))
    cut = f.content[max(0, math.ceil(len(f.content) / 2) - 1)] + 1  # frames kept
    frames, delays = f.frames[:cut], f.delays[:cut]
    if fault == "stream_drop":
        return StreamPlan(tuple(frames), tuple(delays), drop_after=cut)
    if api == "anthropic":
        error: dict[str, Any] = {"type": "error", "error": {"type": "overloaded_error",
                                                             "message": "Overloaded"}}
        if request_id is not None:
            error["request_id"] = request_id
        frames.append(_sse(error, "error"))
    else:
        frames.append(_sse({"error": {"message": "The server had an error while processing your "
                                      "request. Sorry about that!", "type": "server_error",
                                      "param": None, "code": None}}))
    delays.append(0.0)
    return StreamPlan(tuple(frames), tuple(delays))


class EventStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body that yields the frames as time passes on ``clock`` (sync or async)."""

    def __init__(self, plan: StreamPlan, clock: Clock) -> None:
        self.plan = plan
        self.clock = clock

    def __iter__(self) -> Iterator[bytes]:
        for frame, delay in zip(self.plan.frames, self.plan.delays, strict=False):
            if delay:
                self.clock.sleep(delay)
            yield frame
        if self.plan.drop_after is not None:
            raise httpx.RemoteProtocolError(DROPPED)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for frame, delay in zip(self.plan.frames, self.plan.delays, strict=False):
            if delay:
                await self.clock.asleep(delay)
            yield frame
        if self.plan.drop_after is not None:
            raise httpx.RemoteProtocolError(DROPPED)
