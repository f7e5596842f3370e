"""`bench sweeps` reports how fast the worker planned the memory sweep (set-based planning, issue #9), and
plans every idle thread it loaded."""

import re
from io import StringIO

import pytest
from django.core.management import call_command


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_bench_sweeps_reports_the_planning_rate_of_every_loaded_thread():
    out = StringIO()
    call_command("bench", "sweeps", "--items", "4", "--threads", "1500", "--rpm", "1200", "--window", "1",
                 stdout=out, stderr=StringIO())
    line = next(line for line in out.getvalue().splitlines() if "sweep planning: items/s" in line)
    assert re.search(r"1,500 items planned in [0-9.]+ s", line)
