"""The error taxonomy, is_retryable and Retry-After parsing."""

import email.utils
import pickle

import httpx
import pytest

from llm_patterns import errors as E
from llm_patterns.errors import is_retryable, retry_after_from_headers
from llm_patterns.tokens import estimate_tokens


def _resp(status, body=None, text=None):
    req = httpx.Request("POST", "http://x/v1/chat/completions")
    if body is not None:
        return httpx.Response(status, json=body, request=req)
    return httpx.Response(status, text=text or "", request=req)


@pytest.mark.parametrize(
    "error, expected",
    [
        (E.RateLimitError("slow down"), True),
        (E.QuotaExceededError("no credit"), False),
        (E.ServerError("503"), True),
        (E.ProviderTimeout("t"), True),
        (E.ConnectionFailed("c"), True),
        (E.MalformedResponse("html"), True),
        (E.AuthenticationError("401"), False),
        (E.InvalidRequestError("400"), False),
        (E.ContextWindowExceeded("too long"), False),
        (E.ContentFilterError("no"), False),
        (E.BudgetExceeded("stop"), False),
        (E.CircuitOpenError("open"), False),
        (E.RateLimitTimeout("wait"), False),
        (ValueError("bug"), False),
        (KeyError("k"), False),
        (TimeoutError(), True),
        (ConnectionResetError(), True),
    ],
)
def test_is_retryable_for_errors(error, expected):
    assert is_retryable(error) is expected


def test_quota_is_a_rate_limit_but_never_retryable():
    err = E.QuotaExceededError("insufficient_quota")
    assert isinstance(err, E.RateLimitError)
    assert not is_retryable(err)


def test_context_window_is_not_an_invalid_request():
    assert not isinstance(E.ContextWindowExceeded("x"), E.InvalidRequestError)


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 529, 599])
def test_retryable_statuses(status):
    assert is_retryable(_resp(status, {"error": {"message": "x"}}))


@pytest.mark.parametrize("status", [200, 400, 401, 403, 404, 422])
def test_not_retryable_statuses(status):
    assert not is_retryable(_resp(status, {"error": {"message": "x"}}))


def test_insufficient_quota_response_is_not_retryable():
    body = {"error": {"message": "You exceeded your current quota", "type": "insufficient_quota",
                      "code": "insufficient_quota"}}
    assert not is_retryable(_resp(429, body))
    assert not is_retryable(_resp(429, text="error: insufficient_quota"))
    assert is_retryable(_resp(429, text="<html>Too Many Requests</html>"))


def test_httpx_exceptions():
    req = httpx.Request("GET", "http://x")
    assert is_retryable(httpx.ReadTimeout("t", request=req))
    assert is_retryable(httpx.ConnectError("c", request=req))
    assert is_retryable(httpx.RemoteProtocolError("r", request=req))
    assert not is_retryable(httpx.UnsupportedProtocol("u", request=req))
    status_err = httpx.HTTPStatusError("503", request=req, response=_resp(503, {}))
    assert is_retryable(status_err)


def test_retry_after_ms_wins():
    assert retry_after_from_headers({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5


def test_retry_after_seconds_and_case():
    assert retry_after_from_headers({"Retry-After": "20"}) == 20.0
    assert retry_after_from_headers(httpx.Headers({"retry-after": "0.25"})) == 0.25


def test_retry_after_http_date_uses_wall_clock():
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert retry_after_from_headers({"retry-after": date}, now=now) == pytest.approx(30, abs=1)
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert retry_after_from_headers({"retry-after": past}, now=now) == 0.0


@pytest.mark.parametrize(
    "headers",
    [None, {}, {"retry-after": "-3"}, {"retry-after": "soon"}, {"retry-after": "nan"},
     {"retry-after-ms": "-1"}, {"x-other": "1"}],
)
def test_retry_after_absent_negative_or_unreadable(headers):
    assert retry_after_from_headers(headers) is None


def test_bad_retry_after_ms_falls_back_to_retry_after():
    assert retry_after_from_headers({"retry-after-ms": "abc", "retry-after": "2"}) == 2.0


def test_error_fields_str_repr_and_pickle():
    err = E.ServerError("overloaded", provider="primary", status_code=529, retry_after=2.0)
    assert (err.provider, err.status_code, err.retry_after) == ("primary", 529, 2.0)
    assert str(err) == "[primary] HTTP 529: overloaded (retry after 2 s)"
    assert "ServerError('overloaded'" in repr(err)
    clone = pickle.loads(pickle.dumps(err))
    assert type(clone) is E.ServerError and clone.status_code == 529 and str(clone) == str(err)


def test_all_providers_failed_keeps_every_error_in_order():
    a, b = E.ServerError("down", provider="a"), E.RateLimitError("busy", provider="b")
    err = E.AllProvidersFailed([("a", a), ("b", b)])
    assert err.errors == [("a", a), ("b", b)]
    assert "a: ServerError" in str(err) and "b: RateLimitError" in str(err)
    clone = pickle.loads(pickle.dumps(err))
    assert [name for name, _ in clone.errors] == ["a", "b"]


def test_add_note():
    err = ValueError("x")
    E.add_note(err, "attempt 3/3")
    assert err.__notes__ == ["attempt 3/3"]


def test_estimate_tokens():
    assert estimate_tokens("") == 0
    assert estimate_tokens("abcd") == 1
    assert estimate_tokens("abcde") == 2
    assert estimate_tokens("x" * 4000) == 1000
    with pytest.raises(TypeError, match="str"):
        estimate_tokens(None)


# -- the taxonomy as data --------------------------------------------------------------------------
def _table_rows():
    """The table in errors.py's docstring, parsed: {class name: (retry, outage, falls back)}."""
    rows = {}
    for line in E.__doc__.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and hasattr(E, cells[0]):
            yes = lambda c: c.lower().startswith("yes")  # noqa: E731
            rows[cells[0]] = (yes(cells[2]), yes(cells[3]), yes(cells[4]))
    return rows


def test_the_docstring_table_is_the_class_attributes():
    rows = _table_rows()
    classes = [c for c in vars(E).values()
               if isinstance(c, type) and issubclass(c, E.LLMError) and c is not E.LLMError]
    assert {c.__name__ for c in classes} == set(rows)
    for cls in classes:
        assert (cls.retryable, cls.outage, cls.falls_back) == rows[cls.__name__], cls.__name__


@pytest.mark.parametrize("cls", [c for c in vars(E).values() if isinstance(c, type)
                                 and issubclass(c, E.LLMError) and c is not E.AllProvidersFailed])
def test_every_decision_reads_the_class(cls):
    err = cls("x")
    assert is_retryable(err) is cls.retryable
    assert E.is_outage(err) is cls.outage
    assert E.stops_chain(err) is (not cls.falls_back)


def test_is_outage_is_one_function_everywhere():
    import llm_patterns
    from llm_patterns import circuit_breaker

    assert llm_patterns.is_outage is E.is_outage is circuit_breaker.is_outage


def test_is_outage_on_raw_exceptions():
    req = httpx.Request("POST", "http://x")
    assert E.is_outage(None)
    assert E.is_outage(httpx.ReadTimeout("t", request=req))
    assert E.is_outage(httpx.ConnectError("c", request=req))
    assert not E.is_outage(httpx.PoolTimeout("p", request=req))  # our pool, not their outage
    assert E.is_outage(httpx.HTTPStatusError("x", request=req, response=_resp(503, {})))
    assert not E.is_outage(httpx.HTTPStatusError("x", request=req, response=_resp(429, {})))
    assert not E.is_outage(ValueError("bug"))


def test_stops_chain_for_caller_mistakes_and_budget():
    assert E.stops_chain(ValueError("max_tokens"))
    assert E.stops_chain(TypeError("prompt"))
    assert E.stops_chain(E.BudgetExceeded("b"))
    assert E.stops_chain(E.InvalidRequestError("bad"))
    assert not E.stops_chain(E.ModelNotFoundError("404"))
    assert not E.stops_chain(E.QuotaExceededError("billing"))
    assert not E.stops_chain(RuntimeError("provider bug"))
    assert E.stops_chain(KeyboardInterrupt())


def test_model_not_found_is_not_an_invalid_request():
    assert not isinstance(E.ModelNotFoundError("x"), E.InvalidRequestError)


# -- HTTP answers onto the table (one rule) --------------------------------------------------------
def _answer(status, body=None, headers=None, text=None):
    req = httpx.Request("POST", "http://x/v1/chat/completions")
    if text is not None:
        return httpx.Response(status, text=text, headers=headers, request=req)
    return httpx.Response(status, json=body, headers=headers, request=req)


def _openai(code, type_="invalid_request_error", message="m"):
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def _anthropic(type_, message="m", error_code=None):
    err = {"type": type_, "message": message}
    if error_code:
        err["details"] = {"error_code": error_code}
    return {"type": "error", "error": err, "request_id": "req_body_1"}


BILLING = [
    (429, _openai("insufficient_quota", "insufficient_quota")),
    (429, _openai("insufficient_quota", "requests")),  # the code alone decides
    (402, _openai("billing_hard_limit_reached", "billing")),
    (400, _openai("credit_balance_exhausted")),
    (429, _openai("organization_spend_limit_exceeded")),
    (429, _openai("project_spend_limit_exceeded")),
    (429, _openai("organization_usage_limit_exceeded")),
    (400, _anthropic("invalid_request_error", "Your credit balance is too low to access the "
                     "Anthropic API. Please go to Plans & Billing to upgrade or purchase "
                     "credits.")),
    (429, _anthropic("rate_limit_error", "spend limit", "enforced_spend_limit_reached")),
    (429, _anthropic("rate_limit_error", "contract", "contract_spend_limit_reached")),
    (402, _anthropic("billing_error", "payment failed")),
]


@pytest.mark.parametrize("status, body", BILLING)
def test_every_billing_answer_is_quota_never_retried_and_falls_back(status, body):
    response = _answer(status, body, headers={"x-should-retry": "true", "retry-after": "1"})
    err = E.error_from_response(response, provider="p")
    assert type(err) is E.QuotaExceededError
    assert not err.retryable and not is_retryable(response)  # whatever x-should-retry says
    assert not E.stops_chain(err) and not E.is_outage(err)
    assert err.status_code == status


@pytest.mark.parametrize("header, status, expected", [
    ("true", 400, True), ("false", 503, False), ("false", 429, False), ("true", 401, True),
    ("maybe", 400, False), ("maybe", 503, True),
])
def test_x_should_retry_overrides_the_status(header, status, expected):
    response = _answer(status, _openai(None), headers={"x-should-retry": header})
    assert E.error_from_response(response).retryable is expected
    assert is_retryable(response) is expected


@pytest.mark.parametrize("body", [
    _openai("model_not_found", message="The model `gpt-9` does not exist"),
    _anthropic("not_found_error", "model: claude-9"),
    None,
])
def test_404_model_not_found_falls_back(body):
    err = E.error_from_response(_answer(404, body) if body else _answer(404, text=""))
    assert type(err) is E.ModelNotFoundError and not E.stops_chain(err)


@pytest.mark.parametrize("headers, body, expected", [
    ({"x-request-id": "req_openai_1"}, _openai(None), "req_openai_1"),
    ({"request-id": "req_anthropic_1"}, _anthropic("api_error"), "req_anthropic_1"),
    ({}, _anthropic("api_error"), "req_body_1"),
    ({}, _openai(None), None),
])
def test_request_id_is_carried_and_shown(headers, body, expected):
    err = E.error_from_response(_answer(500, body, headers=headers), provider="p")
    assert err.request_id == expected
    if expected:
        assert f"request id {expected}" in str(err)


@pytest.mark.parametrize("status, cls", [
    (400, E.InvalidRequestError), (401, E.AuthenticationError), (402, E.QuotaExceededError),
    (403, E.AuthenticationError), (404, E.ModelNotFoundError), (408, E.ProviderTimeout),
    (409, E.ServerError), (413, E.InvalidRequestError), (422, E.InvalidRequestError),
    (429, E.RateLimitError), (500, E.ServerError), (502, E.ServerError), (529, E.ServerError),
    (301, E.MalformedResponse), (418, E.InvalidRequestError),
])
@pytest.mark.parametrize("body", [
    b"", b"<html><body>502 Bad Gateway</body></html>", b"\xff\xfe\x00garbage", b"[1, 2]",
    b'{"error": null}', b'{"error": {"message": 5, "code": true, "details": 7}}',
    b'{"error": "a string"}', b'"just a string"', b"[" * 5000, b'{"message": "top-level"}',
])
def test_unknown_or_broken_bodies_still_map_by_status(status, cls, body):
    response = httpx.Response(status, content=body,
                              headers={"x-request-id": "req_9", "content-type": "text/html"},
                              request=httpx.Request("POST", "http://x"))
    err = E.error_from_response(response, provider="p")  # never KeyError/TypeError
    assert type(err) is cls
    assert err.status_code == status and err.request_id == "req_9"
    assert "req_9" in str(err) and "[p]" in str(err)


def test_error_from_exception_scrubs_the_cause():
    key = "sk-ant-api03-SCRUBMEabcdefghijklmnop"
    req = httpx.Request("POST", "http://x", headers={"x-api-key": key})
    exc = httpx.ConnectError(f"refused while sending {key}", request=req)
    err = E.error_from_exception(exc, provider="p")
    assert type(err) is E.ConnectionFailed and err.__suppress_context__
    cause = err.__cause__
    assert type(cause) is httpx.ConnectError and "refused" in str(cause)
    assert key not in str(cause) and key not in str(err)
    with pytest.raises(RuntimeError):  # no request attached: its headers are gone
        cause.request  # noqa: B018
    pool = E.error_from_exception(httpx.PoolTimeout("pool", request=req), provider="p")
    assert type(pool) is E.ConnectionPoolTimeout and not E.is_outage(pool) and pool.retryable


# -- describe / redact -----------------------------------------------------------------------------
def test_describe_brief_and_full():
    err = E.ServerError("down sk-proj-ABCDEFGHIJKLMNOP", provider="openai", status_code=503,
                        request_id="req_1")
    assert E.describe(err, brief=True) == "ServerError 503 from openai"
    full = E.describe(err)
    assert full.startswith("ServerError: [openai] HTTP 503: down sk-proj-***")
    assert "ABCDEFGH" not in full and "req_1" in full
    assert E.describe(ValueError("x" * 1000), limit=50).endswith("...")
    assert len(E.describe(ValueError("x" * 1000), limit=50)) == 50
    assert E.describe(None) == "no error given"


def test_redact_masks_keys_tokens_and_url_passwords():
    assert E.redact("key: sk-proj-ABCDEFGH12345678!") == "key: sk-proj-***!"
    assert E.redact("Authorization: Bearer abc.def-123456") == "Authorization: Bearer ***"
    assert E.redact("https://user:hunter22@proxy.example/v1") == "https://user:***@proxy.example/v1"
    assert E.redact("x?api_key=zzz&y=1") == "x?api_key=***&y=1"
    assert E.redact("no secrets here, Basic authentication") == (
        "no secrets here, Basic authentication")
    assert E.redact("plain secret value", "secret value") == "plain ***"


def test_no_breaker_counts_a_local_pool_timeout():
    from llm_patterns import CircuitBreaker, VirtualClock

    breaker = CircuitBreaker("p", failure_threshold=1, clock=VirtualClock())
    req = httpx.Request("POST", "http://x")
    for _ in range(3):
        breaker.record_failure(E.error_from_exception(httpx.PoolTimeout("p", request=req)))
        breaker.record_failure(httpx.PoolTimeout("raw", request=req))
    assert breaker.state == "closed"
    breaker.record_failure(E.error_from_exception(httpx.ConnectTimeout("c", request=req)))
    assert breaker.state == "open"  # a remote timeout does count


def test_describe_and_redact_check_their_arguments():
    with pytest.raises(ValueError, match="limit"):
        E.describe(ValueError("x"), limit=0)
    with pytest.raises(TypeError, match="limit"):
        E.describe(ValueError("x"), limit="50")
    with pytest.raises(TypeError, match="str"):
        E.redact(b"bytes")
