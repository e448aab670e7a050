# %% [markdown]
# # Task 7 · Token limits: validate, chunk, fall back to a larger window
#
# **Goal:** summarize documents of any length without ever sending a request that cannot fit the
# model's context window. A request that is too large is refused (and sometimes billed) after a
# round trip; no amount of retrying makes it fit.
#
# **What you will build:** `chunk_text(text, max_tokens, overlap=0)`: split a long text into
# pieces that each fit, cutting at paragraph, then sentence, then word boundaries, losing nothing.
#
# **Time:** about 15 minutes.

# %%
import logging
import random
import re
import sys

import plotly.graph_objects as go
import plotly.io as pio

import llm_patterns as lp
from llm_patterns import (
    AnthropicProvider,
    ContextWindowExceeded,
    CostTracker,
    MockLLMServer,
    OpenAIProvider,
    Pricing,
    VirtualClock,
    check_fits,
    estimate_tokens,
)
from llm_patterns.context import register_context_window

pio.renderers.default = "plotly_mimetype"
logging.basicConfig(stream=sys.stdout, format="%(name)s %(levelname)s %(message)s",
                    level=logging.WARNING, force=True)

# A small model for the demo: a 4,096-token window (prompt + answer), like the early chat models.
SMALL, WINDOW = "legacy-4k", 4_096
register_context_window(SMALL, WINDOW, max_output_tokens=1_024)
PRICES = {SMALL: Pricing(0.50, 1.50), "claude-haiku-4-5": Pricing(1.00, 5.00)}

WORDS = ("pipeline", "invoice", "customer", "shipment", "report", "delay", "quarter", "revenue",
         "incident", "forecast", "warehouse", "contract", "supplier", "audit", "region")


def make_document(paragraphs, seed=0):
    """A deterministic business-like document: paragraphs of sentences of plain words."""
    rng = random.Random(seed)
    out = []
    for _ in range(paragraphs):
        sentences = []
        for _ in range(rng.randint(3, 7)):
            words = [rng.choice(WORDS) for _ in range(rng.randint(6, 16))]
            sentences.append(" ".join(words).capitalize() + ".")
        out.append(" ".join(sentences))
    return "\n\n".join(out) + "\n"

# %% [markdown]
# ## 1 · What goes wrong: documents longer than the window
#
# A nightly job summarizes twelve reports with a model whose window is 4,096 tokens. A model's
# window holds the prompt **and** the answer: a request asking for up to 300 answer tokens fits
# only if the prompt is at most 3,796 tokens. (Token counts here use `estimate_tokens`, about 4
# characters a token, the same estimate the mock and the rate limiter use.)

# %%
clock = VirtualClock()
server = MockLLMServer(clock=clock, latency=0.5, seed=3, model=SMALL, context_window=WINDOW)
small = OpenAIProvider("small", SMALL, base_url=server.base_url, api_key="test-key",
                       client=server.client(), clock=clock)

sizes, outcome = [], []
for i in range(12):
    doc = make_document(paragraphs=10 + 20 * (i % 4), seed=i)
    prompt = "Summarize this report:\n\n" + doc
    sizes.append(estimate_tokens(prompt) + 300)
    try:
        small.complete(prompt, max_tokens=300)
        outcome.append("ok")
    except ContextWindowExceeded:
        outcome.append("too long")

fig = go.Figure(go.Bar(x=[f"report {i + 1}" for i in range(12)], y=sizes,
                       marker_color=["#2ca02c" if o == "ok" else "#d62728" for o in outcome],
                       text=outcome, textposition="outside"))
fig.add_hline(y=WINDOW, line_dash="dash", annotation_text=f"context window ({WINDOW} tokens)")
fig.update_layout(title="Prompt + max_tokens per report, against the model's window",
                  yaxis_title="tokens", template="plotly_white", height=380)
fig.show()
print(f"{outcome.count('too long')} of 12 reports failed with ContextWindowExceeded; "
      f"the server still received all {server.stats['requests']} requests")

# %% [markdown]
# Half of the reports are simply too long. Each one was still sent: the provider read the whole
# prompt and answered `400 context_length_exceeded`. That is a network round trip per failure,
# possibly a retry or two by an over-eager client, and on some gateways a bill.
#
# ### Check before you send
#
# `check_fits(model, messages, max_tokens)` does the same arithmetic locally, with the model's
# known window (from `genai-prices` or a documented table; here the one we registered), and
# raises `ContextWindowExceeded` naming the numbers, **before** anything is sent:

# %%
long_report = make_document(paragraphs=115, seed=3)
before = server.stats["requests"]
try:
    check_fits(SMALL, [{"role": "user", "content": "Summarize this report:\n\n" + long_report}],
               max_tokens=300)
except ContextWindowExceeded as err:
    print(f"{type(err).__name__}: {err}")
print("requests sent:", server.stats["requests"] - before)

# %% [markdown]
# Knowing early is good; the report still needs summarizing. The standard answer is to cut the
# document into chunks that fit, summarize each chunk ("map"), then summarize the summaries
# ("reduce"). The cutting is your task.
#
# ## 2 · Your task: `chunk_text(text, max_tokens, overlap=0)`
#
# Return (or yield) string chunks such that:
#
# 1. **nothing is lost:** `"".join(chunks) == text` when `overlap=0` (keep the spaces and
#    newlines *inside* the chunks);
# 2. **each chunk fits:** `estimate_tokens(chunk) <= max_tokens`; since that is
#    `ceil(len(chunk) / 4)`, a chunk has at most `max_tokens * 4` characters;
# 3. **cuts are clean:** end a chunk after the last paragraph break (`"\n\n"`) in reach, else after
#    the last sentence end (`". "`, `"! "`, `"? "`), else after the last whitespace; cut inside a
#    word only when the word alone is longer than a chunk (and then make progress: no endless loop);
# 4. `overlap` tokens: each chunk after the first starts up to `overlap * 4` characters before the
#    previous chunk ended (at a word start), so context carries over; the chunk still fits;
# 5. empty text gives no chunks; `max_tokens <= 0` or `overlap >= max_tokens` raise `ValueError`.
#
# Start with `overlap=0`; the check tells you which criterion is still missing.

# %% tags=["task:7"]
def chunk_text(text, max_tokens, overlap=0):
    """Split `text` into chunks of at most `max_tokens` tokens (4 characters a token)."""
    ### BEGIN SOLUTION: implement chunk_text (rules 1-5 above)
    if max_tokens <= 0:
        raise ValueError(f"max_tokens must be > 0, got {max_tokens}")
    if overlap < 0 or overlap >= max_tokens:
        raise ValueError(f"overlap must be >= 0 and < max_tokens={max_tokens}, got {overlap}")
    budget = max_tokens * 4  # characters per chunk
    chunks = []
    start = pos = 0  # the chunk starts at `start`; its new text starts at `pos`
    while pos < len(text):
        if overlap and chunks:
            start = _word_start(text, max(pos - overlap * 4, start + 1), pos)
        else:
            start = pos
        end = _cut(text, pos, start + budget)
        if end is None and start < pos:  # no boundary in reach after the overlap: drop it
            start = pos
            end = _cut(text, pos, pos + budget)
        if end is None:  # a word longer than a whole chunk: cut it
            end = pos + budget
        chunks.append(text[start:end])
        pos = end
    return chunks


def _cut(text, pos, limit):
    """Where to end a chunk whose new text starts at `pos` and may reach `limit` (None: nowhere)."""
    if limit >= len(text):
        return len(text)
    window = text[pos:limit]
    for boundary in (r"\n\n", r"[.!?]\s", r"\s"):
        ends = [m.end() for m in re.finditer(boundary, window)]
        if ends:
            return pos + ends[-1]
    return None


def _word_start(text, lo, hi):
    """The first position in [lo, hi) where a word starts, else hi."""
    for i in range(lo, hi):
        if not text[i].isspace() and (i == 0 or text[i - 1].isspace()):
            return i
    return hi
    ### END SOLUTION

# %% [markdown]
# Try it on a short text (15 tokens a chunk is 60 characters):

# %%
sample = ("Chunking keeps every request inside the window. It cuts at paragraphs first.\n\n"
          "Then at sentences. Then at words, and only a giant word is ever cut.")
try:
    for chunk in chunk_text(sample, 15):
        print(f"{estimate_tokens(chunk):>2} tokens | {chunk!r}")
except NotImplementedError:
    print("implement chunk_text above first")

# %% tags=["check", "task:7"]
from llm_patterns.course.grading import check_task7

check_task7(chunk_text)

# %% [markdown]
# ## 3 · The library version: chunk, map, reduce, with cost per chunk
#
# `lp.chunk_text` follows the same rules (and handles more sentence ends, Unicode punctuation and
# runs of blank lines). `lp.map_reduce_summarize` uses it: it makes every *prompt* (instruction +
# chunk) fit `max_tokens`, summarizes each chunk, then the joined summaries, in as many reduce
# rounds as needed. Given a `CostTracker`, it records each call under `task_id` `chunk-1`,
# `chunk-2` … `reduce-1`, so you can see where the money went.
#
# The long report is about three times the small model's window:

# %%
print(f"the report: {len(long_report)} characters, about {estimate_tokens(long_report)} tokens; "
      f"the window: {WINDOW} tokens")
chunks = list(lp.chunk_text(long_report, max_tokens=3_000))
print("lp.chunk_text at 3,000 tokens:", [estimate_tokens(c) for c in chunks], "tokens")
print("joins back exactly:", "".join(chunks) == long_report)

# %%
clock = VirtualClock()
server = MockLLMServer(clock=clock, latency=0.5, seed=3, model=SMALL, context_window=WINDOW)
small = OpenAIProvider("small", SMALL, base_url=server.base_url, api_key="test-key",
                       client=server.client(), clock=clock)
tracker = CostTracker(PRICES, budget=0.05)

result = lp.map_reduce_summarize(long_report, small, max_tokens=3_000, output_tokens=300,
                                 cost=tracker, dag_id="nightly_reports")
print(f"{result.chunks} chunks, {result.calls} calls, {result.rounds} reduce round(s), "
      f"{server.stats['by_status']} from the server")
for step in result.steps:
    print(f"{step.task_id:>8}: prompt {step.prompt_tokens:>5} tokens, cost ${step.cost:.6f}")
print(f"total ${tracker.total:.6f} of a ${tracker.budget} budget")

# %%
by_task = tracker.by_task()
fig = go.Figure(go.Bar(x=[task for (_, task) in by_task],
                       y=[round(float(usd) * 1e6, 1) for usd in by_task.values()],
                       marker_color="#1f77b4"))
fig.update_layout(title="Cost per call of the map-reduce summary (CostTracker.by_task)",
                  yaxis_title="micro-dollars (USD × 10⁻⁶)", template="plotly_white", height=330)
fig.show()

# %% [markdown]
# No call was refused: every prompt fit the window because it was measured before it was built.
# The map calls carry the document (most of the cost); the reduce call only the short summaries.
#
# ## 4 · Or: fall back to a model with a larger window
#
# Sometimes you want the whole document in one prompt (a summary that sees everything at once).
# `ResilientClient` runs `check_fits` for **each provider** before calling it: a request too
# large for the primary's window skips the primary *without calling it* (a
# `ContextWindowExceeded` moves on down the chain, unlike other 400s) and goes to a provider with
# a larger window. Here the secondary is an Anthropic model with a 200,000-token window.

# %%
clock = VirtualClock()
small_server = MockLLMServer(clock=clock, latency=0.5, seed=3, model=SMALL,
                             context_window=WINDOW)
large_server = MockLLMServer(clock=clock, latency=1.5, seed=4, api="anthropic",
                             model="claude-haiku-4-5", context_window=200_000)
small = OpenAIProvider("small", SMALL, base_url=small_server.base_url, api_key="test-key",
                       client=small_server.client(), clock=clock)
large = AnthropicProvider("large", "claude-haiku-4-5", base_url=large_server.base_url,
                          api_key="test-key", client=large_server.client(), clock=clock)
tracker = CostTracker(PRICES, budget=0.05)
client = lp.ResilientClient([small, large], cost=tracker, clock=clock)

short = client.complete("Summarize: revenue grew 4% this quarter.", max_tokens=100,
                        task_id="short_note")
print(f"short note  -> answered by {short.provider} ({short.model}), "
      f"fallback_used={short.fallback_used}")
whole = client.complete("Summarize this report:\n\n" + long_report, max_tokens=300,
                        task_id="whole_report")
print(f"long report -> answered by {whole.provider} ({whole.model}), "
      f"fallback_used={whole.fallback_used}")
print("requests received: small", small_server.stats["requests"],
      "| large", large_server.stats["requests"])
print({task: f"${usd:.6f}" for (_, task), usd in tracker.by_task().items()})

# %% [markdown]
# The small model got the short note and never saw the long report; the large model answered
# the report in one call, at its (higher) price. Whether one big call or a map-reduce over a
# cheap model is better depends on the task and the prices: now you can measure both.
#
# ## Recap
#
# - Validate before sending: prompt + `max_tokens` must fit the window (`check_fits`).
# - Chunk what does not fit, at clean boundaries, losing nothing; map-reduce the chunks, and
#   track the cost per chunk.
# - Or route too-large requests to a larger-window model: a context-window error is the one
#   400 worth falling back on.
