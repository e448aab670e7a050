"""context_window / register_context_window / check_fits / token counting."""

from __future__ import annotations

import hashlib
import sys
import types

import pytest

from llm_patterns import context as ctx
from llm_patterns.context import (
    ContextLimits,
    check_fits,
    context_window,
    count_prompt_tokens,
    estimate_messages_tokens,
    prompt_text,
    register_context_window,
)
from llm_patterns.errors import ContextWindowExceeded, InvalidRequestError
from llm_patterns.tokens import estimate_tokens


@pytest.fixture(autouse=True)
def _clean_state():
    ctx.exact_counter.cache_clear()
    ctx._encodings.clear()
    yield
    for name in ("my-finetune", "gpt-4o", "acme/gpt-4o"):
        ctx._unregister(name)
    ctx.exact_counter.cache_clear()
    ctx._encodings.clear()


# ----------------------------------------------------------------------------- lookups

DOCUMENTED = {  # provider model pages (see the table in context.py)
    "gpt-4o": (128_000, 16_384),
    "gpt-4o-mini": (128_000, 16_384),
    "o3": (200_000, 100_000),
    "claude-sonnet-4-5": (200_000, 64_000),
    "claude-opus-4-1": (200_000, 32_000),
    "claude-haiku-4-5": (200_000, 64_000),
    "gemini-2.5-pro": (1_048_576, 65_536),
    "gemini-2.5-flash": (1_048_576, 65_536),
}


@pytest.mark.parametrize("model", sorted(DOCUMENTED))
def test_known_models(model):
    window, output = DOCUMENTED[model]
    assert context_window(model) == ContextLimits(window, output)


def test_gpt_4_1_takes_the_smaller_of_the_two_sources():
    limits = context_window("gpt-4.1")
    genai = ctx._from_genai_prices("gpt-4.1", "openai")
    expected = min(1_047_576, genai[1]) if genai else 1_047_576
    assert limits == ContextLimits(expected, 32_768)
    assert 1_000_000 <= limits.context_window <= 1_047_576


def test_table_alone_when_genai_prices_is_unavailable(monkeypatch):
    monkeypatch.setattr(ctx, "_from_genai_prices", lambda name, provider: None)
    limits = context_window("gpt-4.1")
    assert (limits.context_window, limits.max_output_tokens, limits.source) == (
        1_047_576,
        32_768,
        "table",
    )
    with pytest.raises(KeyError):
        context_window("o3-mini")  # only genai-prices knows it


def test_genai_prices_only_model_has_no_output_cap():
    limits = context_window("o3-mini")
    assert limits.source == "genai-prices"
    assert limits.max_output_tokens is None
    assert limits.context_window == ctx._from_genai_prices("o3-mini", "openai")[1]


@pytest.mark.parametrize(
    ("name", "base"),
    [
        ("gpt-4o-2024-08-06", "gpt-4o"),
        ("openai/gpt-4o", "gpt-4o"),
        ("OpenAI/GPT-4o", "gpt-4o"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("ft:gpt-4o-mini-2024-07-18:acme::x1", "gpt-4o-mini"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("anthropic/claude-haiku-4-5", "claude-haiku-4-5"),
        ("models/gemini-2.5-pro", "gemini-2.5-pro"),
        ("gemini-2.5-pro-preview-06-05", "gemini-2.5-pro"),
        ("openrouter/google/gemini-2.5-flash", "gemini-2.5-flash"),
        ("gpt-4o-2099-01-01", "gpt-4o"),
    ],
)
def test_dated_and_prefixed_names(name, base):
    assert context_window(name) == context_window(base)


def test_similar_names_are_not_confused():
    assert context_window("gpt-4o-mini") == ContextLimits(128_000, 16_384)
    assert context_window("gemini-2.5-flash-lite").context_window >= 1_000_000
    assert context_window("claude-3-5-haiku").max_output_tokens == 8_192


@pytest.mark.parametrize("model", ["gpt-4p", "claude-unknown-9", "totally-made-up-model"])
def test_unknown_model_raises_key_error_naming_it(model):
    with pytest.raises(KeyError) as info:
        context_window(model)
    assert model in str(info.value)
    assert "register_context_window" in str(info.value)


def test_unknown_model_error_suggests_close_matches():
    with pytest.raises(KeyError, match=r"did you mean.*gpt-4o"):
        context_window("gpt-4p")


def test_bad_model_argument():
    for bad in ("", "   ", None, 3):
        with pytest.raises(ValueError, match="model"):
            context_window(bad)


def test_register_overrides_every_source_and_matches_like_the_rest():
    register_context_window("my-finetune", 8_000, 1_000)
    assert context_window("my-finetune") == ContextLimits(8_000, 1_000)
    assert context_window("acme/my-finetune").source == "override"
    register_context_window("gpt-4o", 64_000)
    assert context_window("openai/gpt-4o-2024-08-06") == ContextLimits(64_000, None)
    ctx._unregister("gpt-4o")
    assert context_window("gpt-4o") == ContextLimits(128_000, 16_384)


def test_register_prefixed_name_only_applies_to_that_prefix():
    register_context_window("acme/gpt-4o", 32_000, 4_000)
    assert context_window("acme/gpt-4o") == ContextLimits(32_000, 4_000)
    assert context_window("gpt-4o") == ContextLimits(128_000, 16_384)


@pytest.mark.parametrize(
    ("window", "output", "needle"),
    [
        (0, None, "context_window"),
        (-5, None, "-5"),
        (1000, 0, "max_output_tokens"),
        (1000, 2000, "2000"),
        (True, None, "context_window"),
        (1000.0, None, "1000.0"),
    ],
)
def test_bad_limits(window, output, needle):
    with pytest.raises(ValueError, match=needle):
        register_context_window("my-finetune", window, output)
    with pytest.raises(KeyError):
        context_window("my-finetune")  # nothing was registered


def test_limits_are_frozen_and_source_does_not_affect_equality():
    limits = ContextLimits(100, 10, source="table")
    assert limits == ContextLimits(100, 10)
    with pytest.raises(AttributeError):
        limits.context_window = 5


# ----------------------------------------------------------------------------- counting


def test_string_is_a_single_prompt():
    assert prompt_text("hello") == "hello"
    assert estimate_messages_tokens("x" * 41) == 11


def test_messages_are_joined_by_newlines_like_the_mock_and_the_limiter():
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Summarize this document please."},
    ]
    assert prompt_text(messages) == "Be brief.\nSummarize this document please."
    assert estimate_messages_tokens(messages) == estimate_tokens(
        "Be brief.\nSummarize this document please."
    )


def test_text_parts_are_counted():
    messages = [
        {
            "role": "user",
            "content": [{"type": "text", "text": "a" * 40}, {"type": "text", "text": "b" * 40}],
        }
    ]
    assert estimate_messages_tokens(messages) >= 20
    assert "a" * 40 in prompt_text(messages) and "b" * 40 in prompt_text(messages)


@pytest.mark.parametrize("kind", ["image_url", "input_audio", "image", "file"])
def test_non_text_parts_are_rejected_not_dropped(kind):
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look:"},
                {"type": kind, kind: {"url": "data:..."}},
            ],
        }
    ]
    with pytest.raises(ValueError, match=kind):
        estimate_messages_tokens(messages)
    with pytest.raises(ValueError, match=kind):
        check_fits("gpt-4o", messages, 100)


def test_bad_messages():
    with pytest.raises(TypeError):
        prompt_text({"role": "user", "content": "a dict, not a list"})
    with pytest.raises(TypeError, match="messages\\[1\\]"):
        prompt_text([{"role": "user", "content": "ok"}, "not a message"])


# ----------------------------------------------------------------------------- check_fits


def test_check_fits_returns_the_estimate():
    messages = [{"role": "user", "content": "x" * 400}]
    assert check_fits("gpt-4o", messages, 1000) == 100
    assert check_fits("gpt-4o", "x" * 400, 1000) == 100


def test_check_fits_boundary_is_exact():
    limits = ContextLimits(1_000, 500)
    assert check_fits("m", "x" * 2_000, 500, limits=limits) == 500  # 500 + 500 == 1000 fits
    with pytest.raises(ContextWindowExceeded):
        check_fits("m", "x" * 2_001, 500, limits=limits)  # 501 + 500


def test_check_fits_names_every_number():
    prompt = "x" * 4 * 127_000  # 127,000 tokens by the estimate
    with pytest.raises(ContextWindowExceeded) as info:
        check_fits("gpt-4o", prompt, 2_000, provider="openai")
    err = info.value
    text = str(err)
    for needle in ("gpt-4o", "127000", "2000", "129000", "128000", "openai"):
        assert needle in text, (needle, text)
    assert (err.model, err.prompt_tokens, err.max_tokens) == ("gpt-4o", 127_000, 2_000)
    assert err.limit.context_window == 128_000 and err.provider == "openai"
    assert not isinstance(err, InvalidRequestError)  # a larger window may answer


def test_check_fits_output_cap():
    with pytest.raises(
        ContextWindowExceeded, match=r"max_tokens 20000 exceeds the output limit of 16384"
    ):
        check_fits("gpt-4o", "short prompt", 20_000)
    # a model with no known output cap is only checked against its window
    assert check_fits("o3-mini", "short prompt", 150_000) == estimate_tokens("short prompt")


def test_larger_window_model_accepts_what_a_smaller_refuses():
    prompt = "y" * 4 * 150_000
    with pytest.raises(ContextWindowExceeded):
        check_fits("gpt-4o", prompt, 1_000)
    assert check_fits("gemini-2.5-flash", prompt, 1_000) == 150_000


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, None])
def test_check_fits_bad_max_tokens(bad):
    with pytest.raises(ValueError, match="max_tokens"):
        check_fits("gpt-4o", "hi", bad)


def test_check_fits_unknown_model_is_a_key_error_unless_limits_given():
    with pytest.raises(KeyError, match="no-such-model"):
        check_fits("no-such-model", "hi", 10)
    assert check_fits("no-such-model", "hi", 10, limits=ContextLimits(100, 50)) == 1


def test_check_fits_custom_counter():
    assert check_fits("gpt-4o", "a b c", 10, count_tokens=lambda text: len(text.split())) == 3


# ----------------------------------------------------------------------------- exact tokenizer hook


def _fake_tiktoken(calls: list[str], *, fail: bool = False) -> types.ModuleType:
    module = types.ModuleType("tiktoken")

    class Encoding:
        def encode(self, text, disallowed_special=()):
            return list(text)  # one "token" a character: easy to tell from the estimate

    def encoding_name_for_model(name):
        if name.startswith("gpt-4o"):
            return "o200k_base"
        raise KeyError(name)

    def get_encoding(name):
        calls.append(name)
        if fail:
            raise OSError("cannot download")
        return Encoding()

    module.encoding_name_for_model = encoding_name_for_model
    module.get_encoding = get_encoding
    return module


def test_no_tiktoken_falls_back_to_the_estimate(monkeypatch):
    monkeypatch.setitem(sys.modules, "tiktoken", None)  # import tiktoken -> ImportError
    assert count_prompt_tokens("gpt-4o", "x" * 41) == 11


def test_tiktoken_is_not_asked_to_download(monkeypatch, tmp_path):
    calls: list[str] = []
    monkeypatch.setitem(sys.modules, "tiktoken", _fake_tiktoken(calls))
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))  # empty cache: would need the network
    assert count_prompt_tokens("gpt-4o", "x" * 41) == 11
    assert calls == []


def test_tiktoken_with_a_cached_file_counts_exactly(monkeypatch, tmp_path):
    calls: list[str] = []
    monkeypatch.setitem(sys.modules, "tiktoken", _fake_tiktoken(calls))
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    url = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
    (tmp_path / hashlib.sha1(url.encode()).hexdigest()).write_bytes(b"cached")
    assert count_prompt_tokens("openai/gpt-4o-2024-08-06", "x" * 41) == 41
    assert check_fits("gpt-4o", "x" * 41, 10) == 41
    assert estimate_messages_tokens("x" * 41) == 11  # what the limiter and mock charge: unchanged
    assert count_prompt_tokens("claude-sonnet-4-5", "x" * 41) == 11  # tiktoken is not Claude's
    assert calls == ["o200k_base"]  # loaded once, cached


def test_a_failing_tiktoken_falls_back_silently(monkeypatch, tmp_path):
    calls: list[str] = []
    monkeypatch.setitem(sys.modules, "tiktoken", _fake_tiktoken(calls, fail=True))
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    url = "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken"
    (tmp_path / hashlib.sha1(url.encode()).hexdigest()).write_bytes(b"corrupt")
    assert count_prompt_tokens("gpt-4o", "x" * 41) == 11
    assert calls == ["o200k_base"]
