"""bench_load_memory's measurements: the peak resident memory (VmHWM) of one way of loading
a GPT-2 checkpoint, in a process that started with Python and torch alone.

    python -m benchmarks.workers.load_memory MODE CHECKPOINT WORK

MODE: `baseline` (Python and torch, nothing loaded), `convert` (gptpipe building our model from
the Hugging Face checkpoint folder CHECKPOINT in memory), `stage` (the weights stage converting
it into WORK/base), `load` (loading WORK/base) or `transformers` (`from_pretrained` of
CHECKPOINT, every parameter then read once). Prints {"peak_bytes"} for the baseline, else
{"peak_bytes", "parameters", "seconds"}. The peak is VmHWM rather than `wait4`'s ru_maxrss,
which Linux carries over from the parent at fork time.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from benchmarks.workers.peak import hwm


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    mode, folder, work = args[0], Path(args[1]), Path(args[2])
    if mode == "baseline":
        print(json.dumps({"peak_bytes": hwm()}))
        return
    # one function body, as one script: what each mode loads stays alive until the peak is read
    t0 = time.perf_counter()
    model: torch.nn.Module
    n: int | None
    if mode == "convert":
        from gptpipe.interop.gpt2_formats import open_gpt2_checkpoint
        from gptpipe.model.folder import model_from_tensors

        ckpt = open_gpt2_checkpoint(folder)
        model = model_from_tensors(ckpt.config, ckpt.tensors)
        n = sum(p.numel() for p in model.parameters())
    elif mode == "stage":
        from gptpipe.config import BaseConfig
        from gptpipe.stages import weights

        weights.run(BaseConfig(source=str(folder)), Path("unused"), work / "base")
        n = None
    elif mode == "load":
        from gptpipe.model.folder import load_model

        model, _ = load_model(work / "base")
        n = sum(p.numel() for p in model.parameters())
    else:
        from transformers import GPT2LMHeadModel

        model = GPT2LMHeadModel.from_pretrained(folder, dtype=torch.float32)
        n = sum(p.numel() for p in model.parameters())
    if mode == "transformers":  # its tensors map the file lazily: touch them, as use would
        _ = sum(float(p.float().sum()) for p in model.parameters())
    seconds = time.perf_counter() - t0
    peak = hwm()
    print(json.dumps({"peak_bytes": peak, "parameters": n, "seconds": seconds}))


if __name__ == "__main__":
    main()
