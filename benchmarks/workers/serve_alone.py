"""bench_serve's one-request-at-a-time sides: the same prompts answered one after another in
this process, greedy, a fixed number of new tokens each.

    python -m benchmarks.workers.serve_alone SPEC_JSON

SPEC: {"side": "transformers" | "gptpipe", "folder": a Hugging Face GPT-2 folder
(transformers) or a model folder (gptpipe), "dtype": "float32" | "bfloat16" | "auto",
"prompts": [text, ...], "new_tokens": n}.

- transformers: `GPT2LMHeadModel.from_pretrained(folder, dtype=...)` and its `generate` in a
  loop (bench_generate's `hf_run`: greedy, its cache, exactly n new tokens), the prompts
  encoded by GPT-2's tokenizer: what a user would otherwise write;
- gptpipe: what `gptpipe generate --temperature 0` runs for each prompt, in process
  (`load_language_model`, `for_decoding`, `context_ids`, `stream`).

Each side decodes one short warm-up request first. Prints {"seconds": [per request],
"first_token_s": [per request; gptpipe only], "texts": [...], "dtype": the weights' dtype}.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import torch


def transformers_side(spec: dict[str, Any]) -> dict[str, Any]:
    from transformers import GPT2LMHeadModel

    from benchmarks.bench_generate import hf_run
    from gptpipe.tokenizer.folder import gpt2_encoding

    encoding = gpt2_encoding()
    dtype = getattr(torch, spec["dtype"])
    hf = GPT2LMHeadModel.from_pretrained(spec["folder"], dtype=dtype).eval()
    prompts = [encoding.encode_ordinary(text) for text in spec["prompts"]]
    hf_run(hf, prompts[0], 4)
    seconds, texts = [], []
    for ids in prompts:
        took, tokens = hf_run(hf, ids, spec["new_tokens"])
        seconds.append(took)
        texts.append(encoding.decode(tokens))
    dtype_name = str(next(hf.parameters()).dtype).removeprefix("torch.")
    return {"seconds": seconds, "texts": texts, "dtype": dtype_name}


def gptpipe_side(spec: dict[str, Any]) -> dict[str, Any]:
    from gptpipe.decoding import GENERATE, Decoding
    from gptpipe.generate.decode import for_decoding
    from gptpipe.generate.text import context_ids, stream
    from gptpipe.model.folder import load_language_model

    model, encoding = load_language_model(spec["folder"], "auto")
    model = for_decoding(model, spec["dtype"])
    decoding = Decoding.of(
        {**GENERATE, "max_new_tokens": spec["new_tokens"], "temperature": 0.0}
    )  # what `gptpipe generate --temperature 0 --max-new-tokens N` decodes with
    warm = Decoding.of({**GENERATE, "max_new_tokens": 4, "temperature": 0.0})
    "".join(stream(model, encoding, context_ids(model, encoding, spec["prompts"][0]), warm))
    seconds, first, texts = [], [], []
    for text in spec["prompts"]:
        start = time.perf_counter()
        ids = context_ids(model, encoding, text)
        pieces: list[str] = []
        for piece in stream(model, encoding, ids, decoding):
            if not pieces:
                first.append(time.perf_counter() - start)
            pieces.append(piece)
        seconds.append(time.perf_counter() - start)
        texts.append("".join(pieces))
    dtype_name = str(model.wte.weight.dtype).removeprefix("torch.")
    return {"seconds": seconds, "first_token_s": first, "texts": texts, "dtype": dtype_name}


def main(argv: list[str] | None = None) -> None:
    spec = json.loads((sys.argv[1:] if argv is None else argv)[0])
    side = transformers_side if spec["side"] == "transformers" else gptpipe_side
    print(json.dumps(side(spec)))


if __name__ == "__main__":
    main()
