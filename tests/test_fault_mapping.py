"""Every fault the mock can inject reaches the caller as its SPEC §3 error, for both APIs.

Real httpx requests through the mock's MockTransport and through the real providers' error
mapping: the same path a production call takes, minus the network.
"""

from __future__ import annotations

import asyncio

import pytest

from llm_patterns import (
    AnthropicProvider,
    AuthenticationError,
    ConnectionFailed,
    ContentFilterError,
    ContextWindowExceeded,
    MalformedResponse,
    MockLLMServer,
    OpenAIProvider,
    ProviderTimeout,
    QuotaExceededError,
    RateLimitError,
    ServerError,
    VirtualClock,
    is_retryable,
)
from llm_patterns.errors import ModelNotFoundError, is_outage, stops_chain
from llm_patterns.mock.server import FAULT_KINDS

# kind: (error, status on the OpenAI endpoint, status on the Anthropic endpoint, retryable)
EXPECTED = {
    "rate_limit": (RateLimitError, 429, 429, True),
    "insufficient_quota": (QuotaExceededError, 429, 400, False),  # Anthropic: credit too low
    "billing_hard_limit_reached": (QuotaExceededError, 400, 400, False),
    "credit_balance_exhausted": (QuotaExceededError, 429, 400, False),
    "organization_spend_limit_exceeded": (QuotaExceededError, 429, 429, False),
    "project_spend_limit_exceeded": (QuotaExceededError, 429, 429, False),
    "organization_usage_limit_exceeded": (QuotaExceededError, 429, 429, False),
    "credit_balance_too_low": (QuotaExceededError, 429, 400, False),
    "enforced_spend_limit_reached": (QuotaExceededError, 429, 429, False),
    "contract_spend_limit_reached": (QuotaExceededError, 429, 429, False),
    "server_error": (ServerError, 500, 500, True),
    "overloaded": (ServerError, 503, 529, True),
    "timeout": (ProviderTimeout, None, None, True),
    "context_length_exceeded": (ContextWindowExceeded, 400, 400, False),
    "malformed": (MalformedResponse, 200, 200, True),
    "auth": (AuthenticationError, 401, 401, False),
    "model_not_found": (ModelNotFoundError, 404, 404, False),
    "content_filter": (ContentFilterError, 200, 200, False),
    "stream_error": (ServerError, 500, 529, True),  # on a request that does not stream
    "stream_drop": (ConnectionFailed, None, None, True),
}


def test_the_table_covers_every_fault_kind():
    assert set(EXPECTED) == set(FAULT_KINDS)


def _provider(api: str, mock: MockLLMServer, clock):
    if api == "openai":
        return OpenAIProvider("p", "gpt-4o-mini", base_url="http://mock.llm/v1",
                              api_key="test-key", client=mock.client(),
                              async_client=mock.async_client(), clock=clock, timeout=5.0)
    return AnthropicProvider("p", "claude-haiku-4-5", base_url="http://mock.llm",
                             api_key="test-key", client=mock.client(),
                             async_client=mock.async_client(), clock=clock, timeout=5.0)


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("api", ["openai", "anthropic"])
@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_fault_maps_to_its_error(api, kind, mode):
    cls, openai_status, anthropic_status, retryable = EXPECTED[kind]
    status = openai_status if api == "openai" else anthropic_status
    clock = VirtualClock()
    mock = MockLLMServer(clock=clock, seed=0, api=api)
    provider = _provider(api, mock, clock)
    mock.fail_next(kind)
    with pytest.raises(cls) as info:
        if mode == "sync":
            provider.complete("hello", max_tokens=16)
        else:
            asyncio.run(provider.acomplete("hello", max_tokens=16))
    err = info.value
    assert type(err) is cls
    assert is_outage(err) is cls.outage  # the taxonomy's row, read by every breaker
    if kind == "insufficient_quota":
        assert isinstance(err, RateLimitError)  # a 429 by status, never retried by class
    if kind == "context_length_exceeded":
        assert type(err) is ContextWindowExceeded
    assert err.provider == "p"
    assert err.status_code == status
    assert is_retryable(err) is retryable
    assert not stops_chain(err)  # SPEC §9: none of these stops a fallback chain
    if cls is QuotaExceededError or cls is ModelNotFoundError:
        assert not is_outage(err)  # the provider is up: billing and models are not outages
    if status is not None:
        assert err.request_id and err.request_id in str(err)
    if kind == "rate_limit":
        assert err.retry_after is not None and err.retry_after > 0
    # the fault was used up: the next call succeeds
    assert provider.complete("hello again", max_tokens=16).text


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_outage_window_and_take_down_map_to_server_errors(api):
    clock = VirtualClock()
    mock = MockLLMServer(clock=clock, seed=0, api=api)
    provider = _provider(api, mock, clock)
    mock.outage(10, 20, status=503)
    clock.advance(10)
    with pytest.raises(ServerError) as info:
        provider.complete("x", max_tokens=8)
    assert info.value.status_code == 503
    clock.advance(10)
    assert provider.complete("x", max_tokens=8).text
    mock.take_down(status=502)
    with pytest.raises(ServerError):
        provider.complete("x", max_tokens=8)
    mock.bring_up()
    assert provider.complete("x", max_tokens=8).text


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_bucket_429_carries_the_exact_wait(api):
    clock = VirtualClock()
    mock = MockLLMServer(clock=clock, seed=0, api=api, rpm=60, burst_seconds=1.0)
    provider = _provider(api, mock, clock)
    provider.complete("first", max_tokens=8)  # takes the one request the bucket holds
    with pytest.raises(RateLimitError) as info:
        provider.complete("second", max_tokens=8)
    wait = info.value.retry_after
    assert wait is not None and 0 < wait <= 1.0
    clock.advance(wait)
    assert provider.complete("third", max_tokens=8).text
