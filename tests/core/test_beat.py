"""The beat schedule: every entry names a registered task and expires at about 1.5x its interval."""

import pytest

from config.beat import BEAT_SCHEDULE
from config.celery import app


def test_every_beat_entry_names_a_registered_task():
    app.loader.import_default_modules()
    registered = set(app.tasks)
    missing = {name: entry["task"] for name, entry in BEAT_SCHEDULE.items() if entry["task"] not in registered}
    assert missing == {}


def _shortest_interval_seconds(schedule) -> int:
    """Smallest gap between two due times of a crontab that runs every day (or a plain interval)."""
    if not hasattr(schedule, "minute"):
        return int(schedule.run_every.total_seconds())
    assert schedule.day_of_week == set(range(7)) and schedule.day_of_month == set(range(1, 32)), (
        "weekly/monthly crontabs need their own interval rule here"
    )
    due = sorted(hour * 3600 + minute * 60 for hour in schedule.hour for minute in schedule.minute)
    gaps = [later - earlier for earlier, later in zip(due, due[1:], strict=False)] + [due[0] + 86400 - due[-1]]
    return min(gaps)


@pytest.mark.parametrize("name", sorted(BEAT_SCHEDULE) or ["<empty>"])
def test_every_beat_entry_expires_at_one_and_a_half_intervals(name):
    if name == "<empty>":
        pytest.skip("no beat entries yet")
    entry = BEAT_SCHEDULE[name]
    interval = _shortest_interval_seconds(entry["schedule"])
    assert entry["options"]["expires"] == pytest.approx(1.5 * interval, rel=0.05)
