"""One rule for every public argument: the wrong type raises ``TypeError``, a value of the right
type outside what is allowed raises ``ValueError``; both name the parameter, the value and what
was expected (``max_wait must be a finite number >= 0, got -1``).

Every public constructor and method checks its inputs through these few functions, so the same
mistake gets the same message everywhere and nothing is silently coerced (``True`` is not a
number here, ``"no"`` is not a bool, NaN is not a delay).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Collection
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

__all__ = ["boolean", "choice", "integer", "money", "optional", "real", "text"]

T = TypeVar("T")


def _range_text(minimum: float | None, maximum: float | None, *, strict_min: bool) -> str:
    low = "" if minimum is None else (f"> {minimum:g}" if strict_min else f">= {minimum:g}")
    high = "" if maximum is None else f"<= {maximum:g}"
    return " and ".join(part for part in (low, high) if part)


def real(name: str, value: Any, *, minimum: float | None = None, maximum: float | None = None,
         strict_min: bool = False, allow_inf: bool = False) -> float:
    """``value`` as a float: a real number (not a bool), finite unless ``allow_inf``, within
    ``[minimum, maximum]`` (``(minimum, maximum]`` when ``strict_min``)."""
    cls = value.__class__
    # the common cases (int, float) skip the isinstance checks
    if (cls is not int and cls is not float
            and (isinstance(value, bool) or not isinstance(value, numbers.Real))):
        raise TypeError(f"{name} must be a number, got {value!r}")
    v = float(value)
    bad = math.isnan(v) or (math.isinf(v) and not allow_inf)
    if not bad and minimum is not None:
        bad = v <= minimum if strict_min else v < minimum
    if not bad and maximum is not None:
        bad = v > maximum
    if bad:
        bounds = _range_text(minimum, maximum, strict_min=strict_min)
        kind = "a number" if allow_inf else "a finite number"
        raise ValueError(f"{name} must be {kind}{' ' + bounds if bounds else ''}, got {value!r}")
    return v


def integer(name: str, value: Any, *, minimum: int | None = None,
            maximum: int | None = None) -> int:
    """``value`` as an int (not a bool, not a float with no fraction) within the bounds."""
    if value.__class__ is not int and (isinstance(value, bool) or not isinstance(value, int)):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        bounds = _range_text(minimum, maximum, strict_min=False)
        raise ValueError(f"{name} must be an int {bounds}, got {value!r}")
    return int(value)


def boolean(name: str, value: Any) -> bool:
    """``value`` when it is a bool: ``"no"``, ``0`` or ``None`` are not silently true or false."""
    if value is True or value is False:
        return value
    raise TypeError(f"{name} must be True or False, got {value!r}")


def choice(name: str, value: Any, options: Collection[T]) -> T:
    """``value`` when it is one of ``options`` (listed in the error)."""
    try:
        if value in options:
            return value  # type: ignore[no-any-return]
    except TypeError:  # unhashable value against a set of options
        pass
    listed = ", ".join(repr(o) for o in options)
    raise ValueError(f"{name} must be one of {listed}, got {value!r}")


def text(name: str, value: Any, *, empty: bool = False) -> str:
    """``value`` when it is a str (non-empty unless ``empty``)."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {value!r}")
    if not empty and not value.strip():
        raise ValueError(f"{name} must be a non-empty str, got {value!r}")
    return value


def money(name: str, value: Any, *, minimum: Decimal | int = 0) -> Decimal:
    """A USD amount as an exact ``Decimal``: from an int, a finite float (through its shortest
    repr, so ``0.1`` is ``Decimal('0.1')``), a Decimal or a numeric string."""
    is_float = isinstance(value, float)  # before narrowing: mypy sees Real and float as disjoint
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, Decimal, str)):
        raise TypeError(f"{name} must be an amount in USD (int, float, Decimal or str), "
                        f"got {value!r}")
    try:
        amount = value if isinstance(value, Decimal) else Decimal(
            repr(value) if is_float else str(value))
    except InvalidOperation:
        raise ValueError(f"{name} must be an amount in USD, got {value!r}") from None
    if not amount.is_finite() or amount < minimum:
        raise ValueError(f"{name} must be a finite amount >= {minimum}, got {value!r}")
    return amount


def optional(check: Any, name: str, value: Any, **bounds: Any) -> Any:
    """``None`` passes through; anything else goes through ``check``."""
    return None if value is None else check(name, value, **bounds)
