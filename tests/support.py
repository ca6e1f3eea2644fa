"""Helpers shared by test modules."""

import os
from pathlib import Path

# The offline copies of the named data sets: $GPTPIPE_MIRROR, else ../shared/mirror.
MIRROR = Path(
    os.environ.get("GPTPIPE_MIRROR") or Path(__file__).resolve().parents[2] / "shared" / "mirror"
)
