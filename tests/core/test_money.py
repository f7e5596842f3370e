"""usd_string: the API's money text — no exponent, trailing zeros dropped down to cents, exact; money_text:
the text people read on pages, charts and alerts."""

from decimal import Decimal

import pytest

from apps.core.money import money_text, usd_string


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


@pytest.mark.postgres
@pytest.mark.django_db
def test_usd_string_sql_formats_every_amount_as_usd_string_does():
    # The usage document by end user takes its money text from PostgreSQL; it must be the same text.
    import random

    from django.db import connection

    from apps.core.money import usd_string_sql

    rng = random.Random(11)
    amounts = [Decimal(text) for text in ("0", "1.5", "0.0123", "100", "-1.23", "0.0000000001", "12.345",
                                           "99999999999999.9999999999", "-0.0000001")]
    amounts += [Decimal(rng.randint(-10**13, 10**13)).scaleb(-rng.randint(0, 10)) for _ in range(2000)]
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {usd_string_sql('amount')} FROM unnest(%s::numeric(24, 10)[]) AS amount",
                       [amounts])
        texts = [text for (text,) in cursor.fetchall()]
        cursor.execute(f"SELECT {usd_string_sql('NULL::numeric')}")
        assert cursor.fetchone() == (None,)
    # numeric(24, 10) stores each amount at ten places, as the ledger's columns do.
    assert texts == [usd_string(amount.quantize(Decimal("1E-10"))) for amount in amounts]


def test_money_text_rounds_to_cents_but_keeps_sub_cent_amounts_visible():
    assert money_text(Decimal("1234.565")) == "$1,234.57"
    assert money_text(Decimal("0.004213")) == "$0.004213"
    assert money_text(Decimal("0.00000001")) == "<$0.0001"
    assert money_text(Decimal("0")) == "$0.00"
    assert money_text(Decimal("-0.25")) == "-$0.25"
    assert money_text(None) == "—"
