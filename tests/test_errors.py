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
