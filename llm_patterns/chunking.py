"""Chunking long inputs to fit a context window, and a map-reduce summary over the chunks.

``chunk_text`` cuts greedily: each chunk is as long as the budget allows, ending at the last
paragraph break in reach, else the last sentence end, else the last space; only a word longer than
a whole chunk is cut. The whitespace after a cut stays with the chunk before it, so with
``overlap=0`` the chunks join back to exactly the text. ``chunk_spans`` gives the same chunks as
``(start, end)`` offsets; with an overlap, chunk i's new text is ``text[end[i-1]:end[i]]``.

The budget is ``estimate_tokens`` (about 4 characters a token), the one estimate the rate limiter
and the mock use: a chunk of ``max_tokens`` by that estimate is ``max_tokens * 4`` characters.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .errors import ContextWindowExceeded
from .tokens import CHARS_PER_TOKEN, estimate_tokens

__all__ = ["SummaryResult", "SummaryStep", "chunk_spans", "chunk_text", "map_reduce_summarize"]

logger = logging.getLogger("llm_patterns.chunking")

_PARAGRAPH = re.compile(r"\n[^\S\n]*\n")  # a blank line (spaces and \r allowed on it)
_SENTENCE = re.compile(r"(?:[.!?\u2026]+[\"'\u201d\u2019)\]]*\s+|[\u3002\uff01\uff1f]+)")
_SPACE = re.compile(r"\s+")
_NON_SPACE = re.compile(r"\S")


def _check_args(text: Any, max_tokens: Any, overlap: Any) -> None:
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens <= 0:
        raise ValueError(f"max_tokens must be a positive int, got {max_tokens!r}")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or overlap < 0:
        raise ValueError(f"overlap must be an int >= 0, got {overlap!r}")
    if overlap >= max_tokens:
        raise ValueError(
            f"overlap={overlap} must be smaller than max_tokens={max_tokens}: "
            f"each chunk needs room for new text"
        )


def _run_end(text: str, pos: int, limit: int) -> int:
    """End of the whitespace run starting at ``pos``, at most ``limit``."""
    m = _NON_SPACE.search(text, pos, limit)
    return m.start() if m else limit


def _last_end(pattern: re.Pattern[str], text: str, lo: int, limit: int) -> int | None:
    end = None
    for m in pattern.finditer(text, lo, limit):
        end = m.end()
    return end


def _cut(text: str, lo: int, limit: int) -> int:
    """Where to end a chunk whose new text starts at ``lo`` and may reach ``limit`` (< len(text)).

    Returns a position in (lo, limit]: after the last paragraph break, else sentence end, else
    space that follows some text; whitespace runs stay with the chunk before the cut.
    """
    lead = _run_end(text, lo, limit)  # leading whitespace is not a boundary worth cutting at
    for pattern in (_PARAGRAPH, _SENTENCE, _SPACE):
        end = _last_end(pattern, text, lead, limit)
        if end is not None:
            return _run_end(text, end, limit)
    if lo < lead < limit:
        return lead  # let the next word start a fresh chunk rather than cut it
    return limit  # a word longer than a chunk (or only whitespace): cut it


def _word_start_at_or_after(text: str, pos: int, end: int) -> int | None:
    """The first position in [pos, end) where a word starts, or None."""
    if pos < end and not text[pos].isspace() and (pos == 0 or text[pos - 1].isspace()):
        return pos
    m = _SPACE.search(text, pos, end)
    if m and m.end() < end:
        return m.end()
    return None


def _iter_spans(text: str, max_tokens: int, overlap: int) -> Iterator[tuple[int, int]]:
    budget = max_tokens * CHARS_PER_TOKEN
    back = overlap * CHARS_PER_TOKEN
    n = len(text)
    start, end = 0, 0
    while end < n:
        if end == 0 or back == 0:  # noqa: SIM108 - the two cases read better apart
            first = end
        else:
            first = _overlap_start(text, start, end, back, budget)
        limit = first + budget
        new_end = n if limit >= n else _cut(text, end, limit)
        yield first, new_end
        start, end = first, new_end


def _overlap_start(text: str, start: int, end: int, back: int, budget: int) -> int:
    """Start of the next chunk: about ``back`` characters before ``end``, at a word start."""
    target = max(start, end - back)
    # If the next word would fit a chunk on its own but not after the overlap, shrink the overlap.
    m = _SPACE.search(text, end, min(len(text), end + budget + 1))
    word_end = m.start() if m else min(len(text), end + budget + 1)
    if word_end - target > budget and word_end - end <= budget:
        target = word_end - budget
    found = _word_start_at_or_after(text, target, end)
    return found if found is not None else end  # no word start in reach: no overlap


def chunk_spans(text: str, max_tokens: int, overlap: int = 0) -> list[tuple[int, int]]:
    """The chunks of ``chunk_text`` as ``(start, end)`` offsets into ``text``.

    Ends strictly increase and the last is ``len(text)``; with ``overlap=0`` each chunk starts
    where the previous ended, else at most ``overlap`` tokens before it.
    """
    _check_args(text, max_tokens, overlap)
    return list(_iter_spans(text, max_tokens, overlap))


def chunk_text(text: str, max_tokens: int, overlap: int = 0) -> Iterator[str]:
    """Yield chunks of ``text``, each within ``max_tokens`` by ``estimate_tokens``.

    Cuts at paragraph, then sentence, then word boundaries; a word longer than a chunk is cut.
    With ``overlap=0`` ``"".join(chunks) == text``; with ``overlap`` tokens, each chunk after the
    first begins with (at most) the last ``overlap`` tokens of the one before, starting at a word
    (no overlap when that tail holds no word start, e.g. after a cut inside a huge word).
    Empty text yields nothing. Arguments are checked at the call, not at the first ``next()``:
    ``max_tokens <= 0``, ``overlap < 0`` or ``overlap >= max_tokens`` raise ValueError.
    """
    _check_args(text, max_tokens, overlap)
    return (text[s:e] for s, e in _iter_spans(text, max_tokens, overlap))


# ---------------------------------------------------------------------------- map-reduce

MAP_PROMPT = (
    "Summarize the following text. Keep every fact, name and number that matters.\n\n{text}"
)
REDUCE_PROMPT = "Combine these partial summaries of one document into a single summary.\n\n{text}"


@dataclass(frozen=True)
class SummaryStep:
    """One call: ``task_id`` ("chunk-3", "reduce-1"), its prompt estimate, answer and cost."""

    task_id: str
    prompt_tokens: int
    text: str
    response: Any = None
    cost: Any = None


@dataclass
class SummaryResult:
    """The final summary, how many chunks the text had, and every call made."""

    summary: str
    chunks: int
    rounds: int = 0
    steps: list[SummaryStep] = field(default_factory=list)

    @property
    def calls(self) -> int:
        return len(self.steps)

    @property
    def responses(self) -> list[Any]:
        return [s.response for s in self.steps]


def _caller(summarize: Any, output_tokens: int,
            dag_id: str | None) -> Callable[[str, str], tuple[str, Any]]:
    from .client import ResilientClient  # lazy: chunking does not need the client otherwise

    if isinstance(summarize, ResilientClient):  # it takes labels and records cost itself

        def call(prompt: str, task_id: str) -> tuple[str, Any]:
            response = summarize.complete(prompt, max_tokens=output_tokens, dag_id=dag_id,
                                          task_id=task_id)
            return _text_of(response), response
    elif hasattr(summarize, "complete"):

        def call(prompt: str, task_id: str) -> tuple[str, Any]:
            response = summarize.complete(prompt, max_tokens=output_tokens)
            return _text_of(response), response
    elif callable(summarize):

        def call(prompt: str, task_id: str) -> tuple[str, Any]:
            response = summarize(prompt)
            return _text_of(response), response
    else:
        raise TypeError(
            f"summarize must be a function prompt -> str or an object with complete(prompt, "
            f"max_tokens=...), got {type(summarize).__name__}"
        )
    return call


def _text_of(response: Any) -> str:
    text = response if isinstance(response, str) else getattr(response, "text", None)
    if not isinstance(text, str):
        raise TypeError(
            f"summarize returned {type(response).__name__}; expected a str or an "
            f"object with a str .text"
        )
    return text


def _fill(template: str, text: str) -> str:
    return template.replace("{text}", text)


def map_reduce_summarize(
    text: str,
    summarize: Any,
    *,
    max_tokens: int,
    overlap: int = 0,
    output_tokens: int = 512,
    map_prompt: str = MAP_PROMPT,
    reduce_prompt: str = REDUCE_PROMPT,
    max_rounds: int = 5,
    cost: Any = None,
    dag_id: str | None = None,
) -> SummaryResult:
    """Summarize ``text`` of any length: each chunk ("map"), then the summaries ("reduce").

    ``max_tokens`` bounds every prompt sent (template + chunk, by ``estimate_tokens``);
    ``output_tokens`` is passed as ``max_tokens`` to ``summarize.complete`` when ``summarize`` is
    a provider or client; a plain function ``prompt -> str`` (or -> an object with ``.text``)
    works too. Templates contain ``{text}``. When the joined summaries do not fit one reduce
    prompt they are chunked and reduced again; ``max_rounds`` bounds the reduce rounds, the final
    one included, and ``ContextWindowExceeded`` says when that is not enough. With ``cost`` (a
    CostTracker), each response that has ``.model``
    and ``.usage`` is recorded with ``task_id`` "chunk-i" / "reduce-j" (and ``dag_id``); a
    ``ResilientClient`` gets those labels on each call and records the cost itself.
    """
    for name, template in (("map_prompt", map_prompt), ("reduce_prompt", reduce_prompt)):
        if not isinstance(template, str) or "{text}" not in template:
            raise ValueError(f"{name} must be a str containing '{{text}}', got {template!r}")
    if isinstance(max_rounds, bool) or not isinstance(max_rounds, int) or max_rounds < 1:
        raise ValueError(f"max_rounds must be an int >= 1, got {max_rounds!r}")
    if isinstance(output_tokens, bool) or not isinstance(output_tokens, int) or output_tokens <= 0:
        raise ValueError(f"output_tokens must be a positive int, got {output_tokens!r}")
    _check_args(text, max_tokens, overlap)
    room = {}
    for name, template, least in (
        ("map_prompt", map_prompt, overlap + 1),
        ("reduce_prompt", reduce_prompt, 1),
    ):
        room[name] = max_tokens - estimate_tokens(_fill(template, ""))
        if room[name] < least:
            raise ValueError(
                f"max_tokens={max_tokens} leaves {room[name]} tokens for text after {name} "
                f"({max_tokens - room[name]} tokens) with overlap={overlap}; raise max_tokens"
            )
    call = _caller(summarize, output_tokens, dag_id)
    recorded_by_client = getattr(summarize, "cost", None)
    if cost is not None and cost is recorded_by_client:
        cost = None  # the client records each call already, with the same labels
    steps: list[SummaryStep] = []

    def run(task_id: str, template: str, piece: str) -> str:
        prompt = _fill(template, piece)
        answer, response = call(prompt, task_id)
        spent = None
        model, usage = getattr(response, "model", None), getattr(response, "usage", None)
        if cost is not None and model is not None and usage is not None:
            spent = cost.record(
                model,
                usage,
                dag_id=dag_id,
                task_id=task_id,
                provider=getattr(response, "provider", None),
            )
        steps.append(SummaryStep(task_id, estimate_tokens(prompt), answer, response, spent))
        logger.info(
            "%s: %d prompt tokens -> %d-char summary", task_id, estimate_tokens(prompt), len(answer)
        )
        return answer

    chunks = list(chunk_text(text, room["map_prompt"], overlap))
    summaries = [run(f"chunk-{i}", map_prompt, c) for i, c in enumerate(chunks, 1)]
    rounds, reduces = 0, 0
    while len(summaries) > 1:
        joined = "\n\n".join(summaries)
        if estimate_tokens(_fill(reduce_prompt, joined)) <= max_tokens:
            reduces += 1
            summaries = [run(f"reduce-{reduces}", reduce_prompt, joined)]
            rounds += 1
            break
        if rounds + 1 >= max_rounds:  # an intermediate round must leave one for the final reduce
            raise ContextWindowExceeded(
                f"after {rounds} reduce rounds the {len(summaries)} summaries "
                f"({estimate_tokens(joined)} tokens) still do not fit one prompt of "
                f"max_tokens={max_tokens}; shorten the summaries or raise max_rounds"
            )
        pieces = list(chunk_text(joined, room["reduce_prompt"]))
        summaries = []
        for piece in pieces:
            reduces += 1
            summaries.append(run(f"reduce-{reduces}", reduce_prompt, piece))
        rounds += 1
    return SummaryResult(summaries[0] if summaries else "", len(chunks), rounds, steps)
