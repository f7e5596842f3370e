"""Security and bad-input drills: they run their pytest suites (tests/reliability) and report the counts."""
