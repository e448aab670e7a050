"""Task 4 check: a fallback chain over providers given as ``{"name", "call_fn"}`` dicts."""

from __future__ import annotations

from typing import Any

from llm_patterns import errors as E

from ._framework import DEFAULT_BUDGET, CheckResult, Criterion, Fail, capture_logs, run_check

__all__ = ["check_task4"]

TITLE = "Task 4 · Fallback chain"
PROMPT = "Summarize: the pipeline is healthy."


class _Provider:
    """A scripted provider: raises ``error`` if given, else answers; remembers its calls."""

    def __init__(self, name: str, error: BaseException | None = None) -> None:
        self.name = name
        self.error = error
        self.prompts: list[Any] = []

    def __call__(self, prompt: Any) -> str:
        self.prompts.append(prompt)
        if self.error is not None:
            raise self.error
        return f"answer from {self.name}"

    def spec(self) -> dict[str, Any]:
        return {"name": self.name, "call_fn": self}


def _result(result: Any) -> dict[str, Any]:
    if not isinstance(result, dict):
        raise Fail(
            f"call_with_fallback returned {type(result).__name__}: return a dict "
            '{"provider": name, "response": text, "fallback_used": bool}'
        )
    missing = [k for k in ("provider", "response", "fallback_used") if k not in result]
    if missing:
        raise Fail(f"the result has no {', '.join(map(repr, missing))} key: {sorted(result)}")
    return result


def _first_works(call_with_fallback: Any) -> None:
    a, b = _Provider("openai-main"), _Provider("anthropic-backup")
    got = _result(call_with_fallback(PROMPT, [a.spec(), b.spec()]))
    if a.prompts != [PROMPT]:
        raise Fail(
            f"the first provider's call_fn was called with {a.prompts!r}: pass it the prompt"
        )
    if b.prompts:
        raise Fail(
            "the second provider was called although the first answered: stop at the first success"
        )
    want = {
        "provider": "openai-main",
        "response": "answer from openai-main",
        "fallback_used": False,
    }
    got_cmp = {k: got[k] for k in want}
    if got_cmp != want:
        raise Fail(f"when the first provider answers the result is {got_cmp!r}, expected {want!r}")


def _moves_on(call_with_fallback: Any) -> None:
    a = _Provider(
        "openai-main", E.ServerError("unavailable", provider="openai-main", status_code=503)
    )
    b = _Provider(
        "anthropic-backup",
        E.RateLimitError("slow down", provider="anthropic-backup", status_code=429),
    )
    c = _Provider("gemini-spare")
    try:
        got = _result(call_with_fallback(PROMPT, [a.spec(), b.spec(), c.spec()]))
    except (E.ServerError, E.RateLimitError) as exc:
        raise Fail(
            f"a {type(exc).__name__} from one provider escaped the chain: catch the error, "
            "remember it, and try the next provider"
        ) from None
    want = {
        "provider": "gemini-spare",
        "response": "answer from gemini-spare",
        "fallback_used": True,
    }
    got_cmp = {k: got[k] for k in want}
    if got_cmp != want:
        raise Fail(
            f"with the first two providers failing (503, then 429) the result is {got_cmp!r}, "
            f"expected {want!r}"
        )
    if b.prompts != [PROMPT] or c.prompts != [PROMPT]:
        raise Fail("each provider should be tried once, in order, with the prompt")


def _budget_stops(call_with_fallback: Any) -> None:
    stop = E.BudgetExceeded("daily budget of 5 USD reached")
    a, b = _Provider("openai-main", stop), _Provider("anthropic-backup")
    try:
        got = call_with_fallback(PROMPT, [a.spec(), b.spec()])
    except E.BudgetExceeded:
        if b.prompts:
            raise Fail(
                "BudgetExceeded was raised, but only after calling the next provider: "
                "re-raise it at once"
            ) from None
        return
    except E.AllProvidersFailed:
        raise Fail(
            "BudgetExceeded was wrapped in AllProvidersFailed: re-raise it at once (`raise`) — "
            "the next provider would spend money the budget forbids"
        ) from None
    if b.prompts:
        raise Fail(
            "after BudgetExceeded the chain went on to the next provider: catch BudgetExceeded "
            "first and re-raise it — the next provider would spend money the budget forbids"
        )
    raise Fail(f"BudgetExceeded was swallowed (the call returned {got!r}): re-raise it")


def _all_failed(call_with_fallback: Any) -> None:
    errs = [
        E.ServerError("unavailable", provider="openai-main", status_code=503),
        E.ProviderTimeout("timed out", provider="anthropic-backup"),
        E.ConnectionFailed("connection reset", provider="gemini-spare"),
    ]
    names = ["openai-main", "anthropic-backup", "gemini-spare"]
    providers = [_Provider(n, e) for n, e in zip(names, errs)]
    try:
        got = call_with_fallback(PROMPT, [p.spec() for p in providers])
    except E.AllProvidersFailed as exc:
        pairs = list(getattr(exc, "errors", []) or [])
        seen = [(item[0], item[1]) for item in pairs
                if isinstance(item, (tuple, list)) and len(item) == 2]
        if [n for n, _ in seen] != names or any(a is not b for (_, a), b in zip(seen, errs)):
            raise Fail(
                f"AllProvidersFailed.errors is {pairs!r}: pass every (provider name, error) "
                "pair, in order: AllProvidersFailed(errors) with errors.append((name, exc))"
            ) from None
        return
    except BaseException as exc:
        if any(exc is e for e in errs):
            raise Fail(
                f"when every provider fails you re-raised the last error ({type(exc).__name__}): "
                "raise AllProvidersFailed(errors) with every (name, error) pair"
            ) from None
        raise
    raise Fail(f"every provider failed but the call returned {got!r}: raise AllProvidersFailed")


def _interrupts_pass(call_with_fallback: Any) -> None:
    stop = KeyboardInterrupt()  # Ctrl-C in the middle of a provider call
    a, b = _Provider("openai-main", stop), _Provider("anthropic-backup")
    try:
        got = call_with_fallback(PROMPT, [a.spec(), b.spec()])
    except KeyboardInterrupt as exc:
        if b.prompts:
            raise Fail(
                "a KeyboardInterrupt (Ctrl-C) in the first provider went on to the next one: "
                "catch Exception, not BaseException or a bare `except:`"
            ) from None
        if exc is not stop:
            raise Fail(
                "the KeyboardInterrupt came out as a new one: let it through untouched"
            ) from None
        return
    except NotImplementedError:
        raise  # the stub: "not implemented yet"
    except BaseException as exc:
        raise Fail(
            f"a KeyboardInterrupt (Ctrl-C) in the provider came out as {type(exc).__name__}: "
            "catch Exception, not BaseException or a bare `except:` — Ctrl-C and sys.exit() "
            "must stop the program, not fall back"
        ) from None
    went_on = " and the chain went on to the next provider" if b.prompts else ""
    raise Fail(
        f"a KeyboardInterrupt (Ctrl-C) in the first provider was caught{went_on} (the call "
        f"returned {got!r}): catch Exception, not BaseException or a bare `except:`"
    )


def _logs(call_with_fallback: Any) -> None:
    a = _Provider(
        "openai-main", E.ServerError("unavailable", provider="openai-main", status_code=503)
    )
    b = _Provider("anthropic-backup")
    with capture_logs() as records:
        call_with_fallback(PROMPT, [a.spec(), b.spec()])
    messages = [message for _, _, message in records]
    text = "\n".join(messages)
    if not messages:
        raise Fail(
            "nothing was logged: log each failure and the provider that answered with the "
            "logging module (logger = logging.getLogger(__name__); logger.warning(...)), not print"
        )
    missing = [n for n in ("openai-main", "anthropic-backup") if n not in text]
    if missing:
        raise Fail(
            f"the log lines do not name {' or '.join(missing)}: log which provider failed (and "
            f"why) and which one answered. Logged: {messages[:3]!r}"
        )


def check_task4(call_with_fallback: Any, *, budget: float = DEFAULT_BUDGET) -> CheckResult:
    """Check ``call_with_fallback(prompt, providers)`` (SPEC §6)."""
    criteria = [
        Criterion("returns the first provider's answer", lambda: _first_works(call_with_fallback)),
        Criterion(
            "moves on to the next provider when one fails", lambda: _moves_on(call_with_fallback)
        ),
        Criterion("BudgetExceeded stops the chain", lambda: _budget_stops(call_with_fallback)),
        Criterion(
            "all failed: AllProvidersFailed with every (name, error)",
            lambda: _all_failed(call_with_fallback),
        ),
        Criterion("logs who failed and who answered", lambda: _logs(call_with_fallback)),
        Criterion(
            "Ctrl-C and sys.exit() pass through untouched",
            lambda: _interrupts_pass(call_with_fallback),
        ),
    ]
    return run_check(
        TITLE, criteria, budget=budget, timeout_hint="each provider should be called once"
    )
