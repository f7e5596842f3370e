"""Drills that are pytest suites (tenant isolation matrix, security checks, bad input, OpenAI faults): run
them in a subprocess against the test settings and report what ran, passed and failed."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from django.conf import settings

SUITES = {
    "isolation": ["tests/reliability/test_isolation_matrix.py", "tests/reliability/test_security.py",
                  "tests/billing/test_isolation.py", "tests/dashboard/test_isolation.py"],
    "bad-input": ["tests/reliability/test_bad_input.py", "tests/ledger/test_ingest_api.py",
                  "tests/billing/test_schema.py"],
    "openai-faults": ["tests/reliability/test_openai_faults.py", "tests/lifecycle/test_sweeps_sandbox.py",
                      "tests/reconciliation/test_against_sandbox.py", "tests/provider/test_client.py"],
}


def drill_pytest(name: str, *, say=print, examples: int | None = None) -> dict:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test"}
    if examples:
        env["DRILL_EXAMPLES"] = str(examples)
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:warnings", "-p", "no:cacheprovider", *SUITES[name]]
    say("  " + " ".join(argv[1:]))
    result = subprocess.run(argv, env=env, cwd=settings.BASE_DIR, capture_output=True, text=True, timeout=1800)
    tail = result.stdout.strip().splitlines()[-15:]
    for line in tail:
        say("  " + line)
    counts = {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|error|errors|skipped)", "\n".join(tail))}
    failed = counts.get("failed", 0) + counts.get("error", 0) + counts.get("errors", 0)
    key = {"isolation": "isolation_violations", "bad-input": "server_errors_or_corrupt_rows",
           "openai-faults": "corrupted_or_incomplete"}[name]
    return {"suites": SUITES[name], "passed": counts.get("passed", 0), "failed": failed,
            "skipped": counts.get("skipped", 0), key: failed, "ok": result.returncode == 0 and failed == 0}
