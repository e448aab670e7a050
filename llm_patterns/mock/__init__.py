"""The mock LLM provider: an OpenAI / Anthropic look-alike that misbehaves on demand.

``MockLLMServer`` answers in process through ``httpx.MockTransport`` (``.transport``,
``.client()``, ``.async_client()``, and ``.provider()`` without HTTP at all); ``serve`` /
``running`` put the same server on a real 127.0.0.1 port for the official SDKs;
``python -m llm_patterns serve-mock`` does it from a shell.

Modules: ``apis`` (names, paths), ``request`` (each API's request rules), ``replies`` (what the
model says), ``wire`` (bodies and ids), ``faults`` (every answer on demand), ``limits`` (rate
limits and their headers), ``caching`` (prompt caching as billed), ``stream`` (server-sent
events), ``server`` (the decisions), ``direct`` (the in-process provider), ``http`` (the
loopback server), ``cli`` (serve-mock).
"""

from __future__ import annotations

from .http import MockHTTPServer, running, serve
from .server import APIS, FAULT_KINDS, MockLLMServer

__all__ = ["APIS", "FAULT_KINDS", "MockHTTPServer", "MockLLMServer", "running", "serve"]
