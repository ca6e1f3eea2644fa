"""test_harness's worker, run by its path in a fresh interpreter.

    python tests/benchmarks/harness_worker.py allocate MB   # MB resident, then its JSON
    python tests/benchmarks/harness_worker.py exit MESSAGE  # fails with MESSAGE on stderr
    python tests/benchmarks/harness_worker.py print TEXT    # prints TEXT (no JSON)
    python tests/benchmarks/harness_worker.py sleep SECONDS

Not collected by pytest (no test_ prefix); it imports the standard library alone.
"""

from __future__ import annotations

import json
import os
import sys
import time


def allocate(megabytes: int) -> None:
    block = bytearray(megabytes * 2**20)  # touched: resident
    block[::4096] = b"x" * len(block[::4096])
    print("noise before the result")
    print(json.dumps({"mb": megabytes, "pid": os.getpid(), "env": os.environ.get("X_B")}))


def main(argv: list[str] | None = None) -> None:
    what, arg = sys.argv[1:3] if argv is None else argv[:2]
    if what == "allocate":
        allocate(int(arg))
    elif what == "exit":
        sys.exit(arg)
    elif what == "print":
        print(arg)
    elif what == "sleep":
        time.sleep(float(arg))
    else:
        sys.exit(f"unknown: {what}")


if __name__ == "__main__":
    main()
