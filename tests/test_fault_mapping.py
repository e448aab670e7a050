"""Every fault the mock can inject reaches the caller as its SPEC §3/§9 error, for both APIs.

Real httpx requests through the mock's MockTransport and through the real providers' error
mapping: the same path a production call takes, minus the network. Every kind the mock has
(``FAULT_KINDS``) is covered, each with the three decisions the taxonomy makes about it.
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
    ModelNotFoundError,
    OpenAIProvider,
    ProviderTimeout,
    QuotaExceededError,
    RateLimitError,
    ServerError,
    VirtualClock,
    is_outage,
    is_retryable,
    stops_chain,
)
from llm_patterns.mock.server import FAULT_KINDS

# kind: (error, status on the OpenAI endpoint, status on the Anthropic endpoint)
EXPECTED: dict[str, tuple[type, int | None, int | None]] = {
    "rate_limit": (RateLimitError, 429, 429),
    "insufficient_quota": (QuotaExceededError, 429, 400),  # Anthropic: credit balance too low
    "billing_hard_limit_reached": (QuotaExceededError, 400, 400),
    "credit_balance_exhausted": (QuotaExceededError, 429, 400),
    "organization_spend_limit_exceeded": (QuotaExceededError, 429, 429),
    "project_spend_limit_exceeded": (QuotaExceededError, 429, 429),
    "organization_usage_limit_exceeded": (QuotaExceededError, 429, 429),
    "credit_balance_too_low": (QuotaExceededError, 429, 400),
    "enforced_spend_limit_reached": (QuotaExceededError, 429, 429),
    "contract_spend_limit_reached": (QuotaExceededError, 429, 429),
    "server_error": (ServerError, 500, 500),
    "overloaded": (ServerError, 503, 529),  # OpenAI's server_is_overloaded, Anthropic's 529
    "timeout": (ProviderTimeout, None, None),
    "context_length_exceeded": (ContextWindowExceeded, 400, 400),
    "malformed": (MalformedResponse, 200, 200),
    "auth": (AuthenticationError, 401, 401),
    "model_not_found": (ModelNotFoundError, 404, 404),
    "content_filter": (ContentFilterError, 200, 200),
    "stream_error": (ServerError, 500, 529),  # not streaming: the API's error status instead
    "stream_drop": (ConnectionFailed, None, None),  # not streaming: dropped before the answer
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
    cls, openai_status, anthropic_status = EXPECTED[kind]
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
    assert type(err) is cls and err.provider == "p"
    assert err.status_code == status
    assert is_retryable(err) is cls.retryable and is_outage(err) is cls.outage
    assert not stops_chain(err)  # every fault the provider sends lets the next provider try
    if cls is QuotaExceededError:
        assert not is_retryable(err)  # billing: never retried, whatever the status
    if status is not None:  # an answer: the request id the mock sent
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
