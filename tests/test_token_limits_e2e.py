"""Token limits end to end on the mock: chunk, summarize, reduce within budget; skip small windows."""

from __future__ import annotations

import random
from decimal import Decimal

import pytest

from llm_patterns import (
    CircuitBreaker,
    ContextWindowExceeded,
    CostTracker,
    MockLLMServer,
    OpenAIProvider,
    Pricing,
    ResilientClient,
    RetryPolicy,
    VirtualClock,
    check_fits,
    map_reduce_summarize,
)
from llm_patterns.context import register_context_window
from llm_patterns.tokens import estimate_tokens

WINDOW = 2_000
register_context_window("e2e-small", WINDOW, max_output_tokens=500)
register_context_window("e2e-large", 200_000, max_output_tokens=8_000)
PRICES = {"e2e-small": Pricing(0.5, 1.5), "e2e-large": Pricing(3.0, 15.0)}


def _document(tokens: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    words = ("revenue", "shipment", "delay", "customer", "invoice", "forecast", "incident")
    paragraphs: list[str] = []
    while estimate_tokens("\n\n".join(paragraphs)) < tokens:
        sentences = [" ".join(rng.choice(words) for _ in range(rng.randint(6, 14))).capitalize()
                     + "." for _ in range(rng.randint(3, 6))]
        paragraph = " ".join(sentences)
        paragraphs.append(paragraph)
    return "\n\n".join(paragraphs)


def _client(clock, budget):
    small = MockLLMServer(seed=0, clock=clock, context_window=WINDOW, model="e2e-small")
    large = MockLLMServer(seed=1, clock=clock, model="e2e-large")
    providers = [
        OpenAIProvider("primary", "e2e-small", base_url="http://mock.llm/v1", api_key="test-key",
                       client=small.client(), clock=clock),
        OpenAIProvider("secondary", "e2e-large", base_url="http://mock.llm/v1",
                       api_key="test-key", client=large.client(), clock=clock),
    ]
    cost = CostTracker(PRICES, budget=budget, hard_limit=True, clock=clock)
    client = ResilientClient(
        providers, cost=cost, clock=clock,
        retry=RetryPolicy(max_attempts=3, clock=clock, rng=random.Random(0)),
        breakers={p.name: CircuitBreaker(p.name, clock=clock) for p in providers},
    )
    return client, small, large


def test_document_three_windows_long_is_chunked_summarized_and_reduced_within_budget():
    clock = VirtualClock()
    client, small, large = _client(clock, budget=0.05)
    document = _document(3 * WINDOW)
    assert estimate_tokens(document) >= 3 * WINDOW
    with pytest.raises(ContextWindowExceeded):  # as one request it cannot fit the primary
        check_fits("e2e-small", [{"role": "user", "content": document}], 300)

    result = map_reduce_summarize(document, client, max_tokens=WINDOW - 400, output_tokens=300,
                                  dag_id="docs")
    assert result.chunks >= 3 and result.rounds >= 1 and result.summary
    assert result.calls == result.chunks + sum(s.task_id.startswith("reduce") for s in result.steps)
    # every call fit the primary's window, so the primary answered all of them
    assert {r.provider for r in result.responses} == {"primary"}
    assert large.stats["requests"] == 0 and small.stats["by_status"] == {200: result.calls}
    by_task = client.cost.by_task()
    assert set(by_task) == {("docs", s.task_id) for s in result.steps}  # cost per chunk
    assert sum(by_task.values()) == client.cost.total <= Decimal("0.05")


def test_request_too_large_for_the_primary_goes_to_the_larger_window_without_calling_it():
    clock = VirtualClock()
    client, small, large = _client(clock, budget=1.0)
    response = client.complete(_document(3 * WINDOW, seed=1), max_tokens=300)
    assert response.provider == "secondary" and response.fallback_used
    assert small.stats["requests"] == 0
    assert large.stats["requests"] == 1


def test_the_mock_answers_context_length_exceeded_when_the_check_is_off():
    """Without the local check, the request reaches the primary, fails there, then falls back."""
    clock = VirtualClock()
    client, small, _large = _client(clock, budget=1.0)
    unchecked = ResilientClient(client.providers, cost=client.cost, clock=clock,
                                check_context=False)
    response = unchecked.complete(_document(3 * WINDOW, seed=2), max_tokens=300)
    assert response.provider == "secondary"
    assert small.stats["by_status"] == {400: 1}  # paid nothing, but a round trip was wasted


def test_budget_too_small_for_the_whole_document_stops_before_overspending():
    clock = VirtualClock()
    client, _small, _ = _client(clock, budget=0.002)
    from llm_patterns import BudgetExceeded

    with pytest.raises(BudgetExceeded):
        map_reduce_summarize(_document(3 * WINDOW), client, max_tokens=WINDOW - 400,
                             output_tokens=300, dag_id="docs")
    assert client.cost.total <= Decimal("0.002")
