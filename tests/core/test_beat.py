"""The beat schedule: every entry names a registered task and expires at about 1.5x its interval."""

import pytest

from config.beat import BEAT_SCHEDULE
from config.celery import app


def test_every_beat_entry_names_a_registered_task():
    app.loader.import_default_modules()
    registered = set(app.tasks)
    missing = {name: entry["task"] for name, entry in BEAT_SCHEDULE.items() if entry["task"] not in registered}
    assert missing == {}


@pytest.mark.parametrize("name", sorted(BEAT_SCHEDULE) or ["<empty>"])
def test_every_beat_entry_expires_at_one_and_a_half_intervals(name):
    if name == "<empty>":
        pytest.skip("no beat entries yet")
    entry = BEAT_SCHEDULE[name]
    schedule = entry["schedule"]
    # Seconds between two consecutive due times, from the schedule itself.
    import datetime as dt

    start = dt.datetime(2026, 1, 5, 0, 0, 30, tzinfo=dt.UTC)
    first = start + schedule.remaining_estimate(start)
    second = first + schedule.remaining_estimate(first + dt.timedelta(seconds=1)) + dt.timedelta(seconds=1)
    interval = (second - first).total_seconds()
    assert entry["options"]["expires"] == pytest.approx(1.5 * interval, rel=0.05)
