"""Peak memory of loading GPT-2 weights: ours against transformers, on a synthetic checkpoint.

Writes a Hugging Face-layout checkpoint of gpt2-xl's shape (1.56B parameters, 6.2 GB in
float32; `--quick`: gpt2's, 124M) to a temporary folder, then in a fresh subprocess each
measures the peak resident memory (VmHWM) of:

- `convert`: gptpipe opening the checkpoint and building our model from it in memory;
- `stage`: the weights stage converting it into a model folder (streamed to disk);
- `load`: gptpipe.model.folder.load_model of that converted folder (what fine-tuning does);
- `transformers`: GPT2LMHeadModel.from_pretrained of the same checkpoint (the reference),
  then every parameter read once (its tensors map the file lazily until used).

Prints each peak as a multiple of the weights' float32 size (target for ours: <= 1.2x) and
writes the results as JSON (--out). Run under the exclusive lock:
    flock /tmp/gptpipe-bench.lock .venv/bin/python -m benchmarks.bench_load_memory
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import machine, python_module, run_worker

# Every mode, the baseline too, runs in its own interpreter (benchmarks/workers/load_memory.py),
# which reads its own peak from VmHWM rather than wait4's ru_maxrss, which Linux carries over
# from the parent at fork time.
WORKER = "benchmarks.workers.load_memory"


def write_checkpoint(folder: Path, name: str) -> int:
    """A Hugging Face GPT-2 folder of the named size, random weights; returns its parameters."""
    import torch

    from gptpipe.interop.gpt2_formats import expected_shapes
    from gptpipe.interop.hf_export import hf_config, hf_export_tensors
    from gptpipe.interop.hub import SIZES
    from gptpipe.model.gpt import GPTConfig
    from gptpipe.model.tensors import LazyTensor, write_safetensors

    size = SIZES[name]
    config = GPTConfig(n_layer=size.n_layer, n_head=size.n_head, n_embd=size.n_embd)

    def random(shape: tuple[int, ...]) -> LazyTensor:
        return LazyTensor(shape, lambda: torch.randn(shape) * 0.02)

    ours = {k: random(shape) for k, shape in expected_shapes(config).items()}
    folder.mkdir(parents=True, exist_ok=True)
    write_safetensors(folder / "model.safetensors", hf_export_tensors(ours, config))
    (folder / "config.json").write_text(json.dumps(hf_config(config, 50256)))
    return size.parameters


def measure(mode: str, folder: Path, work: Path) -> dict[str, Any]:
    return run_worker(python_module(WORKER, mode, folder, work)).data


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="gpt2 (124M) instead of gpt2-xl")
    parser.add_argument("--size", default=None, help="gpt2, gpt2-medium, gpt2-large, gpt2-xl")
    parser.add_argument("--skip-reference", action="store_true", help="skip transformers")
    parser.add_argument("--tmp", default="/tmp", help="where the synthetic checkpoint goes")
    parser.add_argument(
        "--json", "--out", dest="out", type=Path, default=None, help="write results as JSON here"
    )
    args = parser.parse_args(argv)
    name = args.size or ("gpt2" if args.quick else "gpt2-xl")
    root = Path(tempfile.mkdtemp(prefix="gptpipe-bench-load-", dir=args.tmp))
    try:
        t0 = time.perf_counter()
        n = write_checkpoint(root / "hf", name)
        fp32 = 4 * n
        print(machine())
        print(
            f"{name}: {n:,} parameters, {fp32 / 2**30:.2f} GiB in float32 "
            f"(checkpoint written in {time.perf_counter() - t0:.0f} s)"
        )
        modes = ["baseline", "convert", "stage", "load"]
        if not args.skip_reference:
            modes.append("transformers")
        results: dict[str, Any] = {"machine": machine(), "size": name, "parameters": n}
        results["fp32_bytes"] = fp32
        for mode in modes:
            r = measure(mode, root / "hf", root)
            results[mode] = r
            line = f"{mode:>12}: peak RSS {r['peak_bytes'] / 2**30:6.2f} GiB"
            line += f" = {r['peak_bytes'] / fp32:5.2f}x the float32 weights"
            if mode != "baseline":
                extra = (r["peak_bytes"] - results["baseline"]["peak_bytes"]) / fp32
                line += f" ({extra:4.2f}x above Python + torch alone)"
            if "seconds" in r:
                line += f", {r['seconds']:.1f} s"
            print(line, flush=True)
        ok = all(results[m]["peak_bytes"] <= 1.2 * fp32 for m in ("convert", "stage", "load"))
        print(f"{name}: ours <= 1.2x the float32 weights (whole process): {'yes' if ok else 'NO'}")
        if args.out:
            args.out.write_text(json.dumps(results, indent=2) + "\n")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return results


if __name__ == "__main__":
    main()
