"""bench_pipeline's reference DAG: each trivial stage's command, which only writes its outputs
(the character x in each, their folders made).

    python benchmarks/workers/trivial_stage.py OUT...

Run by its path (DVC runs it in the trivial project, where this package is not importable), so
it imports the standard library alone.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    for name in sys.argv[1:] if argv is None else argv:
        out = Path(name)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("x")


if __name__ == "__main__":
    main()
