"""Task 7 check: ``chunk_text(text, max_tokens, overlap=0)`` splits long text safely."""

from __future__ import annotations

import itertools
from typing import Any

from llm_patterns.tokens import estimate_tokens

from ._framework import DEFAULT_BUDGET, CheckResult, Criterion, Fail, run_check

__all__ = ["check_task7"]

TITLE = "Task 7 · Token limits"

_SENTENCES = [
    "Rate limits protect the provider from bursts.",
    "Backoff spreads retries out over time.",
    "A budget stops a runaway loop before the bill arrives.",
    "Fallbacks keep answers coming when one provider is down.",
    "A circuit breaker stops hammering a provider that is already struggling.",
    "Chunking keeps every request inside the context window.",
]


def _document() -> str:
    paragraphs = []
    for i in range(4):
        sentences = _SENTENCES[i:] + _SENTENCES[:i]
        paragraphs.append(" ".join(sentences[: 3 + i % 3]))
    return "\n\n".join(paragraphs) + "\n"


TEXTS = [
    ("a short note", "Hello world."),
    ("a document of four paragraphs", _document()),
    (
        "text with tabs, newlines and double spaces",
        "first line\nsecond  line\twith a tab\n\n\nthird paragraph  ends here.",
    ),
]


def _chunks(chunk_text: Any, text: str, max_tokens: int, overlap: int = 0) -> list[str]:
    limit = len(text) + 10
    # a student's chunk_text may take no overlap argument at all: pass it only when asked
    out = (chunk_text(text, max_tokens, overlap=overlap) if overlap
           else chunk_text(text, max_tokens))
    if out is None:
        raise Fail("chunk_text returned None: return (or yield) the chunks")
    chunks = list(itertools.islice(iter(out), limit + 1))
    if len(chunks) > limit:
        raise Fail(
            f"chunk_text yielded more than {limit} chunks for {len(text)} characters: it does "
            "not make progress (an endless loop yielding empty chunks?)"
        )
    bad = [c for c in chunks if not isinstance(c, str)]
    if bad:
        raise Fail(f"chunk_text yielded {type(bad[0]).__name__} {bad[0]!r}: yield str chunks")
    return chunks


def _no_text_lost(chunk_text: Any) -> None:
    for label, text in TEXTS:
        for max_tokens in (4, 12, 40):
            chunks = _chunks(chunk_text, text, max_tokens)
            joined = "".join(chunks)
            if joined != text:
                n = next(
                    (i for i, (a, b) in enumerate(zip(joined, text)) if a != b),
                    min(len(joined), len(text)),
                )
                raise Fail(
                    f"for {label} with max_tokens={max_tokens} the chunks join to "
                    f"{len(joined)} characters instead of {len(text)} (first difference at "
                    f"character {n}: {text[max(0, n - 10) : n + 10]!r}): keep the separators "
                    "(spaces, newlines) inside the chunks, so ''.join(chunks) == text"
                )


_SENTENCE_ENDS = (". ", "! ", "? ", ".\n", "!\n", "?\n")  # a sentence end in reach


def _clean_cuts(chunk_text: Any) -> None:
    """Rule 3's order: a chunk ends after a paragraph break when one is in reach, else after a
    sentence end when one is in reach (else after whitespace: 'no word cut' checks that)."""
    label, text = TEXTS[1]
    for max_tokens in (12, 40):
        reach, pos = max_tokens * 4, 0
        chunks = _chunks(chunk_text, text, max_tokens)
        if "".join(chunks) != text:
            raise Fail("the chunks do not join back to the text — fix 'loses no text' first")
        for chunk in chunks[:-1]:
            window = text[pos:pos + reach]
            pos += len(chunk)
            rest = text[pos:]
            at_break = (chunk.endswith("\n\n") or rest.startswith("\n\n")
                        or (chunk.endswith("\n") and rest.startswith("\n")))
            if "\n\n" in window and not at_break:
                raise Fail(
                    f"for {label} with max_tokens={max_tokens} a chunk ends with "
                    f"{chunk[-25:]!r} though a paragraph break was in reach: cut after the last "
                    "paragraph break (\"\\n\\n\") that fits, then at sentence ends, then at spaces"
                )
            if ("\n\n" not in window and any(e in window for e in _SENTENCE_ENDS)
                    and not chunk.rstrip().endswith((".", "!", "?")) and not at_break):
                raise Fail(
                    f"for {label} with max_tokens={max_tokens} a chunk ends mid-sentence "
                    f"({chunk[-25:]!r}) though a sentence end was in reach: prefer a paragraph "
                    "break, then the end of a sentence, then a space"
                )


def _within_limit(chunk_text: Any) -> None:
    for label, text in TEXTS:
        for max_tokens in (4, 12, 40):
            for chunk in _chunks(chunk_text, text, max_tokens):
                n = estimate_tokens(chunk)
                if n > max_tokens:
                    raise Fail(
                        f"for {label} a chunk of {n} tokens came out with max_tokens="
                        f"{max_tokens}: {chunk[:40]!r}... Measure each chunk with "
                        "estimate_tokens (separators included) before adding a piece"
                    )


def _no_word_cut(chunk_text: Any) -> None:
    for label, text in TEXTS:
        for max_tokens in (4, 12, 40):
            chunks = _chunks(chunk_text, text, max_tokens)
            if "".join(chunks) != text:
                raise Fail("the chunks do not join back to the text — fix 'loses no text' first")
            pos = 0
            for chunk in chunks[:-1]:
                pos += len(chunk)
                if 0 < pos < len(text) and not (text[pos - 1].isspace() or text[pos].isspace()):
                    a = text.rfind(" ", 0, pos) + 1
                    b = text.find(" ", pos)
                    word = text[a : b if b >= 0 else len(text)].strip()
                    raise Fail(
                        f"for {label} with max_tokens={max_tokens} the word {word!r} was cut in "
                        f"half ({text[a:pos]!r} | {text[pos : b if b >= 0 else len(text)]!r}) "
                        "although it fits in a chunk: split at paragraph, sentence or word "
                        "boundaries, and cut a word only when it alone is over the limit"
                    )


def _long_word(chunk_text: Any) -> None:
    text = "see " + "x" * 101 + " end"
    chunks = _chunks(chunk_text, text, 5)
    if any(c == "" for c in chunks):
        raise Fail("chunk_text yielded an empty chunk: skip empty pieces")
    if "".join(chunks) != text:
        raise Fail(
            "a word of 101 characters with max_tokens=5 did not come back whole when the chunks "
            "are joined: cut it into pieces of max_tokens * 4 characters"
        )
    too_big = [c for c in chunks if estimate_tokens(c) > 5]
    if too_big:
        raise Fail(
            f"a word of 101 characters with max_tokens=5 came out as a chunk of "
            f"{estimate_tokens(too_big[0])} tokens: a word longer than a chunk must be cut"
        )


def _empty_and_bad(chunk_text: Any) -> None:
    got = _chunks(chunk_text, "", 10)
    if got:
        raise Fail(f"chunk_text('', 10) yielded {got!r}: empty text yields no chunks")
    cases = [
        (("abc", 0), {}, "max_tokens=0"),
        (("abc", -3), {}, "max_tokens=-3"),
        (("abc def", 4), {"overlap": 4}, "overlap=4 with max_tokens=4"),
    ]
    for args, kw, what in cases:
        try:
            list(itertools.islice(iter(chunk_text(*args, **kw)), 1000))
        except ValueError:
            continue
        raise Fail(f"{what} did not raise ValueError: reject it with a message naming the value")


def _overlap(chunk_text: Any) -> None:
    text = _document()
    for max_tokens, overlap in ((12, 3), (40, 10)):
        chunks = _chunks(chunk_text, text, max_tokens, overlap)
        if not chunks:
            raise Fail("with overlap, chunk_text yielded nothing")
        over = [c for c in chunks if estimate_tokens(c) > max_tokens]
        if over:
            raise Fail(
                f"with max_tokens={max_tokens}, overlap={overlap} a chunk has "
                f"{estimate_tokens(over[0])} tokens: the overlap counts toward the limit"
            )
        prev_start, end = -1, 0
        for i, chunk in enumerate(chunks):
            at = text.find(chunk, prev_start + 1) if chunk else -1
            if at < 0 or at > end:
                raise Fail(
                    f"with overlap={overlap}, chunk {i} ({chunk[:30]!r}) is not the text that "
                    "follows the previous chunk: each chunk must be a piece of the text that "
                    "starts after the previous chunk's start and no later than its end"
                )
            prev_start, end = at, max(end, at + len(chunk))
        if end != len(text):
            raise Fail(f"with overlap={overlap} the chunks stop at character {end} of {len(text)}")


def check_task7(chunk_text: Any, *, budget: float = DEFAULT_BUDGET) -> CheckResult:
    """Check a student's ``chunk_text(text, max_tokens, overlap=0)`` (SPEC "Token limits")."""
    criteria = [
        Criterion(
            "loses no text: the chunks join back to the text", lambda: _no_text_lost(chunk_text)
        ),
        Criterion("every chunk fits in max_tokens", lambda: _within_limit(chunk_text)),
        Criterion("no word cut in half when it fits", lambda: _no_word_cut(chunk_text)),
        Criterion(
            "cuts at a paragraph break, else a sentence end, else a space",
            lambda: _clean_cuts(chunk_text),
        ),
        Criterion(
            "a word longer than the limit is cut (no endless loop)", lambda: _long_word(chunk_text)
        ),
        Criterion(
            "empty text yields nothing; bad max_tokens or overlap raise ValueError",
            lambda: _empty_and_bad(chunk_text),
        ),
        Criterion(
            "with overlap, chunks still cover the text and fit", lambda: _overlap(chunk_text)
        ),
    ]
    return run_check(
        TITLE,
        criteria,
        budget=budget,
        timeout_hint="every pass of your loop must consume some text; cut a word that is longer "
        "than max_tokens on its own",
    )
