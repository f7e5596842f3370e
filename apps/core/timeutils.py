"""Time is UTC everywhere; these helpers turn OpenAI's Unix seconds and day boundaries into aware datetimes."""

import datetime as dt

UTC = dt.UTC


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
