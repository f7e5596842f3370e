"""The product's worked cost examples (shared/golden/seed-cost-examples.json), copied into the repo so
the suite runs from any clone; tests/pricing/test_golden_copy.py checks the copy against the original
whenever shared/ sits beside the checkout."""

import json
from pathlib import Path

GOLDEN_PATH = Path(__file__).resolve().parent / "fixtures" / "seed-cost-examples.json"


def golden_examples() -> dict:
    return json.loads(GOLDEN_PATH.read_text())
