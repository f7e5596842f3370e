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


def days_between(start: dt.date, end: dt.date):
    """Each date from start (inclusive) to end (exclusive)."""
    current = start
    while current < end:
        yield current
        current += dt.timedelta(days=1)
