"""usd_string: the API's money text — no exponent, trailing zeros dropped down to cents, exact."""

from decimal import Decimal

import pytest

from apps.core.money import usd_string


@pytest.mark.parametrize("amount, text", [
    ("1.5000000000", "1.50"), ("0.0123000000", "0.0123"), ("100", "100.00"), ("1E+2", "100.00"),
    ("1.23E+5", "123000.00"), ("0E-10", "0.00"), ("-0E-10", "-0.00"), ("-1.2300", "-1.23"), ("12.345", "12.345"),
    ("0.0000000001", "0.0000000001"), ("7", "7.00"), ("123456789012345.6789012345", "123456789012345.6789012345"),
])
def test_usd_string_formats_amounts_without_exponent_and_with_at_least_cents(amount, text):
    assert usd_string(Decimal(amount)) == text


def test_usd_string_keeps_every_digit_of_a_long_sum():
    # Decimal.normalize() would round to the context's 28 significant digits.
    amount = Decimal("1234567890123456789012.3456789012")
    assert usd_string(amount) == "1234567890123456789012.3456789012"


def test_usd_string_passes_none_through():
    assert usd_string(None) is None


def test_usd_string_equals_the_fixed_point_text_of_any_amount():
    # str() is the fast path and format(amount, "f") the reference for whatever carries an exponent.
    import random

    rng = random.Random(7)
    for _ in range(2000):
        amount = Decimal(rng.randint(-10**15, 10**15)).scaleb(rng.randint(-12, 3))
        whole, _, fraction = format(amount, "f").partition(".")
        assert usd_string(amount) == f"{whole}.{fraction.rstrip('0').ljust(2, '0')}", amount
