"""Every fault the mock can send on demand (``fail_next(kind)``), in each API's own words.

Each kind is an answer OpenAI or Anthropic really send (sources: the official SDKs' error types,
OpenAI's error-codes guide and help articles, Anthropic's errors and rate-limits pages, and
error bodies quoted in public issue threads). A kind that exists in one API only is answered,
on the other API's endpoint, with that API's nearest real answer of the same meaning (OpenAI's
``credit_balance_exhausted`` on the Anthropic endpoint is Anthropic's "credit balance is too
low" 400, and so on); ``FAULT_KINDS`` documents both.

``content_filter``, ``stream_error`` and ``stream_drop`` change a completion rather than replace
it; the server builds those (see ``server.py``), this module gives their answer when there is
no completion to change.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import Any

from .limits import retry_after_headers
from .wire import error_body

__all__ = ["FAULT_KINDS", "REPLY_FAULTS", "STREAM_FAULTS", "FaultAnswer", "FaultContext",
           "fault_answer"]

# kind -> (OpenAI endpoint's answer, Anthropic endpoint's answer), for the docs and the CLI help
FAULT_KINDS: dict[str, tuple[str, str]] = {
    "rate_limit": ("429 requests/rate_limit_exceeded, retry-after 1",
                   "429 rate_limit_error, retry-after 1"),
    "insufficient_quota": ("429 insufficient_quota", "400 credit balance is too low"),
    "billing_hard_limit_reached": ("400 invalid_request_error/billing_hard_limit_reached",
                                   "400 credit balance is too low"),
    "credit_balance_exhausted": ("429 insufficient_quota/credit_balance_exhausted",
                                 "400 credit balance is too low"),
    "organization_spend_limit_exceeded": (
        "429 insufficient_quota/organization_spend_limit_exceeded",
        "429 rate_limit_error, details.error_code enforced_spend_limit_reached"),
    "project_spend_limit_exceeded": (
        "429 insufficient_quota/project_spend_limit_exceeded",
        "429 rate_limit_error, details.error_code enforced_spend_limit_reached"),
    "organization_usage_limit_exceeded": (
        "429 insufficient_quota/organization_usage_limit_exceeded",
        "429 rate_limit_error, details.error_code contract_spend_limit_reached"),
    "credit_balance_too_low": ("429 insufficient_quota/credit_balance_exhausted",
                               "400 invalid_request_error 'Your credit balance is too low…'"),
    "enforced_spend_limit_reached": (
        "429 insufficient_quota/organization_spend_limit_exceeded",
        "429 rate_limit_error, details.error_code enforced_spend_limit_reached, no retry-after"),
    "contract_spend_limit_reached": (
        "429 insufficient_quota/organization_usage_limit_exceeded",
        "429 rate_limit_error, details.error_code contract_spend_limit_reached, no retry-after"),
    "server_error": ("500 server_error", "500 api_error"),
    "overloaded": ("503 service_unavailable_error/server_is_overloaded", "529 overloaded_error"),
    "timeout": ("no answer until the client's read timeout", "no answer"),
    "context_length_exceeded": ("400 context_length_exceeded", "400 prompt is too long"),
    "malformed": ("200 of HTML from a proxy", "200 of HTML from a proxy"),
    "auth": ("401 invalid_api_key", "401 authentication_error"),
    "model_not_found": ("404 invalid_request_error/model_not_found", "404 not_found_error"),
    "content_filter": ("200, finish_reason content_filter, text cut",
                       "200, stop_reason refusal, text cut"),
    "stream_error": ("streams: an error chunk mid-stream (else 500)",
                     "streams: event: error overloaded_error mid-stream (else 529)"),
    "stream_drop": ("streams: connection dropped mid-stream (else dropped before the answer)",
                    "streams: connection dropped mid-stream (else dropped before the answer)"),
}
REPLY_FAULTS = frozenset({"content_filter"})  # a 200 whose answer the fault changes
STREAM_FAULTS = frozenset({"stream_error", "stream_drop"})  # a stream the fault breaks

_OPENAI_QUOTA = ("You exceeded your current quota, please check your plan and billing details. "
                 "For more information on this error, read the docs: "
                 "https://platform.openai.com/docs/guides/error-codes/api-errors.")
_ANTHROPIC_CREDIT = ("Your credit balance is too low to access the Anthropic API. Please go to "
                     "Plans & Billing to upgrade or purchase credits.")
# OpenAI code -> Anthropic kind of the same meaning, and back
_TO_ANTHROPIC = {"insufficient_quota": "credit_balance_too_low",
                 "billing_hard_limit_reached": "credit_balance_too_low",
                 "credit_balance_exhausted": "credit_balance_too_low",
                 "organization_spend_limit_exceeded": "enforced_spend_limit_reached",
                 "project_spend_limit_exceeded": "enforced_spend_limit_reached",
                 "organization_usage_limit_exceeded": "contract_spend_limit_reached"}
_TO_OPENAI = {"credit_balance_too_low": "credit_balance_exhausted",
              "enforced_spend_limit_reached": "organization_spend_limit_exceeded",
              "contract_spend_limit_reached": "organization_usage_limit_exceeded"}
_DEFAULT_CONTEXT = {"openai": 128_000, "anthropic": 200_000}


@dataclass(frozen=True)
class FaultContext:
    """What a fault's answer may mention: the request and the server's state at arrival."""

    api: str
    model: str
    prompt_tokens: int
    max_tokens: int
    context_window: int | None
    request_id: str
    wall_now: float


@dataclass(frozen=True)
class FaultAnswer:
    """``status`` None: no answer at all (the connection hangs, or drops when ``dropped``)."""

    status: int | None
    body: Any  # a JSON-able dict, or bytes sent as they are
    headers: dict[str, str]
    dropped: bool = False


def _next_month(wall_now: float) -> str:
    now = _dt.datetime.fromtimestamp(wall_now, tz=_dt.UTC)
    year, month = (now.year + 1, 1) if now.month == 12 else (now.year, now.month + 1)
    return f"{year:04d}-{month:02d}-01"


def _err(ctx: FaultContext, status: int, message: str, **kw: Any) -> dict[str, Any]:
    return error_body(ctx.api, status, message, request_id=ctx.request_id, **kw)


def context_error(ctx: FaultContext, prompt_tokens: int, window: int) -> FaultAnswer:
    """400 for a prompt + max_tokens above the context window, in each API's words."""
    if ctx.api == "anthropic":
        if prompt_tokens > window:
            message = f"prompt is too long: {prompt_tokens} tokens > {window} maximum"
        else:
            message = (f"input length and `max_tokens` exceed context limit: {prompt_tokens} "
                       f"+ {ctx.max_tokens} > {window}, decrease input length or `max_tokens` "
                       "and try again")
        return FaultAnswer(400, _err(ctx, 400, message, type="invalid_request_error"), {})
    message = (f"This model's maximum context length is {window} tokens. However, you "
               f"requested {prompt_tokens + ctx.max_tokens} tokens ({prompt_tokens} in the "
               f"messages, {ctx.max_tokens} in the completion). Please reduce the length of the "
               "messages or completion.")
    return FaultAnswer(400, _err(ctx, 400, message, type="invalid_request_error",
                                 code="context_length_exceeded", param="messages"), {})


def _anthropic_billing(ctx: FaultContext, kind: str) -> FaultAnswer:
    if kind == "credit_balance_too_low":
        return FaultAnswer(400, _err(ctx, 400, _ANTHROPIC_CREDIT, type="invalid_request_error"),
                           {})
    if kind == "enforced_spend_limit_reached":
        message = ("You have reached your API usage limits: your organization has crossed its "
                   "monthly API usage threshold, set based on your organization's API tier. You "
                   f"will regain access on {_next_month(ctx.wall_now)} at 00:00 UTC.")
    else:
        message = ("You have reached your API usage limits: your organization has reached the "
                   "spend limit of its contract. Contact your account team to raise it.")
    # no retry-after: waiting seconds does not help
    return FaultAnswer(429, _err(ctx, 429, message, type="rate_limit_error",
                                 details={"error_code": kind}), {})


def _openai_billing(ctx: FaultContext, code: str) -> FaultAnswer:
    if code == "billing_hard_limit_reached":
        return FaultAnswer(400, _err(ctx, 400, "Billing hard limit has been reached",
                                     type="invalid_request_error", code=code), {})
    return FaultAnswer(429, _err(ctx, 429, _OPENAI_QUOTA, type="insufficient_quota", code=code),
                       {})


def fault_answer(kind: str, ctx: FaultContext) -> FaultAnswer:
    """The answer of fault ``kind`` on ``ctx.api``'s endpoint."""
    api = ctx.api
    if kind in _TO_ANTHROPIC or kind in _TO_OPENAI:
        if api == "anthropic":
            return _anthropic_billing(ctx, _TO_ANTHROPIC.get(kind, kind))
        return _openai_billing(ctx, _TO_OPENAI.get(kind, kind))
    if kind == "rate_limit":
        headers = retry_after_headers(1.0)
        if api == "anthropic":  # Anthropic sends retry-after only
            headers.pop("retry-after-ms")
        return FaultAnswer(429, _err(ctx, 429, "Rate limit reached (mock fault). Please try "
                                     "again in 1s.", type="requests" if api == "openai" else None,
                                     code="rate_limit_exceeded"), headers)
    if kind == "server_error" or (kind == "stream_error" and api == "openai"):
        message = ("The server had an error while processing your request. Sorry about that!"
                   if api == "openai" else "Internal server error")
        return FaultAnswer(500, _err(ctx, 500, message, type="server_error"
                                     if api == "openai" else "api_error"), {})
    if kind == "overloaded" and api == "openai":  # OpenAI never sends 529
        return FaultAnswer(503, _err(ctx, 503, "The engine is currently overloaded, please try "
                                     "again later.", type="service_unavailable_error",
                                     code="server_is_overloaded"), {})
    if kind in ("overloaded", "stream_error"):
        return FaultAnswer(529, _err(ctx, 529, "Overloaded", type="overloaded_error"), {})
    if kind == "timeout":
        return FaultAnswer(None, b"", {})
    if kind == "stream_drop":
        return FaultAnswer(None, b"", {}, dropped=True)
    if kind == "context_length_exceeded":
        window = ctx.context_window or _DEFAULT_CONTEXT[api]
        return context_error(ctx, max(ctx.prompt_tokens, window + 1), window)
    if kind == "malformed":
        return FaultAnswer(200, b"<html>502 Bad Gateway</html>",
                           {"content-type": "text/html; charset=utf-8"})
    if kind == "auth":
        if api == "anthropic":
            return FaultAnswer(401, _err(ctx, 401, "invalid x-api-key",
                                         type="authentication_error"), {})
        message = ("Incorrect API key provided. You can find your API key at "
                   "https://platform.openai.com/account/api-keys.")
        return FaultAnswer(401, _err(ctx, 401, message, type="invalid_request_error",
                                     code="invalid_api_key"), {})
    if kind == "model_not_found":
        if api == "anthropic":
            return FaultAnswer(404, _err(ctx, 404, f"model: {ctx.model}",
                                         type="not_found_error"), {})
        return FaultAnswer(404, _err(ctx, 404, f"The model `{ctx.model}` does not exist or you "
                                     "do not have access to it.", type="invalid_request_error",
                                     code="model_not_found"), {})
    raise ValueError(f"fault kind {kind!r} has no error answer of its own")
