"""The official SDKs as an oracle of how the real APIs' answers are read.

A table of real-shaped HTTP answers (status x error type/code x headers, both APIs, the bodies
and headers the APIs document) goes through our mapping (``error_from_response``,
``is_retryable``) and through the installed ``openai`` and ``anthropic`` SDKs' own
classification (``_make_status_error_from_response``, the path every failed request takes) and
retry decision (``_should_retry``). We must agree with both, except where a row names one of
the deliberate differences below, and each named difference must really be one (so the list
cannot go stale when the SDKs change).

The SDKs speak ``httpx2`` (anthropic 2.x, openai 3.x): the same answers are built as
``httpx2.Response`` for them and ``httpx.Response`` for us.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import anthropic
import httpx
import httpx2
import openai
import pytest

from llm_patterns import errors as E

# -- the deliberate differences, with their reasons -----------------------------------------------
BILLING = (
    "Billing is not a rate limit: out of credit or over a spend limit is QuotaExceededError "
    "whatever the status. Retrying cannot help until someone pays, so we never retry it (the "
    "SDKs retry a 429, and obey x-should-retry), and it moves on to the next provider (the SDKs "
    "raise BadRequestError for a 400 or RateLimitError for a 429)."
)
LONG_RETRY_AFTER = (
    "The OpenAI SDK gives up when Retry-After is over 120 s. is_retryable answers about the "
    "error; the wait is the retry policy's decision: RetryPolicy(max_retry_after=120.0) stops "
    "at the same point, and a caller may allow longer."
)
DIFFERENCES = {"billing": BILLING, "long-retry-after": LONG_RETRY_AFTER}


# -- the answers ----------------------------------------------------------------------------------
def openai_error(message, type_="invalid_request_error", code=None, param=None):
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def anthropic_error(message, type_, error_code=None):
    error = {"type": type_, "message": message}
    if error_code:
        error["details"] = {"error_code": error_code}
    return {"type": "error", "error": error, "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"}


OPENAI_ID = {"x-request-id": "req_7b3c1f0e9d8a4c2b"}
ANTHROPIC_ID = {"request-id": "req_011CSHoEeqs5C35K2UUqR7Fy"}


@dataclass
class Row:
    id: str
    api: str
    status: int
    body: object  # a JSON body, or bytes sent as they are
    ours: type[E.LLMError]
    headers: dict[str, str] = field(default_factory=dict)
    class_differs: str | None = None  # a key of DIFFERENCES
    retry_differs: str | None = None

    def content(self) -> bytes:
        return self.body if isinstance(self.body, bytes) else json.dumps(self.body).encode()

    def all_headers(self) -> dict[str, str]:
        base = OPENAI_ID if self.api == "openai" else ANTHROPIC_ID
        ctype = {"content-type": "text/html" if isinstance(self.body, bytes)
                 else "application/json"}
        return {**base, **ctype, **self.headers}


TABLE = [
    # ---- OpenAI ----------------------------------------------------------------------------
    Row("oa-400-invalid", "openai", 400,
        openai_error("'messages' must contain at least one message.", param="messages"),
        E.InvalidRequestError),
    Row("oa-400-context", "openai", 400,
        openai_error("This model's maximum context length is 128000 tokens. However, your "
                     "messages resulted in 130211 tokens.", code="context_length_exceeded",
                     param="messages"), E.ContextWindowExceeded),
    Row("oa-400-content-filter", "openai", 400,
        openai_error("The response was filtered due to the prompt triggering Azure OpenAI's "
                     "content management policy.", code="content_filter", param="prompt"),
        E.ContentFilterError),
    Row("oa-400-credit-exhausted", "openai", 400,
        openai_error("Your credit balance is exhausted.", "invalid_request_error",
                     "credit_balance_exhausted"), E.QuotaExceededError, class_differs="billing"),
    Row("oa-401-key", "openai", 401,
        openai_error("Incorrect API key provided: sk-proj-****abcd. You can find your API key "
                     "at https://platform.openai.com/account/api-keys.", code="invalid_api_key"),
        E.AuthenticationError),
    Row("oa-403-region", "openai", 403,
        openai_error("Country, region, or territory not supported", "request_forbidden",
                     "unsupported_country_region_territory"), E.AuthenticationError),
    Row("oa-404-model", "openai", 404,
        openai_error("The model `gpt-9` does not exist or you do not have access to it.",
                     code="model_not_found"), E.ModelNotFoundError),
    Row("oa-404-url", "openai", 404,
        openai_error("Invalid URL (POST /v1/chat/completion)"), E.ModelNotFoundError),
    Row("oa-408", "openai", 408, openai_error("Request timed out.", "timeout"),
        E.ProviderTimeout),
    Row("oa-409", "openai", 409, openai_error("Conflict.", "conflict"), E.ServerError),
    Row("oa-422", "openai", 422, openai_error("Unprocessable entity."), E.InvalidRequestError),
    Row("oa-429-tpm", "openai", 429,
        openai_error("Rate limit reached for gpt-4o in organization org-abc on tokens per min "
                     "(TPM): Limit 30000, Used 29854, Requested 1024.", "tokens",
                     "rate_limit_exceeded"), E.RateLimitError,
        headers={"retry-after-ms": "2286", "x-ratelimit-remaining-tokens": "146"}),
    Row("oa-429-rpm", "openai", 429,
        openai_error("Rate limit reached for requests", "requests", "rate_limit_exceeded"),
        E.RateLimitError, headers={"retry-after": "1"}),
    Row("oa-429-insufficient-quota", "openai", 429,
        openai_error("You exceeded your current quota, please check your plan and billing "
                     "details.", "insufficient_quota", "insufficient_quota"),
        E.QuotaExceededError, class_differs="billing", retry_differs="billing"),
    Row("oa-429-hard-limit", "openai", 429,
        openai_error("Billing hard limit has been reached", "invalid_request_error",
                     "billing_hard_limit_reached"), E.QuotaExceededError,
        class_differs="billing", retry_differs="billing"),
    Row("oa-402-org-spend", "openai", 402,
        openai_error("Organization spend limit exceeded.", "insufficient_quota",
                     "organization_spend_limit_exceeded"), E.QuotaExceededError),
    Row("oa-429-project-spend", "openai", 429,
        openai_error("Project spend limit exceeded.", "insufficient_quota",
                     "project_spend_limit_exceeded"), E.QuotaExceededError,
        class_differs="billing", retry_differs="billing"),
    Row("oa-429-usage-limit", "openai", 429,
        openai_error("Organization usage limit exceeded.", "requests",
                     "organization_usage_limit_exceeded"), E.QuotaExceededError,
        class_differs="billing", retry_differs="billing"),
    Row("oa-429-quota-should-retry", "openai", 429,
        openai_error("You exceeded your current quota.", "insufficient_quota",
                     "insufficient_quota"), E.QuotaExceededError,
        headers={"x-should-retry": "true"}, class_differs="billing", retry_differs="billing"),
    Row("oa-429-retry-after-300", "openai", 429,
        openai_error("Rate limit reached", "requests", "rate_limit_exceeded"), E.RateLimitError,
        headers={"retry-after": "300"}, retry_differs="long-retry-after"),
    Row("oa-500", "openai", 500,
        openai_error("The server had an error while processing your request. Sorry about that!",
                     "server_error"), E.ServerError),
    Row("oa-502-html", "openai", 502,
        b"<html><head><title>502 Bad Gateway</title></head><body>cloudflare</body></html>",
        E.ServerError),
    Row("oa-503-overloaded", "openai", 503,
        openai_error("The engine is currently overloaded, please try again later.",
                     "server_error"), E.ServerError),
    Row("oa-504-empty", "openai", 504, b"", E.ServerError),
    Row("oa-400-should-retry", "openai", 400, openai_error("Try again."),
        E.InvalidRequestError, headers={"x-should-retry": "true"}),
    Row("oa-503-should-not-retry", "openai", 503, openai_error("Down.", "server_error"),
        E.ServerError, headers={"x-should-retry": "false"}),
    # ---- Anthropic -------------------------------------------------------------------------
    Row("an-400-invalid", "anthropic", 400,
        anthropic_error('messages: roles must alternate between "user" and "assistant"',
                        "invalid_request_error"), E.InvalidRequestError),
    Row("an-400-context", "anthropic", 400,
        anthropic_error("prompt is too long: 215000 tokens > 200000 maximum",
                        "invalid_request_error"), E.ContextWindowExceeded),
    Row("an-400-context-max-tokens", "anthropic", 400,
        anthropic_error("input length and `max_tokens` exceed context limit: 198000 + 8192 > "
                        "200000, decrease input length or `max_tokens` and try again",
                        "invalid_request_error"), E.ContextWindowExceeded),
    Row("an-400-credit-too-low", "anthropic", 400,
        anthropic_error("Your credit balance is too low to access the Anthropic API. Please go "
                        "to Plans & Billing to upgrade or purchase credits.",
                        "invalid_request_error"), E.QuotaExceededError, class_differs="billing"),
    Row("an-401", "anthropic", 401, anthropic_error("invalid x-api-key", "authentication_error"),
        E.AuthenticationError),
    Row("an-402-billing", "anthropic", 402,
        anthropic_error("There's an issue with your billing.", "billing_error"),
        E.QuotaExceededError),
    Row("an-403", "anthropic", 403,
        anthropic_error("Your API key does not have permission to use the specified resource.",
                        "permission_error"), E.AuthenticationError),
    Row("an-404-model", "anthropic", 404,
        anthropic_error("model: claude-9-opus", "not_found_error"), E.ModelNotFoundError),
    Row("an-408", "anthropic", 408, anthropic_error("Request timed out", "timeout_error"),
        E.ProviderTimeout),
    Row("an-409", "anthropic", 409, anthropic_error("Conflict", "conflict_error"), E.ServerError),
    Row("an-413", "anthropic", 413,
        anthropic_error("Request exceeds the maximum allowed number of bytes.",
                        "request_too_large"), E.InvalidRequestError),
    Row("an-429-itpm", "anthropic", 429,
        anthropic_error("This request would exceed the rate limit for your organization of "
                        "40,000 input tokens per minute.", "rate_limit_error"), E.RateLimitError,
        headers={"retry-after": "17", "anthropic-ratelimit-input-tokens-remaining": "0",
                 "anthropic-ratelimit-input-tokens-reset": "2026-12-05T12:00:17Z"}),
    Row("an-429-ramp", "anthropic", 429,
        anthropic_error("Your usage ramped up too quickly.", "rate_limit_error",
                        "ramp_limit_exceeded"), E.RateLimitError),
    Row("an-429-enforced-spend", "anthropic", 429,
        anthropic_error("You have reached your specified workspace API usage limits.",
                        "rate_limit_error", "enforced_spend_limit_reached"),
        E.QuotaExceededError, class_differs="billing", retry_differs="billing"),
    Row("an-429-contract-spend", "anthropic", 429,
        anthropic_error("Your organization has reached its contract spend limit.",
                        "rate_limit_error", "contract_spend_limit_reached"),
        E.QuotaExceededError, class_differs="billing", retry_differs="billing"),
    Row("an-500", "anthropic", 500, anthropic_error("Internal server error", "api_error"),
        E.ServerError),
    Row("an-503", "anthropic", 503, anthropic_error("Service unavailable", "api_error"),
        E.ServerError),
    Row("an-504", "anthropic", 504, anthropic_error("Gateway timeout", "timeout_error"),
        E.ServerError),
    Row("an-529", "anthropic", 529, anthropic_error("Overloaded", "overloaded_error"),
        E.ServerError, headers={"retry-after": "12"}),
    Row("an-529-should-not-retry", "anthropic", 529,
        anthropic_error("Overloaded", "overloaded_error"), E.ServerError,
        headers={"x-should-retry": "false"}),
    Row("an-400-should-retry", "anthropic", 400,
        anthropic_error("Transient validation failure", "invalid_request_error"),
        E.InvalidRequestError, headers={"x-should-retry": "true"}),
    Row("an-502-html", "anthropic", 502, b"<html>502 Bad Gateway</html>", E.ServerError),
]


# -- the SDKs' own reading -------------------------------------------------------------------------
SDK_CLIENTS = {
    "openai": openai.OpenAI(api_key="sk-oracle-test", base_url="http://oracle.test/v1",
                            max_retries=0),
    "anthropic": anthropic.Anthropic(api_key="sk-ant-oracle-test",
                                     base_url="http://oracle.test", max_retries=0),
}
PATHS = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"}

# Which of our classes each SDK class corresponds to (first match wins; a BadRequestError is
# refined by us into the 400s that fall back). Same names, different modules.
CORRESPONDENCE = {
    "openai": [
        (openai.AuthenticationError, (E.AuthenticationError,)),
        (openai.PermissionDeniedError, (E.AuthenticationError,)),
        (openai.NotFoundError, (E.ModelNotFoundError,)),
        (openai.ConflictError, (E.ServerError,)),
        (openai.UnprocessableEntityError, (E.InvalidRequestError,)),
        (openai.RateLimitError, (E.RateLimitError,)),
        (openai.InternalServerError, (E.ServerError,)),
        (openai.BadRequestError, (E.InvalidRequestError, E.ContextWindowExceeded,
                                  E.ContentFilterError)),
    ],
    "anthropic": [
        (anthropic.AuthenticationError, (E.AuthenticationError,)),
        (anthropic.PermissionDeniedError, (E.AuthenticationError,)),
        (anthropic.PaymentRequiredError, (E.QuotaExceededError,)),
        (anthropic.NotFoundError, (E.ModelNotFoundError,)),
        (anthropic.RequestTimeoutError, (E.ProviderTimeout,)),
        (anthropic.ConflictError, (E.ServerError,)),
        (anthropic.ContentTooLargeError, (E.InvalidRequestError,)),
        (anthropic.UnprocessableEntityError, (E.InvalidRequestError,)),
        (anthropic.RateLimitError, (E.RateLimitError,)),
        (anthropic.InternalServerError, (E.ServerError,)),
        (anthropic.BadRequestError, (E.InvalidRequestError, E.ContextWindowExceeded,
                                     E.ContentFilterError)),
    ],
}
# The OpenAI SDK has no class of its own for these statuses (a plain APIStatusError).
OPENAI_BY_STATUS = {402: (E.QuotaExceededError,), 408: (E.ProviderTimeout,),
                    413: (E.InvalidRequestError,)}


def sdk_reading(row: Row) -> tuple[Exception, bool]:
    client = SDK_CLIENTS[row.api]
    response = httpx2.Response(
        row.status, headers=row.all_headers(), content=row.content(),
        request=httpx2.Request("POST", f"http://oracle.test{PATHS[row.api]}"))
    return client._make_status_error_from_response(response), client._should_retry(response)


def sdk_equivalent(row: Row, sdk_error: Exception) -> tuple[type[E.LLMError], ...]:
    for sdk_cls, ours in CORRESPONDENCE[row.api]:
        if isinstance(sdk_error, sdk_cls):
            return ours
    if row.api == "openai" and row.status in OPENAI_BY_STATUS:
        return OPENAI_BY_STATUS[row.status]
    raise AssertionError(f"no correspondence for {type(sdk_error).__name__} ({row.status})")


def our_reading(row: Row) -> tuple[E.LLMError, bool]:
    response = httpx.Response(row.status, headers=row.all_headers(), content=row.content(),
                              request=httpx.Request("POST", f"http://ours{PATHS[row.api]}"))
    return E.error_from_response(response, provider=row.api), E.is_retryable(response)


# -- the tests -------------------------------------------------------------------------------------
def test_the_table_is_big_enough_and_covers_both_apis():
    assert len(TABLE) >= 30
    assert {r.api for r in TABLE} == {"openai", "anthropic"}
    assert len({r.id for r in TABLE}) == len(TABLE)
    for row in TABLE:
        assert row.class_differs in (None, *DIFFERENCES)
        assert row.retry_differs in (None, *DIFFERENCES)


@pytest.mark.parametrize("row", TABLE, ids=[r.id for r in TABLE])
def test_we_agree_with_the_sdk_except_where_listed(row: Row):
    ours, we_retry = our_reading(row)
    sdk_error, sdk_retries = sdk_reading(row)
    assert type(ours) is row.ours  # the table says what we answer
    assert ours.retryable is we_retry  # the raw response and the mapped error agree
    same_class = type(ours) in sdk_equivalent(row, sdk_error)
    if row.class_differs is None:
        assert same_class, f"SDK says {type(sdk_error).__name__}, we say {type(ours).__name__}"
    else:
        assert not same_class, f"listed difference {row.class_differs!r} is no longer one"
    if row.retry_differs is None:
        assert we_retry is sdk_retries, f"SDK retries: {sdk_retries}, we retry: {we_retry}"
    else:
        assert we_retry is not sdk_retries, f"listed difference {row.retry_differs!r} is gone"
    # the request id the SDK reports is the one we carry and show
    assert ours.request_id == sdk_error.request_id
    assert ours.request_id and ours.request_id in str(ours)
    assert ours.status_code == sdk_error.status_code == row.status


def test_billing_rows_cover_every_code_in_the_spec():
    spec_openai = {"insufficient_quota", "billing_hard_limit_reached", "credit_balance_exhausted",
                   "organization_spend_limit_exceeded", "project_spend_limit_exceeded",
                   "organization_usage_limit_exceeded"}
    seen = {r.body["error"]["code"] for r in TABLE
            if r.api == "openai" and isinstance(r.body, dict) and r.ours is E.QuotaExceededError}
    assert spec_openai <= seen
    seen_statuses = {r.status for r in TABLE
                     if r.api == "openai" and r.ours is E.QuotaExceededError}
    assert {400, 402, 429} <= seen_statuses
    anthropic_codes = {(r.body["error"].get("details") or {}).get("error_code") for r in TABLE
                       if r.api == "anthropic" and r.ours is E.QuotaExceededError}
    assert {"enforced_spend_limit_reached", "contract_spend_limit_reached"} <= anthropic_codes


@pytest.mark.parametrize("exc", [httpx.ConnectError, httpx.ConnectTimeout, httpx.ReadTimeout,
                                 httpx.WriteTimeout, httpx.PoolTimeout, httpx.ReadError,
                                 httpx.RemoteProtocolError])
def test_transport_failures_are_retried_as_the_sdks_retry_them(exc):
    # Both SDKs retry every connection error and timeout (APIConnectionError/APITimeoutError);
    # so do we. Only their outage-ness differs: our own pool running dry is not an outage.
    error = E.error_from_exception(exc("x", request=httpx.Request("POST", "http://x")))
    assert error.retryable
    assert error.outage is (exc is not httpx.PoolTimeout)
