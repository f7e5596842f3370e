"""Time is UTC everywhere; these helpers turn OpenAI's Unix seconds and day boundaries into aware datetimes."""

import datetime as dt

UTC = dt.UTC
# The days the API accepts. Python's dates end at 9999-12-31, and a range's month ends, a default start a week
# before its end or a datetime's UTC day must stay inside them, so an input near either end is refused as a
# 400 naming it instead of overflowing into a 500. OpenAI did not exist before 1970 either.
EARLIEST_DAY = dt.date(1970, 1, 1)
LATEST_DAY = dt.date(9998, 12, 31)


def from_unix(seconds: int | float | None) -> dt.datetime | None:
    if seconds is None:
        return None
    return dt.datetime.fromtimestamp(float(seconds), tz=UTC)


def to_unix(moment: dt.datetime) -> int:
    return int(moment.timestamp())


def day_start(day: dt.date) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, tzinfo=UTC)


def month_start(day: dt.date) -> dt.date:
    return day.replace(day=1)


def next_month(day: dt.date) -> dt.date:
    first = day.replace(day=1)
    return (first + dt.timedelta(days=32)).replace(day=1)


def previous_month(day: dt.date) -> dt.date:
    """The first day of the month before `day`'s."""
    return (day.replace(day=1) - dt.timedelta(days=1)).replace(day=1)


def days_between(start: dt.date, end: dt.date):
    """Each date from start (inclusive) to end (exclusive)."""
    current = start
    while current < end:
        yield current
        current += dt.timedelta(days=1)


# The earliest and latest moments Python can represent, in UTC.
EARLIEST_MOMENT = dt.datetime.min.replace(tzinfo=dt.UTC)
LATEST_MOMENT = dt.datetime.max.replace(tzinfo=dt.UTC)


def moment_shifted(moment: dt.datetime, *, days: int = 0, minutes: int = 0) -> dt.datetime:
    """`moment` moved by a retention or idle period (negative: back in time), clamped to the representable
    range instead of raising OverflowError. Every sweep cutoff ("older than N days") and every "deleted on"
    date is computed here, so a policy beyond any real age (thread_retention_days=1,000,000, saved before the
    tenants app bounded it) cannot stop the sweep over every tenant or fail a page: its cutoff is the
    earliest moment, which nothing is older than, so nothing of that tenant is swept, and its deletion date
    is the latest moment."""
    try:
        return moment + dt.timedelta(days=days, minutes=minutes)
    except OverflowError:  # past year 1 or 9999, or a period timedelta itself cannot hold
        return EARLIEST_MOMENT if days < 0 or minutes < 0 else LATEST_MOMENT
