"""Pricing, usage shapes and PriceTable (mapping and the bundled genai-prices snapshot)."""

from __future__ import annotations

import dataclasses
import logging
import socket
from decimal import Decimal
from types import SimpleNamespace

import pytest

from llm_patterns.pricing import (
    PriceTable,
    Pricing,
    TokenCounts,
    UnknownModelError,
    normalize_usage,
)

D = Decimal


# --------------------------------------------------------------------------- Pricing

def test_pricing_converts_to_exact_decimal():
    p = Pricing(0.15, 0.6, 0.075)
    assert p.input_per_million == D("0.15")  # from str(float), not the binary float
    assert p.output_per_million == D("0.6")
    assert p.cached_input_per_million == D("0.075")
    assert Pricing("2.50", 10).output_per_million == D(10)
    assert Pricing(D("3"), D("15")).cached_input_per_million is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.input_per_million = D(1)  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs, exc, words",
    [
        ({"input_per_million": -1, "output_per_million": 1}, ValueError, "input_per_million"),
        ({"input_per_million": 1, "output_per_million": -0.5}, ValueError, "output_per_million"),
        ({"input_per_million": 1, "output_per_million": 1, "cached_input_per_million": -1},
         ValueError, "cached_input_per_million"),
        ({"input_per_million": float("nan"), "output_per_million": 1}, ValueError, "finite"),
        ({"input_per_million": "abc", "output_per_million": 1}, ValueError, "abc"),
        ({"input_per_million": True, "output_per_million": 1}, TypeError, "input_per_million"),
        ({"input_per_million": None, "output_per_million": 1}, TypeError, "input_per_million"),
    ],
)
def test_pricing_rejects_bad_prices(kwargs, exc, words):
    with pytest.raises(exc, match=words):
        Pricing(**kwargs)


def test_cost_is_per_million_tokens_not_per_thousand():
    assert Pricing(1, 1).cost({"prompt_tokens": 1000, "completion_tokens": 0}) == D("0.001")
    assert Pricing(1, 2).cost({"prompt_tokens": 1_000_000, "completion_tokens": 1_000_000}) == 3


def test_openai_cached_tokens_are_a_subset_of_prompt():
    p = Pricing(2.5, 10, 1.25)
    usage = {"prompt_tokens": 1000, "completion_tokens": 500,
             "prompt_tokens_details": {"cached_tokens": 200}}
    # 800 uncached x 2.5 + 200 cached x 1.25 + 500 out x 10 = 7250 per million
    assert p.cost(usage) == D("0.00725")
    # no cached price: cached tokens pay the input price
    assert Pricing(2.5, 10).cost(usage) == D("0.0075")


def test_anthropic_input_tokens_exclude_cache_reads_and_writes():
    p = Pricing(3, 15, 0.3, cache_write_per_million=3.75)
    usage = {"input_tokens": 500, "output_tokens": 100,
             "cache_read_input_tokens": 300, "cache_creation_input_tokens": 200}
    # 500 x 3 + 300 x 0.3 + 200 x 3.75 + 100 x 15 = 3840 per million
    assert p.cost(usage) == D("0.00384")
    counts = normalize_usage(usage)
    assert counts == TokenCounts(1000, 100, 300, 200)
    # without a cache-write price, writes pay the input price
    assert Pricing(3, 15, 0.3).cost(usage) == D("0.00369")


def test_same_request_in_both_shapes_costs_the_same():
    p = Pricing(3, 15, 0.3)
    openai = {"prompt_tokens": 1500, "completion_tokens": 40,
              "prompt_tokens_details": {"cached_tokens": 1000}}
    anthropic = {"input_tokens": 500, "output_tokens": 40, "cache_read_input_tokens": 1000}
    assert p.cost(openai) == p.cost(anthropic) == D("0.00240")


def test_usage_like_objects():
    p = Pricing(2.5, 10, 1.25)
    ours = SimpleNamespace(prompt_tokens=1000, completion_tokens=500, cached_tokens=200)
    assert p.cost(ours) == D("0.00725")
    # SDK-style objects: attributes, nested details, None where absent
    openai_like = SimpleNamespace(prompt_tokens=1000, completion_tokens=500, total_tokens=1500,
                                  prompt_tokens_details=SimpleNamespace(cached_tokens=200))
    assert p.cost(openai_like) == D("0.00725")
    anthropic_like = SimpleNamespace(input_tokens=800, output_tokens=500,
                                     cache_read_input_tokens=200, cache_creation_input_tokens=None)
    assert normalize_usage(anthropic_like) == TokenCounts(1000, 500, 200, 0)


@pytest.mark.slow  # importing the SDKs takes seconds
def test_real_sdk_usage_models():
    from anthropic.types import Usage as AnthropicUsage
    from openai.types import CompletionUsage

    sdk = CompletionUsage(prompt_tokens=1000, completion_tokens=500, total_tokens=1500,
                          prompt_tokens_details={"cached_tokens": 200})
    assert Pricing(2.5, 10, 1.25).cost(sdk) == D("0.00725")
    a = AnthropicUsage(input_tokens=800, output_tokens=500, cache_read_input_tokens=200,
                       cache_creation_input_tokens=None)
    assert normalize_usage(a) == TokenCounts(1000, 500, 200, 0)


def test_other_provider_shapes():
    # OpenAI Responses API: input_tokens INCLUDES cached, like chat completions
    responses = {"input_tokens": 1000, "output_tokens": 500,
                 "input_tokens_details": {"cached_tokens": 200}}
    assert normalize_usage(responses) == TokenCounts(1000, 500, 200)
    gemini = {"promptTokenCount": 1000, "candidatesTokenCount": 300, "thoughtsTokenCount": 200,
              "cachedContentTokenCount": 200}
    assert normalize_usage(gemini) == TokenCounts(1000, 500, 200)
    # None details (as the SDKs send) count as zero
    assert normalize_usage({"prompt_tokens": 5, "completion_tokens": None,
                            "prompt_tokens_details": None}) == TokenCounts(5, 0, 0)


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": -1, "completion_tokens": 0},
        {"prompt_tokens": 10, "completion_tokens": -5},
        {"input_tokens": 10, "output_tokens": 1, "cache_read_input_tokens": -1},
        {"prompt_tokens": 10, "completion_tokens": 0, "prompt_tokens_details": {"cached_tokens": 11}},
        SimpleNamespace(prompt_tokens=1, completion_tokens=1, cached_tokens=-3),
    ],
)
def test_negative_or_impossible_counts_raise_value_error(usage):
    with pytest.raises(ValueError, match="tokens"):
        normalize_usage(usage)


def test_unknown_shape_raises_type_error_naming_the_keys():
    with pytest.raises(TypeError, match="tokens_in, tokens_out"):
        normalize_usage({"tokens_in": 1, "tokens_out": 2})
    with pytest.raises(TypeError, match="SimpleNamespace with foo"):
        normalize_usage(SimpleNamespace(foo=1))
    with pytest.raises(TypeError, match="usage"):
        normalize_usage(None)
    with pytest.raises(TypeError, match="prompt_tokens must be an int"):
        normalize_usage({"prompt_tokens": "12", "completion_tokens": 1})
    with pytest.raises(TypeError, match="must be an int"):
        normalize_usage({"prompt_tokens": True, "completion_tokens": 1})


def test_pricing_from_dict():
    assert Pricing.from_dict({"input": 1, "output": "2", "cached_input": 0.5}) == Pricing(1, 2, 0.5)
    with pytest.raises(ValueError, match="unknown price key 'inptu'"):
        Pricing.from_dict({"inptu": 1, "output": 2})
    with pytest.raises(ValueError, match="missing output"):
        Pricing.from_dict({"input": 1})


# --------------------------------------------------------------------------- PriceTable: mapping

PRICES = {"gpt-4o": Pricing(2.5, 10, 1.25), "cheap": {"input": 0.1, "output": 0.4}}


def test_mapping_table_lookups():
    table = PriceTable(PRICES)
    assert table["gpt-4o"] == Pricing(2.5, 10, 1.25)
    assert table["cheap"] == Pricing("0.1", "0.4")
    assert table["GPT-4o"] == table["gpt-4o"]  # model names are case-insensitive
    assert "gpt-4o" in table and "nope" not in table and 42 not in table
    assert table.get("nope") is None
    assert table.get("nope", Pricing(1, 1)) == Pricing(1, 1)
    assert table.cost("cheap", {"prompt_tokens": 1_000_000, "completion_tokens": 500_000}) == D("0.3")
    assert table.source == "mapping"


def test_unknown_model_is_a_key_error_with_suggestions():
    table = PriceTable(PRICES)
    with pytest.raises(KeyError) as info:
        table["gpt-4"]
    assert isinstance(info.value, UnknownModelError)
    assert "'gpt-4'" in str(info.value) and "did you mean 'gpt-4o'" in str(info.value)
    with pytest.raises(KeyError, match="zzz"):
        table.cost("zzz", {"prompt_tokens": 1, "completion_tokens": 1})


def test_default_prices_unknown_models_and_warns_once(caplog):
    table = PriceTable(PRICES, default={"input": 5, "output": 20})
    with caplog.at_level(logging.WARNING, logger="llm_patterns.pricing"):
        assert table["mystery"] == Pricing(5, 20)
        assert table.cost("mystery", {"prompt_tokens": 1_000_000, "completion_tokens": 0}) == 5
    warnings = [r for r in caplog.records if "mystery" in r.getMessage()]
    assert len(warnings) == 1 and "default" in warnings[0].getMessage()
    assert "mystery" not in table  # the default is not the model's own price
    assert table["gpt-4o"] == Pricing(2.5, 10, 1.25)


def test_bad_mappings():
    with pytest.raises(TypeError, match="mapping"):
        PriceTable([("a", Pricing(1, 1))])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"mapping\['m'\]"):
        PriceTable({"m": 3})
    with pytest.raises(ValueError, match="input_per_million"):
        PriceTable({"m": {"input": -1, "output": 1}})
    with pytest.raises(TypeError, match="model must be a str"):
        PriceTable(PRICES)[None]  # type: ignore[index]


# --------------------------------------------------------------------------- genai-prices

@pytest.fixture(scope="module")
def live_table():
    return PriceTable()


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*a, **kw):
        raise AssertionError("PriceTable must stay offline")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _gp_usage(counts: TokenCounts):
    from genai_prices import Usage

    return Usage(input_tokens=counts.prompt_tokens, cache_read_tokens=counts.cached_tokens,
                 cache_write_tokens=counts.cache_write_tokens,
                 cache_write_1h_tokens=counts.cache_write_1h_tokens,
                 output_tokens=counts.completion_tokens)


USAGES = [
    TokenCounts(1000, 500),
    TokenCounts(12_345, 678, 2_000),
    TokenCounts(150_000, 4_000, 50_000, 10_000),
    TokenCounts(150_000, 4_000, 50_000, 10_000, 4_000),  # 4k of the writes with a 1-hour TTL
    TokenCounts(300_000, 1_000, 100_000),  # crosses the 200k long-context tier where there is one
    TokenCounts(200_000, 10),               # exactly at the threshold: still the base tier
]


@pytest.mark.parametrize("model", ["gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5", "claude-opus-4-1",
                                   "gemini-2.5-pro", "gemini-2.5-flash"])
def test_genai_prices_costs_match_calc_price(live_table, no_network, model):
    from genai_prices import calc_price

    for counts in USAGES:
        expected = calc_price(_gp_usage(counts), model).total_price
        assert live_table.cost(model, counts) == expected, (model, counts)


def test_genai_prices_pricing_is_the_base_tier(live_table, no_network):
    assert live_table["gpt-4o"] == Pricing("2.5", "10", "1.25")
    sonnet = live_table["claude-sonnet-4-5"]
    assert sonnet == Pricing(3, 15, "0.3", cache_write_per_million="3.75",
                             cache_write_1h_per_million=6)
    assert live_table["gemini-2.5-pro"] == Pricing("1.25", "10", "0.125")
    # the research report's check: 300k in (100k cached) + 1k out on the long-context tier
    big = {"prompt_tokens": 300_000, "completion_tokens": 1_000,
           "prompt_tokens_details": {"cached_tokens": 100_000}}
    assert live_table.cost("claude-sonnet-4-5", big) == D("1.2825")
    assert sonnet.cost(big) == D("0.645")  # what a base-tier-only table would wrongly charge
    assert live_table.cost("gpt-4o", big) == D("0.635")
    assert live_table.cost("gemini-2.5-pro", big) == D("0.540")
    assert live_table.source.startswith("genai-prices ")


def test_genai_prices_aliases_and_prefixes(live_table, no_network):
    assert live_table["claude-sonnet-4.5"] == live_table["claude-sonnet-4-5"]
    assert live_table["claude-sonnet-4-5-20250929"] == live_table["claude-sonnet-4-5"]
    assert live_table["gpt-4o-2024-08-06"] == live_table["gpt-4o"]
    assert live_table["openai/gpt-4o"] == live_table["gpt-4o"]
    assert live_table["models/gemini-2.5-pro"] == live_table["gemini-2.5-pro"]
    assert "gpt-4o" in live_table and "not-a-model-xyz" not in live_table


def test_genai_prices_unknown_model(live_table, no_network):
    with pytest.raises(KeyError, match="did you mean 'gpt-4o'"):
        live_table["gpt-4oo"]
    with pytest.raises(KeyError, match="not-a-model-xyz"):
        live_table.cost("not-a-model-xyz", {"prompt_tokens": 1, "completion_tokens": 1})
    fallback = PriceTable(default=Pricing(100, 100))
    assert fallback["not-a-model-xyz"] == Pricing(100, 100)


def test_lookups_are_cached(monkeypatch):
    from genai_prices import data_snapshot

    calls = []
    real = data_snapshot.DataSnapshot.find_provider_model

    def counting(self, *a, **kw):
        calls.append(a[0])
        return real(self, *a, **kw)

    monkeypatch.setattr(data_snapshot.DataSnapshot, "find_provider_model", counting)
    table = PriceTable()
    for _ in range(50):
        table.cost("gpt-4o", {"prompt_tokens": 10, "completion_tokens": 10})
        table["gpt-4o"]
    assert calls == ["gpt-4o"]


# --------------------------------------------------------------------------- usage as billed


def test_cache_writes_on_the_provider_path_pay_the_cache_write_price():
    """Issue 15: a ``Usage`` (what providers return) with a 100k-token cache write was priced
    as plain input, 19.6 % under the bill."""
    from llm_patterns.response import Usage

    p = Pricing(3, 15, "0.3", cache_write_per_million="3.75")
    usage = Usage.from_anthropic({"input_tokens": 2_000, "output_tokens": 500,
                                  "cache_creation_input_tokens": 100_000})
    billed = D(2_000 * 3 + 100_000 * D("3.75") + 500 * 15) / 1_000_000
    assert p.cost(usage) == billed == D("0.3885")
    as_input = D(102_000 * 3 + 500 * 15) / 1_000_000  # the old, wrong price
    assert as_input < billed and (billed - as_input) / billed > D("0.19")
    assert PriceTable({"m": p}).cost("m", usage) == billed  # the table's path too


def test_one_hour_cache_writes_pay_the_one_hour_price():
    from llm_patterns.response import Usage

    p = Pricing(1, 5, "0.1", cache_write_per_million="1.25", cache_write_1h_per_million=2)
    raw = {"input_tokens": 1_000, "output_tokens": 0, "cache_creation_input_tokens": 10_000,
           "cache_creation": {"ephemeral_5m_input_tokens": 6_000,
                              "ephemeral_1h_input_tokens": 4_000}}
    # 1000 x 1 + 6000 x 1.25 + 4000 x 2 = 16,500 per million
    assert p.cost(raw) == p.cost(Usage.from_anthropic(raw)) == D("0.0165")
    assert normalize_usage(raw) == TokenCounts(11_000, 0, 0, 10_000, 4_000)
    # only the split given: the writes are its sum
    split_only = {"input_tokens": 1_000, "output_tokens": 0,
                  "cache_creation": {"ephemeral_5m_input_tokens": 6_000,
                                     "ephemeral_1h_input_tokens": 4_000}}
    assert p.cost(split_only) == D("0.0165")
    # no 1-hour price known: the 5-minute write price, the best known
    assert Pricing(1, 5, cache_write_per_million="1.25").cost(raw) == D("0.0135")
    with pytest.raises(ValueError, match="1-hour"):
        TokenCounts(100, 0, 0, 10, 11)


def test_one_hour_writes_match_genai_prices(live_table, no_network):
    from genai_prices import calc_price

    counts = TokenCounts(50_000, 1_000, 10_000, 20_000, 15_000)
    for model in ("claude-haiku-4-5", "claude-sonnet-4-5"):
        assert live_table[model].cache_write_1h_per_million is not None
        assert live_table.cost(model, counts) == calc_price(_gp_usage(counts), model).total_price


def test_reasoning_tokens_are_billed_as_output():
    from llm_patterns.response import Usage

    usage = Usage.from_openai({"prompt_tokens": 100, "completion_tokens": 1_100,
                               "completion_tokens_details": {"reasoning_tokens": 1_000}})
    assert usage.reasoning_tokens == 1_000
    assert Pricing(1, 10).cost(usage) == D(100 + 1_100 * 10) / 1_000_000


# --------------------------------------------------------------------------- dated snapshots


@pytest.mark.parametrize("dated, family", [
    ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
    ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
    ("claude-3-5-haiku@20241022", "claude-3-5-haiku"),
    ("gpt-4-0613", "gpt-4"),
    ("gpt-3.5-turbo-0125", "gpt-3.5-turbo"),
])
def test_a_mapping_prices_a_dated_snapshot_as_its_family(dated, family, caplog):
    from llm_patterns.pricing import model_family

    assert model_family(dated) == family
    table = PriceTable({family: Pricing(1, 2)})
    with caplog.at_level(logging.INFO, logger="llm_patterns.pricing"):
        assert table[dated] == Pricing(1, 2)
        assert dated in table
    assert any(dated in r.getMessage() and family in r.getMessage() for r in caplog.records)


def test_a_listed_dated_name_keeps_its_own_price_and_non_dates_are_not_stripped():
    from llm_patterns.pricing import model_family

    table = PriceTable({"gpt-4o-mini": Pricing(1, 1), "gpt-4o-mini-2024-07-18": Pricing(9, 9)})
    assert table["gpt-4o-mini-2024-07-18"] == Pricing(9, 9)
    for name in ("gpt-4o-mini", "o3-mini", "model-1234", "gpt-4-1106-preview", "gpt-4-1399"):
        assert model_family(name) is None, name
    with pytest.raises(KeyError):
        PriceTable({"gpt-4o": Pricing(1, 1)})["gpt-4o-mini-2024-07-18"]  # another family


def test_the_model_cache_is_bounded():
    from llm_patterns import pricing

    table = PriceTable({"m": Pricing(1, 1)}, default=Pricing(2, 2))
    logging.getLogger("llm_patterns.pricing").disabled = True
    try:
        for i in range(pricing._MODEL_CACHE_SIZE * 3):
            table.cost(f"server-said-{i}", {"prompt_tokens": 1, "completion_tokens": 1})
    finally:
        logging.getLogger("llm_patterns.pricing").disabled = False
    assert len(table._cache) <= pricing._MODEL_CACHE_SIZE
