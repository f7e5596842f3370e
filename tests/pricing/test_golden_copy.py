"""The repo's copy of the golden cost examples is the shared original, byte for byte."""

from pathlib import Path

import pytest

from tests.golden import GOLDEN_PATH

ROOT = Path(__file__).resolve().parents[2]
ORIGINALS = [ROOT.parent / "shared" / "golden" / "seed-cost-examples.json"]


@pytest.mark.parametrize("original", ORIGINALS, ids=["shared-beside-checkout"])
def test_golden_copy_matches_the_shared_original(original):
    if not original.exists():
        pytest.skip(f"{original} is not beside this checkout")
    assert GOLDEN_PATH.read_bytes() == original.read_bytes()
