#!/usr/bin/env bash
# The GPU check, in one go: set up, record the card and versions, run the CUDA tests, then the
# training and decoding benchmark at GPT-2 124M's shape (benchmarks/bench_device.py: ours
# against transformers in bf16, eager and compiled, tokens/s and MFU; decoding at batch 1 and
# 16). Fits in 8 minutes on one H100 or H200: the tests get at most 150 s, the benchmark a
# 220 s budget and a hard stop at 300 s (it writes its results after every variant, so a
# stop leaves what it measured). Works offline: nothing is installed from an index.
#
#   bash benchmarks/device_check.sh [OUT_DIR]      # from anywhere; default OUT_DIR below
#
# Writes to $OUT (if set), else OUT_DIR, else /tmp/gptpipe-device-check:
#   device.json          the record, in the format benchmarks/run_all.py stores
#   device_results.json  its results alone; cuda-tests.xml / .log  the CUDA tests
#   nvidia-smi.txt, versions.txt, check.log, bench.log
# To put the figures in the results table, on the machine that keeps the repository:
#   cp OUT_DIR/device.json benchmarks/results/device.json && python -m benchmarks.run_all --render
#
# Needs python3 with torch (a CUDA build), transformers, tiktoken, typer, rich, pyyaml,
# pyarrow, safetensors and pytest. The repository runs from PYTHONPATH (no build step); wheels
# in a .whl/ folder at the repository root (dvc, say) are installed first, without an index.
set -uo pipefail

cd "$(dirname "$0")/.." || exit 2
OUT="${OUT:-${1:-/tmp/gptpipe-device-check}}"
# the benchmark's options; a smoke run of this script on a CPU machine:
#   BENCH_ARGS="--quick --device cpu --budget-s 4" bash benchmarks/device_check.sh /tmp/x
BENCH_ARGS="${BENCH_ARGS:---device cuda --budget-s 220}"
mkdir -p "$OUT" || exit 2
OUT="$(cd "$OUT" && pwd)"
PY="${PYTHON:-python3}"
START=$SECONDS
log() { echo "[device_check +$((SECONDS - START))s] $*" | tee -a "$OUT/check.log"; }

# --------------------------------------------------------------------------- set up
SITE=/tmp/gptpipe-site
if compgen -G ".whl/*.whl" >/dev/null; then
    log "installing $(ls .whl/*.whl | wc -l) wheels from .whl/ into $SITE (no index)"
    "$PY" -m pip install -q --no-index --no-deps --target "$SITE" .whl/*.whl 2>&1 | tail -3
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
# `gptpipe` as a command (the DVC test's stages call it) without installing the package
mkdir -p "$SITE/bin"
printf '#!/bin/sh\nexec %s -m gptpipe "$@"\n' "$(command -v "$PY")" >"$SITE/bin/gptpipe"
chmod +x "$SITE/bin/gptpipe"
export PATH="$SITE/bin:$PATH"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1 DVC_NO_ANALYTICS=1 TOKENIZERS_PARALLELISM=false
export GPTPIPE_CACHE="${GPTPIPE_CACHE:-/tmp/gptpipe-cache}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

# --------------------------------------------------------------------------- versions
{ nvidia-smi; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit \
    --format=csv; } >"$OUT/nvidia-smi.txt" 2>&1
"$PY" - >"$OUT/versions.txt" 2>&1 <<'EOF'
import platform
from importlib import metadata

import torch

print("python", platform.python_version())
print("torch", torch.__version__, "cuda", torch.version.cuda, "cudnn", torch.backends.cudnn.version())
print("cuda available", torch.cuda.is_available(), "devices", torch.cuda.device_count())
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print("device", p.name, f"capability {p.major}.{p.minor}", f"{p.total_memory / 2**30:.0f} GiB")
    print("bf16 native", torch.cuda.is_bf16_supported(including_emulation=False))
for name in ("transformers", "triton", "tiktoken", "numpy", "pyarrow", "safetensors", "dvc", "pytest"):
    try:
        print(name, metadata.version(name))
    except metadata.PackageNotFoundError:
        print(name, "not installed")
EOF
# Triton (torch.compile on CUDA) builds its launchers with the host C compiler
{ command -v cc gcc; cc --version 2>&1 | head -1; } >>"$OUT/versions.txt" 2>&1
cat "$OUT/versions.txt" | tee -a "$OUT/check.log"
head -20 "$OUT/nvidia-smi.txt"
"$PY" -c "import gptpipe.train.loop, gptpipe.generate.decode, benchmarks.bench_device" \
    || { log "the repository does not import here; see above"; exit 1; }

# --------------------------------------------------------------------------- CUDA tests
log "CUDA tests: pytest -m cuda tests/cuda (at most 150 s)"
timeout 150 "$PY" -m pytest -q -m cuda tests/cuda -p no:cacheprovider \
    --junitxml "$OUT/cuda-tests.xml" >"$OUT/cuda-tests.log" 2>&1
TESTS_RC=$?
tail -25 "$OUT/cuda-tests.log"
log "CUDA tests exit status $TESTS_RC"

# --------------------------------------------------------------------------- benchmark
log "benchmark: python -m benchmarks.bench_device $BENCH_ARGS (stopped at 300 s)"
# shellcheck disable=SC2086  # BENCH_ARGS is a list of options
timeout 300 "$PY" -m benchmarks.bench_device $BENCH_ARGS \
    --junit "$OUT/cuda-tests.xml" --json "$OUT/device_results.json" \
    --record "$OUT/device.json" >"$OUT/bench.log" 2>&1
BENCH_RC=$?
tail -5 "$OUT/bench.log"
log "benchmark exit status $BENCH_RC"
if [ -f "$OUT/device.json" ]; then
    "$PY" - "$OUT/device.json" <<'EOF' | tee -a "$OUT/check.log"
import json
import sys

from benchmarks.device_table import device_rows

record = json.load(open(sys.argv[1], encoding="utf-8"))
for row in device_rows(record["results"]):
    ratio = "" if row.ratio is None else f"  ({row.ratio:.2f}x)"
    print(f"- {row.figure}: {row.ours} | {row.reference}{ratio}")
EOF
fi
log "done in $((SECONDS - START)) s; results in $OUT"
[ "$TESTS_RC" -eq 0 ] && [ "$BENCH_RC" -eq 0 ]
