"""Speed and memory measurements against reference tools: `python -m benchmarks.bench_x`.

Every script uses `benchmarks.harness` (fresh interpreters, JSON results, peak RSS, medians).
"""
