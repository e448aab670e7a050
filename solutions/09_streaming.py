# %% [markdown]
# # 09 · Streaming: resilient up to the first token
#
# **Goal:** see what changes for retries, fallback, rate limits and cost when the answer is
# streamed: shown to the user word by word as the model writes it.
#
# **What you will see (no graded task):** a streamed answer in a widget; a primary that fails
# *before* its first token (retried and replaced by the backup, invisibly); a primary that dies
# *half-way* (`StreamInterrupted`: the caller has half an answer and decides what to do); what
# each of those costs; and a tool conversation that moves from OpenAI to Anthropic.
#
# **Time:** about 10 minutes. Everything runs on a virtual clock (set `LIVE = True` below to
# watch the words arrive in real time).

# %%
import html
import json
import logging
import random
import sys

import ipywidgets as W
from IPython.display import display

from llm_patterns import (
    BackoffPolicy,
    CircuitBreaker,
    CostTracker,
    MockLLMServer,
    RateLimiter,
    ResilientClient,
    RetryPolicy,
    ScaledClock,
    VirtualClock,
)
from llm_patterns.errors import StreamInterrupted

logging.basicConfig(stream=sys.stdout, format="%(name)s %(levelname)s %(message)s",
                    level=logging.WARNING, force=True)

LIVE = False  # True: real time (the words arrive as you watch); False: a virtual clock
clock = ScaledClock(speed=1.0) if LIVE else VirtualClock()

# Two mock providers speaking the real APIs: OpenAI first, Anthropic as the backup. 0.4 s to
# the first byte, then a word every 0.15 s.
openai_api = MockLLMServer(api="openai", clock=clock, latency=0.4, chunk_delay=0.15, seed=9,
                           name="openai")
anthropic_api = MockLLMServer(api="anthropic", clock=clock, latency=0.6, chunk_delay=0.15,
                              seed=9, name="anthropic")
primary = openai_api.provider("openai", "gpt-4o-mini")
backup = anthropic_api.provider("anthropic", "claude-haiku-4-5")

cost = CostTracker(budget=1.00, hard_limit=True)
client = ResilientClient(
    [primary, backup],
    limiters={"openai": RateLimiter(rpm=500, tpm=200_000, clock=clock)},
    breakers={name: CircuitBreaker(name, failure_threshold=5, clock=clock)
              for name in ("openai", "anthropic")},
    retry=RetryPolicy(max_attempts=2, backoff=BackoffPolicy(base_delay=0.5), clock=clock,
                      rng=random.Random(0)),
    cost=cost, clock=clock)

QUESTION = ("Explain to a new colleague why our pipeline retries failed LLM calls with "
            "exponential backoff and jitter instead of retrying at once")


class StreamView(W.VBox):
    """A streamed answer as it arrives: the text so far and a status line."""

    def __init__(self, title):
        self.status = W.HTML(f"<b>{html.escape(title)}</b>")
        self.body = W.HTML("")
        super().__init__([self.status, self.body],
                         layout=W.Layout(border="1px solid #d9dee5", padding="6px 10px"))

    def show(self, text, status, color="#444"):
        self.body.value = f"<div style='font-family:monospace'>{html.escape(text)}</div>"
        self.status.value = f"<span style='color:{color}'>{html.escape(status)}</span>"

# %% [markdown]
# ## 1 · A stream, as it arrives
#
# `client.stream(...)` is a context manager; iterating it yields the text as it comes (`str`
# deltas); after the loop `.response` is the whole answer with its usage, finish reason,
# provider and cost, exactly what `complete()` returns. The widget is updated at each delta;
# the table below it is when each piece arrived, on the clock.

# %%
view = StreamView("streaming...")
display(view)
arrivals = []
start = clock.now()
with client.stream(QUESTION, max_tokens=120) as stream:
    text = ""
    for delta in stream:
        text += delta
        arrivals.append((clock.now() - start, delta))
        view.show(text, f"{stream.provider}: {len(text)} characters so far")
answer = stream.response
view.show(answer.text, f"{answer.provider}: done ({answer.finish_reason})", "#2ca02c")

for t, delta in arrivals[:5]:
    print(f"t = {t:5.2f} s  {delta!r}")
print(f"... {len(arrivals)} pieces; the whole answer took {answer.latency_s:.2f} s, the first "
      f"piece {arrivals[0][0]:.2f} s")
print(f"{answer.provider}, {answer.usage}, cost ${cost.total:.6f}")

# %% [markdown]
# The reader saw the first words after 0.4 s instead of waiting for the whole answer. That is
# the point of streaming, and it changes the rules for everything around the call:
#
# - **Before the first token** nothing has been shown. A 503, a 429 or a connection that breaks
#   can be retried, or sent to the backup, exactly as for `complete()`.
# - **After it** the user is reading. A silent retry would show a different answer, glued to half
#   of the first one. So the library raises `StreamInterrupted` with the text that arrived, and
#   the caller decides.
#
# ## 2 · The primary fails before its first token
#
# The primary answers 503 twice: the retry tries again, then the chain moves to Anthropic. The
# log lines are the retry and the fallback at work; the reader only sees the answer start later.

# %%
openai_api.fail_next("overloaded", 2)
view = StreamView("streaming...")
display(view)
start = clock.now()
with client.stream(QUESTION, max_tokens=120) as stream:
    text = ""
    for delta in stream:
        if not text:
            first = clock.now() - start
        text += delta
        view.show(text, f"{stream.provider}: {len(text)} characters so far")
answer = stream.response
view.show(answer.text, f"{answer.provider}: done, fallback_used={answer.fallback_used}",
          "#2ca02c")
print(f"answered by {answer.provider}; first words after {first:.2f} s (0.40 s when OpenAI "
      f"answers); fallback_used={answer.fallback_used}")

# %% [markdown]
# ## 3 · The primary dies half-way
#
# This time OpenAI sends half of the answer, then an error chunk (Anthropic's equivalent is an
# `event: error` with `overloaded_error`). The text already on screen stays; the library does
# not fall back on its own.

# %%
openai_api.fail_next("stream_error")
view = StreamView("streaming...")
display(view)
try:
    with client.stream(QUESTION, max_tokens=120) as stream:
        text = ""
        for delta in stream:
            text += delta
            view.show(text, f"{stream.provider}: {len(text)} characters so far")
except StreamInterrupted as err:
    interrupted = err
    view.show(err.partial_text, f"{err.provider} stopped after {len(err.partial_text)} "
              f"characters: {type(err.cause).__name__}", "#d62728")

print(f"StreamInterrupted from {interrupted.provider}: {len(interrupted.partial_text)} "
      f"characters arrived")
print(f"cause: {type(interrupted.cause).__name__}, HTTP {interrupted.cause.status_code} "
      f"(an outage: the breaker counts it: {interrupted.outage})")
print(f"retried? no. sent to {backup.name}? no ({anthropic_api.stats['requests']} requests "
      f"there so far)")

# %% [markdown]
# **The caller's choice.** Half an answer is on screen. Reasonable things to do, depending on
# the product: keep it and say it is incomplete; or discard it and ask again. Here we ask the
# backup, clearly replacing what was shown (not appending to it: another model would not
# continue the same sentence). `client.stream(...)` would try OpenAI again first; to go
# straight to the backup, stream from it directly.

# %%
view.show(interrupted.partial_text, "asking anthropic instead...", "#ff7f0e")
with backup.stream(QUESTION, max_tokens=120) as again:
    text = ""
    for delta in again:
        text += delta
        view.show(text, f"{again.provider} (second try): {len(text)} characters so far")
view.show(again.response.text, f"{again.provider}: done (replaces the interrupted answer)",
          "#2ca02c")
print(again.response.text)

# %% [markdown]
# ## 4 · What it cost
#
# Every stream is paid for once, including the one that died: the provider generated (and
# bills) the tokens it sent. Its usage is what the stream reported before it broke, with the
# output counted from the text that arrived. The failed attempts before a first token cost
# nothing. (The direct call to the backup in part 3 went around the client, so it is not in the
# tracker: in production, use a client holding only the backup.)

# %%
for record in cost.records:
    print(f"{record.provider:10} {record.model:17} {record.prompt_tokens:3} in "
          f"{record.completion_tokens:3} out  ${record.cost:.6f}")
print(f"total ${cost.total:.6f}, still held for calls in flight: ${cost.reserved:.6f}")
failures = {name: h["breaker"]["consecutive_failures"] for name, h in client.health().items()}
print(f"consecutive failures seen by the breakers: {failures}")

# %% [markdown]
# ## 5 · Tools across providers
#
# A request is written once, in OpenAI's chat format: tools as `{"type": "function", ...}`,
# the model's calls coming back as `response.tool_calls` (`ToolCall(id, name, arguments)`),
# the results sent as `tool` messages. When the conversation has to move to Anthropic, the
# provider translates it (`tools` -> `input_schema`, calls -> `tool_use` blocks, results ->
# `tool_result` blocks in a user turn, `system` on top). The mock checks each body as the real
# API does, so a wrong translation would fail right here.

# %%
tools = [{"type": "function", "function": {
    "name": "retry_stats", "description": "Retries and 429s of a pipeline run",
    "parameters": {"type": "object", "properties": {"run_id": {"type": "string"}},
                   "required": ["run_id"]}}}]
messages = [{"role": "system", "content": "You answer questions about pipeline runs."},
            {"role": "user", "content": "How many retries did run nightly-42 need?"}]
asked = client.complete(messages=messages, tools=tools, tool_choice="required")
call = asked.tool_calls[0]
print(f"{asked.provider} calls {call.name}({call.arguments})")

messages += [asked.message(), call.result(json.dumps({"retries": 7, "http_429": 3}))]
openai_api.take_down()  # OpenAI goes away mid-conversation
with client.stream(messages=messages, tools=tools) as stream:
    final = "".join(stream)
print(f"{stream.response.provider} (fallback_used={stream.response.fallback_used}): {final}")
openai_api.bring_up()

# %% [markdown]
# ## In production
#
# - OpenAI sends the usage of a stream only when asked (`stream_options.include_usage`); the
#   provider always asks, so the cost of a stream is exact. Anthropic reports it in the stream.
# - `async with client.astream(...) as s: async for delta in s: ...` is the same for asyncio.
# - Breaking out of the loop, or leaving the `with` block early, closes the connection; the
#   rate limiter and the budget are settled with what arrived.
# - A request one provider of the chain cannot take (`response_format={"type":
#   "json_object"}` has no Anthropic equivalent, nor `logit_bias`) is refused with a
#   `ValueError` before anything is sent, not discovered during an outage.
