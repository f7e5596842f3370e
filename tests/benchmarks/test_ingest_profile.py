"""bench ingest --profile: the CPU per report (Python and the PostgreSQL backend) in all and under the ingest
lock, and the WAL written per report, measured in one process; the ingest path is left as it was."""

import re

import pytest

from apps.ledger import services
from apps.ledger.models import Run
from tests.benchmarks.test_bench_command import bench


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_profile_prints_cpu_per_report_and_restores_the_write_phase():
    write_phase = services._ingest_once
    output = bench("ingest", "--runs", "100", "--tenants", "3", "--batch-size", "50", "--skip-import",
                   "--workers", "1", "--clients", "1", "--profile", "200")
    assert services._ingest_once is write_phase
    # Figures are printed with thousands separators: a tiny profile on a slow, busy machine passes 999 µs.
    found = re.search(r"in all \(us\)\s+[\d,]+\s+Python ([\d,]+) \+ PostgreSQL ([\d,]+)", output)
    python, postgres = (int(figure.replace(",", "")) for figure in found.groups())
    assert python > 0 and postgres > 0
    assert re.search(r"bounds serialized writes at [\d,]+ reports/s", output)
    # Every report writes at least its run row; none writes megabytes.
    wal = int(re.search(r"WAL written per report \(bytes\)\s+([\d,]+)", output).group(1).replace(",", ""))
    assert 200 < wal < 1_000_000
    assert "after a CHECKPOINT, the same from run to run" in output  # the test database's role may checkpoint
    assert Run.objects.unscoped().count() == 0  # the ledger is emptied afterwards, as after every ingest bench
