"""Prices per million tokens, and what one request cost, in exact ``Decimal`` dollars.

``Pricing`` is one model's price sheet; ``PriceTable`` finds the sheet for a model name, either
from a mapping you give it or (default) from the bundled snapshot of the ``genai-prices``
package, offline: we never call ``UpdatePrices`` (its refresh once replaced a correct snapshot
with stale data, genai-prices #703) and never touch the network.

Token accounting follows OpenAI: ``prompt_tokens`` INCLUDES the cached (and cache-write) tokens,
so ``uncached = prompt - cached - cache_write``. Anthropic reports ``input_tokens`` EXCLUDING
cache reads and writes; ``normalize_usage`` converts every shape to one form (mixing the two up
is how LiteLLM double-counted cached tokens, issues #6215 and #9812). Usage is priced as billed:
cache reads at the cache-read price, cache writes at the cache-write price (1-hour writes at the
1-hour price when the price sheet has one), reasoning tokens as the output they are part of.

A dated snapshot name resolves to its family when only the family is priced
(``gpt-4o-mini-2024-07-18`` -> ``gpt-4o-mini``, ``claude-sonnet-4-5-20250929`` ->
``claude-sonnet-4-5``), as genai-prices' own matching does: OpenAI answers with the dated name
of the model it ran, and a price table listing only the family must still price it.

Money is ``Decimal``: 10,000 x $0.0013 is exactly $13, where floats give 13.00000000000106.

Long-context tiers (genai-prices' "cliff" model, e.g. claude-sonnet-4-5 above 200k input tokens
pays the higher rate on EVERY token): ``table[model]`` is the base tier, and ``table.cost`` hands
a request whose input crosses the tier to ``genai-prices`` itself, so the bill matches theirs.
"""

from __future__ import annotations

import datetime as _dt
import decimal
import difflib
import logging
import operator
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from .response import Usage as _Usage

__all__ = [
    "PriceTable",
    "Pricing",
    "TokenCounts",
    "UnknownModelError",
    "model_family",
    "normalize_usage",
    "to_money",
]

logger = logging.getLogger("llm_patterns.pricing")

#: Decimal arithmetic for money: wide enough that no sum of real costs is ever rounded.
MONEY_CONTEXT = decimal.Context(prec=60)
MILLION = Decimal(1_000_000)

_MISSING = object()


# --------------------------------------------------------------------------- money

def to_money(name: str, value: object, *, allow_none: bool = False) -> Decimal | None:
    """``value`` as a finite Decimal >= 0 (floats via ``str`` so 0.15 stays 0.15).

    ``name`` is the parameter, used in the error message.
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str, Decimal)):
        raise TypeError(
            f"{name} must be a number (int, float, str or Decimal), got {value!r} "
            f"({type(value).__name__})"
        )
    try:
        money = Decimal(str(value)) if isinstance(value, float) else Decimal(value)
    except decimal.InvalidOperation:
        raise ValueError(f"{name} must be a number of dollars, got {value!r}") from None
    if not money.is_finite():
        raise ValueError(f"{name} must be finite, got {value!r}")
    if money < 0:
        raise ValueError(f"{name} must be >= 0 dollars, got {value!r}")
    return money


# --------------------------------------------------------------------------- usage

_COUNT_FIELDS = ("prompt_tokens", "completion_tokens", "cached_tokens", "cache_write_tokens",
                 "cache_write_1h_tokens")


@dataclass(frozen=True)
class TokenCounts:
    """One request's tokens, OpenAI-style: ``prompt_tokens`` includes ``cached_tokens`` (cache
    reads) and ``cache_write_tokens`` (Anthropic cache creation), of which
    ``cache_write_1h_tokens`` were written with a 1-hour TTL. ``completion_tokens`` includes any
    reasoning tokens (billed as output)."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0

    def __post_init__(self) -> None:
        for key in _COUNT_FIELDS:
            object.__setattr__(self, key, _count(key, getattr(self, key)))
        if self.cached_tokens + self.cache_write_tokens > self.prompt_tokens:
            raise ValueError(
                f"cached_tokens ({self.cached_tokens}) + cache_write_tokens "
                f"({self.cache_write_tokens}) exceed prompt_tokens ({self.prompt_tokens}): cached "
                "tokens are part of the prompt (OpenAI-style usage)"
            )
        if self.cache_write_1h_tokens > self.cache_write_tokens:
            raise ValueError(
                f"cache_write_1h_tokens ({self.cache_write_1h_tokens}) exceed cache_write_tokens "
                f"({self.cache_write_tokens}): the 1-hour writes are part of the writes"
            )

    @property
    def uncached_tokens(self) -> int:
        """Prompt tokens billed at the full input price."""
        return self.prompt_tokens - self.cached_tokens - self.cache_write_tokens

    @property
    def cache_write_5m_tokens(self) -> int:
        """Cache writes with the default 5-minute TTL (billed at the cache-write price)."""
        return self.cache_write_tokens - self.cache_write_1h_tokens

    @classmethod
    def _trusted(cls, prompt: int, completion: int, cached: int, write: int,
                 write_1h: int) -> TokenCounts:
        """Counts already validated elsewhere (a ``Usage`` checks the same invariants when it is
        built): made without re-checking them, since every recorded call goes through here."""
        counts = object.__new__(cls)
        setter = object.__setattr__
        setter(counts, "prompt_tokens", prompt)
        setter(counts, "completion_tokens", completion)
        setter(counts, "cached_tokens", cached)
        setter(counts, "cache_write_tokens", write)
        setter(counts, "cache_write_1h_tokens", write_1h)
        return counts


def _count(key: str, value: object) -> int:
    if isinstance(value, bool):
        raise TypeError(f"usage {key} must be an int, got {value!r}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    try:
        n = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"usage {key} must be an int, got {value!r} ({type(value).__name__})"
        ) from None
    if n < 0:
        raise ValueError(f"usage {key} must be >= 0, got {n}")
    return n


def _get(obj: object, key: str) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key, _MISSING)
    return getattr(obj, key, _MISSING)


def _opt(obj: object, key: str) -> int:
    """An optional count: missing or None is 0."""
    value = _get(obj, key)
    return 0 if value is _MISSING or value is None else _count(key, value)


def _nested(obj: object, outer: str, inner: str) -> int:
    details = _get(obj, outer)
    if details is _MISSING or details is None:
        return 0
    return _opt(details, inner)


def _keys_found(obj: object) -> str:
    if isinstance(obj, Mapping):
        return ", ".join(sorted(map(str, obj))) or "none"
    names = [n for n in dir(obj) if not n.startswith("_") and not callable(getattr(obj, n, None))]
    return f"{type(obj).__name__} with " + (", ".join(names) or "no attributes")


def normalize_usage(usage: object) -> TokenCounts:
    """Read a provider's usage report into ``TokenCounts`` (OpenAI-style, cached in prompt).

    Accepted shapes (dicts or objects with these attributes, e.g. the SDKs' pydantic models):

    - OpenAI chat / our ``Usage``: ``prompt_tokens``, ``completion_tokens`` (reasoning
      included), and ``cached_tokens`` or ``prompt_tokens_details.cached_tokens`` (a SUBSET of
      prompt_tokens); ``cache_write_tokens`` / ``cache_write_1h_tokens`` when present.
    - OpenAI Responses API: ``input_tokens`` with ``input_tokens_details.cached_tokens`` (subset).
    - Anthropic: ``input_tokens`` (EXCLUDING cache reads and writes), ``output_tokens``,
      ``cache_read_input_tokens``, ``cache_creation_input_tokens`` (its 1-hour part in
      ``cache_creation.ephemeral_1h_input_tokens``).
    - Gemini ``usageMetadata``: ``promptTokenCount`` (incl. ``cachedContentTokenCount``),
      ``candidatesTokenCount`` + ``thoughtsTokenCount`` (thinking is billed as output).

    Negative counts raise ``ValueError``; any other shape raises ``TypeError`` naming the keys.
    """
    if isinstance(usage, TokenCounts):
        return usage
    if type(usage) is _Usage:  # validated when built: the common case, read without re-checking
        return TokenCounts._trusted(usage.prompt_tokens, usage.completion_tokens,
                                    usage.cached_tokens, usage.cache_write_tokens,
                                    usage.cache_write_1h_tokens)
    if usage is None or isinstance(usage, (str, bytes, int, float)):
        raise TypeError(f"usage must be a usage dict or object, got {usage!r}")
    prompt = _get(usage, "prompt_tokens")
    if prompt is not _MISSING and prompt is not None:  # OpenAI chat completions, our Usage
        cached = _get(usage, "cached_tokens")
        cached = (
            _nested(usage, "prompt_tokens_details", "cached_tokens")
            if cached is _MISSING or cached is None
            else _count("cached_tokens", cached)
        )
        return TokenCounts(
            _count("prompt_tokens", prompt),
            _opt(usage, "completion_tokens"),
            cached,
            _opt(usage, "cache_write_tokens"),
            _opt(usage, "cache_write_1h_tokens"),
        )
    inp = _get(usage, "input_tokens")
    if inp is not _MISSING and inp is not None:
        inp = _count("input_tokens", inp)
        details = _get(usage, "input_tokens_details")
        if details is not _MISSING and details is not None:  # OpenAI Responses API
            return TokenCounts(inp, _opt(usage, "output_tokens"), _opt(details, "cached_tokens"))
        read = _opt(usage, "cache_read_input_tokens")  # Anthropic: input excludes the cache
        write = _opt(usage, "cache_creation_input_tokens")
        write_1h = _nested(usage, "cache_creation", "ephemeral_1h_input_tokens")
        if not write and write_1h:  # only the split given: the writes are its sum
            write = write_1h + _nested(usage, "cache_creation", "ephemeral_5m_input_tokens")
        return TokenCounts(inp + read + write, _opt(usage, "output_tokens"), read, write,
                           min(write_1h, write))
    gprompt = _get(usage, "promptTokenCount")
    if gprompt is not _MISSING and gprompt is not None:  # Gemini usageMetadata
        return TokenCounts(
            _count("promptTokenCount", gprompt),
            _opt(usage, "candidatesTokenCount") + _opt(usage, "thoughtsTokenCount"),
            _opt(usage, "cachedContentTokenCount"),
        )
    raise TypeError(
        "usage must be an OpenAI (prompt_tokens, completion_tokens), Anthropic (input_tokens, "
        "output_tokens, cache_read_input_tokens) or Gemini (promptTokenCount) usage report or a "
        f"Usage; found {_keys_found(usage)}"
    )


# --------------------------------------------------------------------------- Pricing

Money = Decimal | float | int | str
"""An amount ``to_money`` reads: a Decimal, a number or its decimal string."""


@dataclass(frozen=True)
class Pricing:
    """One model's prices in USD per MILLION tokens (not per thousand).

    ``cached_input_per_million`` prices cache reads (None: the input price);
    ``cache_write_per_million`` prices Anthropic cache creation with the default 5-minute TTL
    (None: the input price); ``cache_write_1h_per_million`` prices 1-hour cache writes (None: the
    5-minute write price, the best price known).
    """

    input_per_million: Decimal
    output_per_million: Decimal
    cached_input_per_million: Decimal | None = None
    cache_write_per_million: Decimal | None = field(default=None, kw_only=True)
    cache_write_1h_per_million: Decimal | None = field(default=None, kw_only=True)

    if TYPE_CHECKING:  # the generated __init__ takes any amount ``to_money`` reads
        def __init__(self, input_per_million: Money, output_per_million: Money,
                     cached_input_per_million: Money | None = None, *,
                     cache_write_per_million: Money | None = None,
                     cache_write_1h_per_million: Money | None = None) -> None: ...

    def __post_init__(self) -> None:
        for key in ("input_per_million", "output_per_million"):
            object.__setattr__(self, key, to_money(key, getattr(self, key)))
        for key in ("cached_input_per_million", "cache_write_per_million",
                    "cache_write_1h_per_million"):
            object.__setattr__(self, key, to_money(key, getattr(self, key), allow_none=True))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, name: str = "pricing") -> Pricing:
        """From ``{"input": .., "output": .., "cached_input": .., "cache_write": ..,
        "cache_write_1h": ..}`` (all but the first two optional); the field names of ``Pricing``
        work too."""
        aliases = {
            "input": "input_per_million", "output": "output_per_million",
            "cached_input": "cached_input_per_million", "cache_write": "cache_write_per_million",
            "cache_write_1h": "cache_write_1h_per_million",
        }
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            target = aliases.get(key, key)
            if target not in aliases.values():
                raise ValueError(
                    f"{name}: unknown price key {key!r}; expected input, output, cached_input, "
                    "cache_write, cache_write_1h (USD per million tokens)"
                )
            kwargs[target] = value
        missing = [k for k in ("input_per_million", "output_per_million") if k not in kwargs]
        if missing:
            what = " and ".join(m.split("_")[0] for m in missing)
            raise ValueError(f"{name}: missing {what} price in {dict(data)!r}")
        return cls(**kwargs)

    def cost(self, usage: object) -> Decimal:
        """What ``usage`` (any shape ``normalize_usage`` reads) costs at these prices."""
        c = normalize_usage(usage)
        inp = self.input_per_million
        cached = inp if self.cached_input_per_million is None else self.cached_input_per_million
        write = inp if self.cache_write_per_million is None else self.cache_write_per_million
        write_1h = write if self.cache_write_1h_per_million is None \
            else self.cache_write_1h_per_million
        # exact sums in MONEY_CONTEXT whatever the thread's decimal context
        ctx = MONEY_CONTEXT
        mul, add = ctx.multiply, ctx.add
        micro = add(add(add(add(mul(c.uncached_tokens, inp), mul(c.cached_tokens, cached)),
                            mul(c.cache_write_5m_tokens, write)),
                        mul(c.cache_write_1h_tokens, write_1h)),
                    mul(c.completion_tokens, self.output_per_million))
        return ctx.divide(micro, MILLION)

    def __str__(self) -> str:
        parts = [f"${self.input_per_million}/M in", f"${self.output_per_million}/M out"]
        if self.cached_input_per_million is not None:
            parts.insert(1, f"${self.cached_input_per_million}/M cached")
        if self.cache_write_per_million is not None:
            parts.insert(-1, f"${self.cache_write_per_million}/M cache write")
        if self.cache_write_1h_per_million is not None:
            parts.insert(-1, f"${self.cache_write_1h_per_million}/M 1h cache write")
        return ", ".join(parts)


def _as_pricing(value: object, name: str) -> Pricing:
    if isinstance(value, Pricing):
        return value
    if isinstance(value, Mapping):
        return Pricing.from_dict(value, name=name)
    raise TypeError(
        f"{name} must be a Pricing or a dict of prices, got {value!r} ({type(value).__name__})"
    )


# --------------------------------------------------------------------------- PriceTable

class UnknownModelError(KeyError):
    """No price for this model: a ``KeyError`` whose message reads well (KeyError's own
    repr does not)."""

    def __init__(self, model: str, message: str) -> None:
        super().__init__(model)
        self.model = model
        self.message = message

    def __str__(self) -> str:
        return self.message


@dataclass
class _Entry:
    pricing: Pricing
    day: _dt.date | None = None        # genai-prices entries: prices can change by date
    tier_start: int | None = None      # input tokens above which genai-prices' tier applies
    dynamic: bool = False              # time-of-day prices: always ask genai-prices
    gp_model: Any = None
    gp_provider: Any = None
    is_default: bool = False
    # token counts -> (counts, cost): repeated usage priced once (bounded: _COST_CACHE_SIZE)
    costs: dict[tuple[int, ...], tuple[TokenCounts, Decimal]] = field(
        default_factory=dict, repr=False)


_COST_CACHE_SIZE = 4096
_MODEL_CACHE_SIZE = 1024  # model names come from the providers' answers: never an unbounded dict

# A dated snapshot suffix: -2024-07-18 (OpenAI), -20250929 or @20250929 (Anthropic, Vertex),
# -0613 / -1106 (older OpenAI: a month and a day)
_SNAPSHOT = re.compile(
    r"(?:[-@](?:\d{4}-\d{2}-\d{2}|20\d{6})|-(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01]))$")


def model_family(model: str) -> str | None:
    """The family of a dated snapshot name (``gpt-4o-mini-2024-07-18`` -> ``gpt-4o-mini``,
    ``claude-sonnet-4-5-20250929`` -> ``claude-sonnet-4-5``); None when it carries no date."""
    family = _SNAPSHOT.sub("", model)
    return family if family != model and family else None


def _tier_base(value: Any) -> tuple[Any, int | None]:
    tiers = getattr(value, "tiers", None)
    if tiers is None:
        return value, None
    return value.base, min((t.start for t in tiers), default=None)


class PriceTable:
    """Model name -> ``Pricing``; with no mapping, the bundled genai-prices snapshot (offline).

    ``table[model]``, ``model in table``, ``table.get(model)``, ``table.cost(model, usage)``.
    An unknown model raises ``UnknownModelError`` (a ``KeyError``) naming it and suggesting
    close names, never a silent $0 or a cheaper model's price, unless ``default`` is given
    (then a WARNING is logged once per model that falls back to it).

    genai-prices names: its own matching applies, so dated ids and aliases resolve
    (``gpt-4o-2024-08-06``, ``claude-sonnet-4-5-20250929``, ``claude-sonnet-4.5``); a
    ``provider/model`` prefix (``openai/gpt-4o``, ``models/gemini-2.5-pro``) is also tried.
    A mapping resolves a dated snapshot to its family the same way (``model_family``) when the
    dated name itself is not listed.
    Lookups are cached (per model and day), so pricing a call costs microseconds.
    """

    def __init__(self, mapping: Mapping[str, Pricing | Mapping[str, Any]] | None = None, *,
                 default: Pricing | Mapping[str, Any] | None = None) -> None:
        if mapping is not None and not isinstance(mapping, Mapping):
            raise TypeError(
                f"mapping must be a dict of model -> Pricing, got {type(mapping).__name__}"
            )
        self._mapping: dict[str, Pricing] | None = None
        self._lower: dict[str, str] = {}
        if mapping is not None:
            self._mapping = {}
            for model, value in mapping.items():
                if not isinstance(model, str) or not model:
                    raise TypeError(f"mapping keys must be model names (str), got {model!r}")
                self._mapping[model] = _as_pricing(value, f"mapping[{model!r}]")
                self._lower.setdefault(model.lower(), model)
        self.default = None if default is None else _as_pricing(default, "default")
        self._cache: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    @property
    def source(self) -> str:
        """Where the prices come from: ``"mapping"`` or ``"genai-prices <version>"``."""
        if self._mapping is not None:
            return "mapping"
        import genai_prices

        return f"genai-prices {genai_prices.__version__}"

    # -- lookups

    def _entry(self, model: str, *, use_default: bool = True) -> _Entry:
        if not isinstance(model, str):
            raise TypeError(f"model must be a str, got {model!r} ({type(model).__name__})")
        entry = self._cache.get(model)
        if entry is not None and (entry.day is None or entry.day == _dt.date.today()):
            if use_default or not entry.is_default:
                return entry
            raise self._unknown(model)
        entry = self._resolve(model)
        if entry is None:
            if self.default is None or not use_default:
                raise self._unknown(model)
            logger.warning(
                "no price for model %r in %s; using the default %s", model, self.source,
                self.default)
            entry = _Entry(self.default, is_default=True)
        with self._lock:
            if len(self._cache) >= _MODEL_CACHE_SIZE:
                self._cache.clear()  # bounded: re-resolving costs microseconds
            self._cache[model] = entry
        return entry

    def _resolve(self, model: str) -> _Entry | None:
        if self._mapping is not None:
            key = self._key(model)
            if key is None:
                family = model_family(model)
                key = None if family is None else self._key(family)
                if key is not None:
                    logger.info("pricing model %r as %r (its dated snapshot)", model, key)
            return None if key is None else _Entry(self._mapping[key])
        return _genai_entry(model)

    def _key(self, model: str) -> str | None:
        """The mapping's key for ``model``: itself or a case-insensitive match."""
        assert self._mapping is not None
        return model if model in self._mapping else self._lower.get(model.lower())

    def _unknown(self, model: str) -> UnknownModelError:
        names = list(self._mapping) if self._mapping is not None else _genai_model_ids()
        close = difflib.get_close_matches(model, names, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        return UnknownModelError(model, f"no price for model {model!r} in {self.source}{hint}")

    def __getitem__(self, model: str) -> Pricing:
        return self._entry(model).pricing

    def __contains__(self, model: object) -> bool:
        """True when the model has its own price (the ``default`` does not count)."""
        if not isinstance(model, str):
            return False
        try:
            self._entry(model, use_default=False)
        except KeyError:
            return False
        return True

    def get(self, model: str, default: Pricing | None = None) -> Pricing | None:
        """``table[model]``, or ``default`` when that raises ``KeyError``."""
        try:
            return self[model]
        except KeyError:
            return default

    def cost(self, model: str, usage: object) -> Decimal:
        """What ``usage`` cost on ``model``, in USD (Decimal).

        Tiered genai-prices models whose input crosses a tier (and time-of-day prices) are
        priced by ``genai_prices`` itself; everything else by the cached ``Pricing``.
        """
        return self.price(model, usage)[1]

    def price(self, model: str, usage: object) -> tuple[TokenCounts, Decimal]:
        """``(normalize_usage(usage), cost)``: what a cost tracker records, the usage read once
        (and the cost of a repeated usage computed once)."""
        entry = self._entry(model)
        if type(usage) is _Usage and entry.gp_model is None:
            # a provider's Usage priced before: found by its counts without building
            # TokenCounts (0.4 us of CostTracker.record's 1.5, benchmarks/overhead.py)
            hit = entry.costs.get((usage.prompt_tokens, usage.completion_tokens,
                                   usage.cached_tokens, usage.cache_write_tokens,
                                   usage.cache_write_1h_tokens))
            if hit is not None:
                return hit
        counts = normalize_usage(usage)
        if entry.gp_model is not None and (
            entry.dynamic
            or (entry.tier_start is not None and counts.prompt_tokens > entry.tier_start)
        ):
            return counts, _genai_cost(entry, counts)
        key = (counts.prompt_tokens, counts.completion_tokens, counts.cached_tokens,
               counts.cache_write_tokens, counts.cache_write_1h_tokens)
        costs = entry.costs
        priced = costs.get(key)
        if priced is None:
            priced = (counts, entry.pricing.cost(counts))
            if len(costs) >= _COST_CACHE_SIZE:
                costs.clear()  # bounded
            costs[key] = priced
        return priced

    def __repr__(self) -> str:
        size = f"{len(self._mapping)} models" if self._mapping is not None else "genai-prices"
        default = f", default={self.default}" if self.default is not None else ""
        return f"PriceTable({size}{default})"


# --------------------------------------------------------------------------- genai-prices

def _genai_entry(model: str) -> _Entry | None:
    from genai_prices import data_snapshot

    snapshot = data_snapshot.get_snapshot()  # bundled, unless the caller ran UpdatePrices
    candidates: list[tuple[str, str | None]] = [(model, None)]
    if "/" in model:
        prefix, rest = model.split("/", 1)
        candidates += [(rest, prefix), (model.rsplit("/", 1)[1], None)]
    for ref, provider_id in candidates:
        try:
            provider, info = snapshot.find_provider_model(ref, None, provider_id, None)
        except LookupError:
            continue
        break
    else:
        return None
    today = _dt.date.today()
    prices = info.get_prices(_dt.datetime.now(tz=_dt.UTC))
    inp, t1 = _tier_base(getattr(prices, "input_mtok", None))
    if inp is None:  # image-only or per-request models: not a token price
        logger.warning("genai-prices has no per-token input price for %r (%s)", model, info.id)
        return None
    out, t2 = _tier_base(getattr(prices, "output_mtok", None))
    cached, t3 = _tier_base(getattr(prices, "cache_read_mtok", None))
    write, t4 = _tier_base(getattr(prices, "cache_write_mtok", None))
    write_1h, t5 = _tier_base(getattr(prices, "cache_write_1h_mtok", None))
    starts = [t for t in (t1, t2, t3, t4, t5) if t is not None]
    conditional = info.prices if isinstance(info.prices, list) else []
    dynamic = any(type(c.constraint).__name__ == "TimeOfDateConstraint" for c in conditional)
    # no output price: an input-only model (embeddings); per-request fees are not token prices
    pricing = Pricing(inp, out if out is not None else Decimal(0), cached,
                      cache_write_per_million=write, cache_write_1h_per_million=write_1h)
    logger.debug("price for %r: %s:%s %s", model, provider.id, info.id, pricing)
    return _Entry(
        pricing, day=today, tier_start=min(starts) if starts else None, dynamic=dynamic,
        gp_model=info, gp_provider=provider,
    )


def _genai_cost(entry: _Entry, counts: TokenCounts) -> Decimal:
    from genai_prices import Usage

    usage = Usage(
        input_tokens=counts.prompt_tokens,
        cache_read_tokens=counts.cached_tokens,
        cache_write_tokens=counts.cache_write_tokens,
        cache_write_1h_tokens=counts.cache_write_1h_tokens,
        output_tokens=counts.completion_tokens,
    )
    price: Decimal = entry.gp_model.calc_price(usage, entry.gp_provider).total_price
    return price


_ids_lock = threading.Lock()
_ids: list[str] | None = None


def _genai_model_ids() -> list[str]:
    global _ids
    with _ids_lock:
        if _ids is None:
            from genai_prices import data_snapshot

            seen: dict[str, None] = {}
            for provider in data_snapshot.get_snapshot().providers:
                for info in provider.models:
                    seen.setdefault(info.id, None)
            _ids = list(seen)
        return _ids

