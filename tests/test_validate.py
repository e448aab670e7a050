"""The one validation rule: wrong type -> TypeError, wrong value -> ValueError, both naming
the parameter, the value and what was expected."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest

from llm_patterns import _validate as v


@pytest.mark.parametrize("value", [True, None, "1", [1], Decimal("1")])
def test_real_rejects_what_is_not_a_real_number_with_type_error(value):
    with pytest.raises(TypeError, match=r"max_wait must be a number, got"):
        v.real("max_wait", value)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, -1, -1e-9])
def test_real_rejects_nan_inf_and_values_below_minimum(value):
    with pytest.raises(ValueError, match=r"max_wait must be a finite number >= 0, got"):
        v.real("max_wait", value, minimum=0)


def test_real_bounds_and_messages():
    assert v.real("x", 3) == 3.0 and type(v.real("x", 3)) is float
    assert v.real("x", math.inf, allow_inf=True) == math.inf
    with pytest.raises(ValueError, match=r"x must be a finite number > 0, got 0"):
        v.real("x", 0, minimum=0, strict_min=True)
    with pytest.raises(ValueError, match=r"x must be a finite number >= 1 and <= 3600, got 1e\+308"):
        v.real("x", 1e308, minimum=1, maximum=3600)
    with pytest.raises(ValueError, match="must be a number >= 0, got nan"):
        v.real("x", math.nan, minimum=0, allow_inf=True)


@pytest.mark.parametrize("value", [True, 1.0, "3", None])
def test_integer_type(value):
    with pytest.raises(TypeError, match=r"failure_threshold must be an int, got"):
        v.integer("failure_threshold", value)


def test_integer_range():
    assert v.integer("n", 5, minimum=1) == 5
    with pytest.raises(ValueError, match=r"n must be an int >= 1, got 0"):
        v.integer("n", 0, minimum=1)


@pytest.mark.parametrize("value", ["no", 0, 1, None, "True"])
def test_boolean_accepts_only_bools(value):
    with pytest.raises(TypeError, match=r"respect_retry_after must be True or False, got"):
        v.boolean("respect_retry_after", value)
    assert v.boolean("b", False) is False


def test_choice_lists_the_options():
    assert v.choice("jitter", "full", ("none", "full")) == "full"
    with pytest.raises(ValueError, match=r"jitter must be one of 'none', 'full', got 'ful'"):
        v.choice("jitter", "ful", ("none", "full"))
    with pytest.raises(ValueError, match=r"got \[1\]"):
        v.choice("jitter", [1], {"none", "full"})


def test_text():
    assert v.text("name", "a") == "a"
    with pytest.raises(TypeError, match="name must be a str, got 3"):
        v.text("name", 3)
    with pytest.raises(ValueError, match="name must be a non-empty str"):
        v.text("name", "  ")


def test_money_is_exact_and_checked():
    assert v.money("budget", 0.1) == Decimal("0.1")
    assert v.money("budget", "2.50") == Decimal("2.50")
    assert v.money("budget", 3) == Decimal(3)
    for bad in (math.nan, math.inf, -1, "abc", "NaN"):
        with pytest.raises(ValueError, match="budget must be"):
            v.money("budget", bad)
    for bad in (True, None, [1]):
        with pytest.raises(TypeError, match="budget must be an amount in USD"):
            v.money("budget", bad)


def test_optional():
    assert v.optional(v.real, "max_wait", None) is None
    assert v.optional(v.real, "max_wait", 2, minimum=0) == 2.0
    with pytest.raises(ValueError, match="max_wait"):
        v.optional(v.real, "max_wait", -2, minimum=0)
