"""The benchmarks' measurements, each a module run in a fresh interpreter.

`python -m benchmarks.workers.<name> ARGS` (built with `benchmarks.harness.python_module`)
reads its arguments from the command line and prints its result as one JSON object on its
last stdout line, which the benchmark that spawned it parses. Each worker imports what its
measurement needs at the moment it needs it: where a figure is an import time or a peak memory,
the imports before the measurement are part of it, so a worker imports nothing more there.
This package's `__init__` imports nothing; `peak.hwm` reads the peak memory.
"""
