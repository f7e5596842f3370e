"""usd_string: the API's money text — no exponent, trailing zeros dropped down to cents, exact; money_text:
the text people read on pages, charts and alerts."""

import math
from decimal import Decimal
from fractions import Fraction

import pytest

from apps.core.money import allocate, money_text, round_cents, usd_string


@pytest.mark.parametrize("amount, text", [
    ("1.5000000000", "1.50"), ("0.0123000000", "0.0123"), ("100", "100.00"), ("1E+2", "100.00"),
    ("1.23E+5", "123000.00"), ("0E-10", "0.00"), ("-1.2300", "-1.23"), ("12.345", "12.345"),
    ("0.0000000001", "0.0000000001"), ("7", "7.00"), ("123456789012345.6789012345", "123456789012345.6789012345"),
])
def test_usd_string_formats_amounts_without_exponent_and_with_at_least_cents(amount, text):
    assert usd_string(Decimal(amount)) == text


@pytest.mark.parametrize("amount", ["-0E-10", "-0.00", "-0"])
def test_usd_string_writes_a_negative_zero_without_its_sign(amount):
    # This pinned "-0E-10" -> "-0.00" before: Decimal keeps a zero's sign, and a sub-cent negative adjustment
    # rounded to cents (round_cents(Decimal("-0.002")) is Decimal("-0.00")) reached statements as "-0.00",
    # which invoicing systems and spreadsheets read inconsistently. A zero amount is "0.00" however it was
    # reached.
    assert usd_string(Decimal(amount)) == "0.00"
    assert usd_string(round_cents(Decimal("-0.002"))) == "0.00"


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
def test_units_usd_string_sql_formats_every_amount_as_usd_string_does():
    # The usage document by end user takes its money text from PostgreSQL, formatted from the rollups' whole
    # ledger units (bigint) and from their totals (SUM of bigint: numeric, past what a bigint holds); it must
    # be usd_string's text of the same amount, whole cents, sub-cent amounts and negatives included.
    import random

    from django.db import connection

    from apps.core.money import LEDGER_UNITS_PER_USD, units_to_usd, units_usd_string_sql

    rng = random.Random(11)
    units = [0, 1, -1, 10**8, -10**8, 15 * 10**9, 123 * 10**10, 10**8 + 1, 9 * 10**7, 2**63 - 1, -(2**63)]
    units += [rng.randint(-10**15, 10**15) * 10**rng.randint(0, 10) // 10**rng.randint(0, 4) for _ in range(3000)]
    units = [value for value in units if -(2**63) <= value < 2**63]
    huge = [10**25 + 5 * 10**8, -(10**25), 10**25 + 7]  # totals: numeric sums of many bigints
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {units_usd_string_sql('value')} FROM unnest(%s::bigint[]) AS value", [units])
        texts = [text for (text,) in cursor.fetchall()]
        cursor.execute(f"SELECT {units_usd_string_sql('value')} FROM unnest(%s::numeric[]) AS value", [huge])
        huge_texts = [text for (text,) in cursor.fetchall()]
        cursor.execute(f"SELECT {units_usd_string_sql('NULL::bigint')}")
        assert cursor.fetchone() == (None,)
    assert texts == [usd_string(units_to_usd(value)) for value in units]
    assert huge_texts == [usd_string(units_to_usd(value)) for value in huge]
    assert usd_string(units_to_usd(LEDGER_UNITS_PER_USD // 100)) == "0.01"


def test_money_text_rounds_to_cents_but_keeps_sub_cent_amounts_visible():
    assert money_text(Decimal("1234.565")) == "$1,234.57"
    assert money_text(Decimal("0.004213")) == "$0.004213"
    assert money_text(Decimal("0.00000001")) == "<$0.0001"
    assert money_text(Decimal("0")) == "$0.00"
    assert money_text(Decimal("-0.25")) == "-$0.25"
    assert money_text(None) == "—"


# --- allocate ------------------------------------------------------------------------------------------


def test_allocate_splits_in_proportion_and_the_parts_add_up_to_the_total_exactly():
    parts = allocate(Decimal("1.0000000000"), {"a": 1, "b": 1, "c": 1})
    # 10^10 units in thirds: one unit left over, to the first key by text (all remainders are equal).
    assert parts == {"a": Decimal("0.3333333334"), "b": Decimal("0.3333333333"), "c": Decimal("0.3333333333")}
    assert sum(parts.values()) == Decimal("1")


def test_allocate_gives_leftover_units_to_the_largest_remainders():
    # 10 units split 1:2:4 → 1.43, 2.86, 5.71: floors 1, 2, 5 and the two left over go to b (.86) and c (.71).
    assert allocate(Decimal("1E-9"), {"a": 1, "b": 2, "c": 4}) == {
        "a": Decimal("1E-10"), "b": Decimal("3E-10"), "c": Decimal("6E-10")}


def test_allocate_stays_exact_with_weights_and_totals_far_past_a_decimal_context():
    # 28 significant digits would not hold units × weight here; integers do.
    total = Decimal("987654321.1234567891")
    weights = {"big": 10**15 + 7, "small": 3, "middle": 123_456_789_012}
    parts = allocate(total, weights)
    assert sum(parts.values()) == total
    weight_sum = sum(weights.values())
    for key, weight in weights.items():  # each part is its exact share, floored or one ledger unit above
        exact = Fraction(total) * weight / weight_sum
        assert 0 <= Fraction(parts[key]) - math.floor(exact * 10**10) / Fraction(10**10) <= Fraction(1, 10**10)


def test_allocate_of_nothing_or_by_no_weight_is_zero_everywhere():
    assert allocate(Decimal("0"), {"a": 2}) == {"a": Decimal("0")}
    assert allocate(Decimal("5"), {"a": 0, "b": 0}) == {"a": Decimal("0"), "b": Decimal("0")}
    assert allocate(Decimal("5"), {}) == {}


def test_allocate_splits_a_negative_total_as_the_mirror_of_the_positive_one():
    assert allocate(Decimal("-1E-9"), {"a": 1, "b": 2, "c": 4}) == {
        "a": Decimal("-1E-10"), "b": Decimal("-3E-10"), "c": Decimal("-6E-10")}
