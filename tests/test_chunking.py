"""chunk_text / chunk_spans / map_reduce_summarize: exact joins, limits, boundaries, termination."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llm_patterns.chunking import chunk_spans, chunk_text, map_reduce_summarize
from llm_patterns.errors import ContextWindowExceeded
from llm_patterns.tokens import CHARS_PER_TOKEN, estimate_tokens

# ----------------------------------------------------------------------------- the checker


def assert_valid_chunks(
    text: str, spans: list[tuple[int, int]], max_tokens: int, overlap: int
) -> None:
    """Every property chunk_spans promises; raises AssertionError naming the first broken one."""
    if not text:
        assert spans == [], f"empty text gave chunks {spans}"
        return
    assert spans, "non-empty text gave no chunks"
    assert spans[0][0] == 0, f"first chunk starts at {spans[0][0]}"
    assert spans[-1][1] == len(text), f"last chunk ends at {spans[-1][1]}, text has {len(text)}"
    prev_end = 0
    for i, (s, e) in enumerate(spans):
        assert s < e, f"chunk {i} is empty: {(s, e)}"
        assert estimate_tokens(text[s:e]) <= max_tokens, (
            f"chunk {i} has {estimate_tokens(text[s:e])} tokens > {max_tokens}"
        )
        if i:
            assert e > prev_end, f"chunk {i} adds no new text: {(s, e)} after end {prev_end}"
            assert s <= prev_end, f"chunk {i} skips text {prev_end}..{s}"
            assert prev_end - s <= overlap * CHARS_PER_TOKEN, (
                f"chunk {i} overlaps {prev_end - s} chars > {overlap} tokens"
            )
        prev_end = e
    new_parts = [text[(spans[i - 1][1] if i else 0) : e] for i, (_, e) in enumerate(spans)]
    assert "".join(new_parts) == text, "the chunks minus their overlaps do not give back the text"
    # No cut inside a word unless that word is longer than a whole chunk.
    budget = max_tokens * CHARS_PER_TOKEN
    for _, cut in spans[:-1]:
        after_cjk_stop = text[cut - 1] in "\u3002\uff01\uff1f"  # a sentence end with no space
        if not text[cut - 1].isspace() and not text[cut].isspace() and not after_cjk_stop:
            lo = cut
            while lo > 0 and not text[lo - 1].isspace():
                lo -= 1
            hi = cut
            while hi < len(text) and not text[hi].isspace():
                hi += 1
            assert hi - lo > budget, (
                f"word {text[lo:hi]!r} ({hi - lo} chars) cut at {cut} fits a chunk"
            )


def test_checker_rejects_buggy_splitters():
    text = "alpha beta gamma delta epsilon"
    good = chunk_spans(text, 3)
    assert_valid_chunks(text, good, 3, 0)
    lossy = [(s, e - 1 if i == 0 else e) for i, (s, e) in enumerate(good)]  # drops a character
    too_big = [(0, len(text))]
    mid_word = [(0, 8), (8, 16), (16, 24), (24, len(text))]  # "alpha be|ta ..." cut in words
    gap = [(0, 6), (7, len(text))]
    for bad in (lossy, too_big, mid_word, gap, []):
        with pytest.raises(AssertionError):
            assert_valid_chunks(text, bad, 3, 0)


# ----------------------------------------------------------------------------- unit tests


def test_empty_text_yields_nothing():
    assert list(chunk_text("", 10)) == []
    assert chunk_spans("", 10, overlap=3) == []


def test_short_text_is_one_chunk():
    assert list(chunk_text("Hello world.", 10)) == ["Hello world."]


def test_paragraph_break_preferred_over_a_later_sentence_end():
    text = "One two.\n\nThree four. Five six seven eight nine ten"
    chunks = list(chunk_text(text, 7))  # 28 chars: the window also holds "Three four. "
    assert chunks[0] == "One two.\n\n"
    assert "".join(chunks) == text


def test_sentence_end_preferred_over_a_later_space():
    text = "One two. Three four five six"
    chunks = list(chunk_text(text, 4))  # 16 chars: "One two. Three f"
    assert chunks[0] == "One two. "
    assert "".join(chunks) == text


def test_word_boundary_when_no_sentence_end():
    text = "alpha beta gamma delta"
    chunks = list(chunk_text(text, 3))  # 12 chars: "alpha beta g"
    assert chunks == ["alpha beta ", "gamma delta"]


def test_separators_stay_with_the_chunk_before():
    text = "First paragraph here.\n\n\n\nSecond one here."
    chunks = list(chunk_text(text, 7))
    assert chunks[0] == "First paragraph here.\n\n\n\n"
    assert "".join(chunks) == text


def test_a_word_longer_than_a_chunk_is_cut():
    text = "x" * 30
    assert list(chunk_text(text, 2)) == ["x" * 8, "x" * 8, "x" * 8, "x" * 6]


def test_a_word_that_fits_alone_starts_a_fresh_chunk_after_whitespace():
    text = "x" * 8 + "   " + "y" * 6
    chunks = list(chunk_text(text, 2))
    assert chunks == ["x" * 8, "   ", "y" * 6]


def test_whitespace_only_text_joins_back():
    for text in (" ", "\n\n\n", " \t\n\n \r\n " * 20):
        chunks = list(chunk_text(text, 2))
        assert "".join(chunks) == text
        assert all(estimate_tokens(c) <= 2 for c in chunks)


def test_huge_text_is_chunked_lazily():
    text = ("word " * 50 + "end.\n\n") * 5000  # about 1.3 MB
    it = chunk_text(text, 100)
    first = next(it)
    assert estimate_tokens(first) <= 100
    spans = chunk_spans(text, 100)
    assert_valid_chunks(text, spans, 100, 0)


def test_overlap_repeats_the_tail_of_the_previous_chunk_from_a_word_start():
    words = [f"w{i:02d}" for i in range(40)]
    text = " ".join(words)
    spans = chunk_spans(text, 5, overlap=2)  # 20-char chunks, up to 8 chars of overlap
    assert_valid_chunks(text, spans, 5, 2)
    chunks = list(chunk_text(text, 5, overlap=2))
    assert chunks == [text[s:e] for s, e in spans]
    for i in range(1, len(spans)):
        s, prev_end = spans[i][0], spans[i - 1][1]
        assert 0 < prev_end - s <= 8, (i, spans)
        assert text[s - 1] == " " and text[s] == "w", "overlap must start at a word"
        assert chunks[i].startswith(text[s:prev_end]) and chunks[i - 1].endswith(text[s:prev_end])


def test_overlap_never_makes_a_fitting_word_be_cut():
    text = "aa " + "b" * 7 + " " + "c" * 7
    spans = chunk_spans(text, 2, overlap=1)
    assert_valid_chunks(text, spans, 2, 1)
    assert "b" * 7 in [text[s:e].strip() for s, e in spans]


@pytest.mark.parametrize(
    ("max_tokens", "overlap", "needle"),
    [
        (0, 0, "max_tokens"),
        (-3, 0, "-3"),
        (True, 0, "max_tokens"),
        (2.5, 0, "2.5"),
        (5, -1, "overlap"),
        (5, 5, "overlap=5"),
        (5, 9, "max_tokens=5"),
    ],
)
def test_bad_arguments_raise_value_error_naming_them(max_tokens, overlap, needle):
    with pytest.raises(ValueError, match=needle):
        chunk_text("some text", max_tokens, overlap)  # raised at the call, not at next()
    with pytest.raises(ValueError, match=needle):
        chunk_spans("some text", max_tokens, overlap)


def test_text_must_be_a_str():
    with pytest.raises(TypeError, match="bytes"):
        chunk_text(b"abc", 5)


# ----------------------------------------------------------------------------- properties

_PIECES = st.sampled_from(
    [
        "a",
        "bc",
        "word",
        "x",
        " ",
        "  ",
        "\n",
        "\n\n",
        ".",
        ". ",
        "!",
        "?",
        "\t",
        "\r\n",
        "\u3002",
        "\u00e9",
        "\u201d",
        ")",
    ]
)
_RUNS = st.lists(st.tuples(_PIECES, st.integers(1, 80)), max_size=25).map(
    lambda runs: "".join(piece * n for piece, n in runs)
)
TEXTS = st.one_of(st.text(max_size=400), st.text(alphabet=" \n.!?ab\t", max_size=400), _RUNS)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=TEXTS, max_tokens=st.integers(1, 40))
@pytest.mark.timeout(120)
def test_property_no_overlap_joins_back_exactly(text, max_tokens):
    chunks = list(chunk_text(text, max_tokens))
    assert "".join(chunks) == text
    assert all(0 < estimate_tokens(c) <= max_tokens for c in chunks)
    assert len(chunks) <= len(text)  # every chunk adds text: the splitter terminates
    assert_valid_chunks(text, chunk_spans(text, max_tokens), max_tokens, 0)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=TEXTS, data=st.data())
@pytest.mark.timeout(120)
def test_property_overlap_minus_overlaps_joins_back(text, data):
    max_tokens = data.draw(st.integers(1, 40), label="max_tokens")
    overlap = data.draw(st.integers(0, max_tokens - 1), label="overlap")
    spans = chunk_spans(text, max_tokens, overlap)
    assert len(spans) <= len(text)
    assert_valid_chunks(text, spans, max_tokens, overlap)
    assert list(chunk_text(text, max_tokens, overlap)) == [text[s:e] for s, e in spans]


# ----------------------------------------------------------------------------- map-reduce


@dataclass
class FakeResponse:
    text: str
    model: str
    usage: dict
    provider: str = "fake"


class FakeClient:
    """An object with complete(prompt, max_tokens=...) like a provider or ResilientClient."""

    def __init__(self, summary_chars: int = 20) -> None:
        self.prompts: list[str] = []
        self.max_tokens: list[int] = []
        self.summary_chars = summary_chars

    def complete(self, prompt, *, max_tokens=256):
        self.prompts.append(prompt)
        self.max_tokens.append(max_tokens)
        n = len(self.prompts)
        text = f"S{n}:" + "s" * self.summary_chars
        return FakeResponse(
            text, "gpt-4o-mini", {"prompt_tokens": estimate_tokens(prompt), "completion_tokens": 7}
        )


class Recorder:
    """Duck-typed CostTracker: record(model, usage, **labels) -> cost."""

    def __init__(self) -> None:
        self.records: list[tuple[str, dict, dict]] = []

    def record(self, model, usage, **labels):
        self.records.append((model, usage, labels))
        return 0.001 * len(self.records)


DOC = "\n\n".join(f"Paragraph {i}. " + "Some words in a sentence. " * 12 for i in range(30))


def test_map_reduce_with_a_function_counts_calls():
    calls = []

    def summarize(prompt: str) -> str:
        calls.append(prompt)
        return f"summary {len(calls)}"

    result = map_reduce_summarize(DOC, summarize, max_tokens=400)
    assert result.chunks > 3
    assert result.calls == len(calls) == result.chunks + 1
    assert result.summary == f"summary {len(calls)}"
    assert all(estimate_tokens(p) <= 400 for p in calls)
    assert [s.task_id for s in result.steps] == (
        [f"chunk-{i}" for i in range(1, result.chunks + 1)] + ["reduce-1"]
    )
    # every word of the document reached a map prompt
    mapped = "".join(p.split("\n\n", 1)[1] for p in calls[:-1])
    assert mapped == DOC


def test_map_reduce_records_cost_per_chunk():
    client, tracker = FakeClient(), Recorder()
    result = map_reduce_summarize(
        DOC, client, max_tokens=500, output_tokens=64, cost=tracker, dag_id="docs"
    )
    task_ids = [labels["task_id"] for _, _, labels in tracker.records]
    assert task_ids == [s.task_id for s in result.steps]
    assert task_ids[0] == "chunk-1" and task_ids[-1] == "reduce-1"
    assert all(labels["dag_id"] == "docs" for _, _, labels in tracker.records)
    assert all(m == "gpt-4o-mini" for m, _, _ in tracker.records)
    assert [s.cost for s in result.steps] == [0.001 * i for i in range(1, len(task_ids) + 1)]
    assert client.max_tokens == [64] * result.calls
    assert result.responses[-1].text == result.summary


def test_single_chunk_needs_no_reduce():
    client = FakeClient()
    result = map_reduce_summarize("A short note.", client, max_tokens=200)
    assert (result.chunks, result.calls, result.rounds) == (1, 1, 0)


def test_empty_text_makes_no_call():
    client = FakeClient()
    result = map_reduce_summarize("", client, max_tokens=200)
    assert (result.summary, result.chunks, result.calls) == ("", 0, 0)
    assert client.prompts == []


def test_long_summaries_are_reduced_in_several_rounds():
    client = FakeClient(summary_chars=300)  # each summary ~75 tokens
    result = map_reduce_summarize(DOC, client, max_tokens=200, max_rounds=6)
    assert result.rounds >= 2
    assert all(estimate_tokens(p) <= 200 for p in client.prompts)
    assert result.summary == result.steps[-1].text


def test_summaries_that_do_not_shrink_stop_after_max_rounds():
    def echo(prompt: str) -> str:  # a "summary" as long as its input never converges
        return prompt

    with pytest.raises(ContextWindowExceeded, match="reduce rounds"):
        map_reduce_summarize(DOC, echo, max_tokens=300, max_rounds=3)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"map_prompt": "no placeholder"}, "map_prompt"),
        ({"reduce_prompt": "none"}, "reduce_prompt"),
        ({"max_tokens": 5}, "max_tokens=5"),
        ({"max_rounds": 0}, "max_rounds"),
        ({"output_tokens": 0}, "output_tokens"),
    ],
)
def test_map_reduce_bad_arguments(kwargs, needle):
    args = {"max_tokens": 300, **kwargs}
    with pytest.raises(ValueError, match=needle):
        map_reduce_summarize(DOC, lambda p: "s", **args)


def test_map_reduce_rejects_a_non_callable_and_a_non_text_answer():
    with pytest.raises(TypeError, match="summarize"):
        map_reduce_summarize(DOC, 42, max_tokens=300)
    with pytest.raises(TypeError, match="int"):
        map_reduce_summarize(DOC, lambda p: 3, max_tokens=300)
