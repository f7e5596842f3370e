"""Money is Decimal in USD with a fixed scale; these helpers are the only place that scale is chosen."""

from decimal import ROUND_HALF_UP, Decimal

# Ledger amounts keep 10 decimal places: a token price with 4 decimals per 1M tokens (multipliers included)
# times a whole number of tokens is exact at 10, so rating the shipped price book never rounds; a finer price
# is rounded half up at 10 places (docs/pricing.md). Display and statements round to cents.
LEDGER_PLACES = 10
LEDGER_QUANTUM = Decimal(1).scaleb(-LEDGER_PLACES)
CENT = Decimal("0.01")
ZERO = Decimal("0")

# Django field arguments for every money column in the ledger.
MONEY_FIELD_KWARGS = {"max_digits": 24, "decimal_places": LEDGER_PLACES}

# Whole ledger units (10**-LEDGER_PLACES USD) as integers: the same amounts exactly, kept where PostgreSQL
# sums tens of thousands of rows per request (the end-user rollups, issue #9). Summing bigint is about a
# third cheaper for it than summing numeric; a bigint holds up to ~922 million USD at this scale.
LEDGER_UNITS_PER_USD = 10**LEDGER_PLACES
PRICE_FIELD_KWARGS = {"max_digits": 14, "decimal_places": 6}


def to_decimal(value) -> Decimal:
    """Parse an amount exactly: strings and ints as written, floats via their shortest repr."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(value)


def quantize_ledger(amount: Decimal) -> Decimal:
    return amount.quantize(LEDGER_QUANTUM, rounding=ROUND_HALF_UP)


def usd_to_units(amount: Decimal) -> int:
    """A ledger amount as whole ledger units; ValueError for an amount finer than the ledger's scale (it
    would not be exact)."""
    units = amount.scaleb(LEDGER_PLACES)
    whole = int(units)
    if units != whole:
        raise ValueError(f"{amount} has more than {LEDGER_PLACES} decimal places")
    return whole


def allocate(total: Decimal, weights: dict) -> dict:
    """Split `total` (at the ledger scale) across the keys of `weights` (non-negative integers) in proportion
    to them, at the ledger scale, so that the parts add up to the total exactly: each key gets its floor share
    of ledger units and the units left over go to the largest remainders (ties by the key's text). With no
    weight at all every part is zero."""
    weight_sum = sum(weights.values())
    if not weights or weight_sum == 0 or total == ZERO:
        return {key: ZERO for key in weights}
    sign = -1 if total < ZERO else 1
    units = usd_to_units(abs(total))
    shares, remainders = {}, []
    for key, weight in weights.items():
        share, remainder = divmod(units * weight, weight_sum)  # integers: exact at any size
        shares[key] = share
        remainders.append((-remainder, str(key), key))
    for _remainder, _name, key in sorted(remainders, key=lambda item: item[:2])[:units - sum(shares.values())]:
        shares[key] += 1
    return {key: units_to_usd(sign * share) for key, share in shares.items()}


def units_to_usd(units: int) -> Decimal:
    """Whole ledger units back as a ledger amount (LEDGER_PLACES decimal places, as a money column reads)."""
    return Decimal(units).scaleb(-LEDGER_PLACES)


def units_as_usd_sql(expression: str) -> str:
    """PostgreSQL: an integer (or integral numeric) SQL expression of ledger units as a numeric USD amount
    at the ledger's scale, as a money column reads (a bigint sum is numeric; times 10**-10 exactly)."""
    return f"({expression}) * {LEDGER_QUANTUM:f}"


def usd_as_units_sql(expression: str) -> str:
    """PostgreSQL: a numeric SQL expression of ledger amounts (at most LEDGER_PLACES decimals) as bigint
    ledger units, exactly."""
    return f"(({expression}) * {LEDGER_UNITS_PER_USD})::bigint"


def round_cents(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


def usd_string(amount: Decimal | None) -> str | None:
    """Decimal string for the API: no exponent, trailing zeros dropped down to cents ("1.50", "0.0123"), and
    a zero never signed ("0.00", not "-0.00").
    Trims the text rather than calling Decimal.normalize(): half the time (a month of usage by end user
    formats tens of thousands of amounts), and no rounding to the context's 28 digits."""
    if amount is None:
        return None
    if not amount:
        # Decimal keeps the sign of a zero (round_cents(Decimal("-0.002")) is Decimal("-0.00")), and "-0.00"
        # on a statement line is read inconsistently by invoicing systems and spreadsheets.
        amount = abs(amount)
    text = str(amount)  # exact, and faster than format(amount, "f"), but may carry an exponent ("0E-10")
    if "E" in text or "e" in text:
        text = format(amount, "f")
    whole, _, fraction = text.partition(".")
    return f"{whole}.{fraction.rstrip('0').ljust(2, '0')}"


def units_usd_string_sql(units: str) -> str:
    """PostgreSQL's spelling of usd_string for an SQL expression of whole ledger units (bigint, or the
    numeric a SUM of them gives; text out, NULL for NULL): the amount to its own last significant digit, but
    to at least cents. For documents whose thousands of amounts the database formats as it sums them (usage
    by end user); a test holds the two equal. An amount with nothing past the cents is a whole number of
    cents' worth of units, an integer test: about a third cheaper than asking numeric for its scale."""
    amount = units_as_usd_sql(units)
    return (f"(CASE WHEN mod({units}, {LEDGER_UNITS_PER_USD // 100}) = 0 THEN round({amount}, 2) "
            f"ELSE trim_scale({amount}) END)::text")


def money_text(amount: Decimal | None) -> str:
    """$1,234.57 for people to read (pages, charts, alert texts); amounts under a cent keep four significant
    decimals so they are not $0.00."""
    if amount is None:
        return "—"
    sign = "-" if amount < 0 else ""
    amount = abs(amount)
    if amount and amount < CENT:
        return f"{sign}${amount.normalize():.4g}" if amount >= Decimal("0.0001") else f"{sign}<$0.0001"
    return f"{sign}${round_cents(amount):,.2f}"
