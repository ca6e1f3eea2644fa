"""Helpers shared by test modules."""

import os
from pathlib import Path

import pytest

# The offline copies of the named data sets: $GPTPIPE_MIRROR, else ../shared/mirror.
MIRROR = Path(
    os.environ.get("GPTPIPE_MIRROR") or Path(__file__).resolve().parents[3] / "shared" / "mirror"
)

# For tests that read the mirror: CI has it beside the checkout; a bare clone skips them.
needs_mirror = pytest.mark.skipif(
    not (MIRROR / "tinyshakespeare.txt").is_file(), reason=f"no data mirror at {MIRROR}"
)
