"""bench_serve's one-request-at-a-time sides: the same prompts answered one after another in
this process, greedy, a fixed number of new tokens each.

    python -m benchmarks.workers.serve_alone SPEC_JSON

SPEC: {"side": "transformers" | "gptpipe" | "engine", "folder": a Hugging Face GPT-2 folder
(transformers) or a model folder (gptpipe, engine), "dtype": "float32" | "bfloat16" |
"auto", "prompts": [text, ...], "new_tokens": n, "clients": c (engine only)}.

- transformers: `GPT2LMHeadModel.from_pretrained(folder, dtype=...)` and its `generate` in a
  loop (bench_generate's `hf_run`: greedy, its cache, exactly n new tokens), the prompts
  encoded by GPT-2's tokenizer: what a user would otherwise write;
- gptpipe: what `gptpipe generate --temperature 0` runs for each prompt, in process
  (`load_language_model`, `for_decoding`, `context_ids`, `stream`);
- engine: the server's engine without HTTP (`gptpipe.serve.engine`, decoding on the main
  thread as `gptpipe serve` does), c clients each submitting its share of the prompts one
  after another from a thread of its own: what the server's decoding costs alone.

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


def engine_side(spec: dict[str, Any]) -> dict[str, Any]:
    import threading

    from gptpipe.decoding import GENERATE, Decoding
    from gptpipe.generate.decode import for_decoding
    from gptpipe.model.folder import load_language_model
    from gptpipe.serve.engine import Engine, Event, Finish, Job, Token, decode

    model, encoding = load_language_model(spec["folder"], "auto")
    model = for_decoding(model, spec["dtype"])
    decoding = Decoding.of({**GENERATE, "max_new_tokens": spec["new_tokens"], "temperature": 0.0})
    prompts = [encoding.encode_ordinary(text) for text in spec["prompts"]]
    engine = Engine(model, encoding, rows=len(prompts))
    clients = spec["clients"]
    texts: list[str] = [""] * len(prompts)
    seconds: list[float] = []

    def ask(i: int, d: Decoding) -> None:
        done, pieces = threading.Event(), []

        def send(event: Event) -> None:
            if isinstance(event, Token):
                pieces.append(event.text)
            elif isinstance(event, Finish):
                pieces.append(event.text)
                done.set()

        engine.submit(Job(prompts[i], d, send))
        done.wait()
        texts[i] = "".join(pieces)

    def client(share: list[int]) -> None:
        for i in share:
            ask(i, decoding)

    def run() -> None:
        ask(0, Decoding.of({**GENERATE, "max_new_tokens": 4, "temperature": 0.0}))  # warm-up
        threads = [
            threading.Thread(target=client, args=(list(range(c, len(prompts), clients)),))
            for c in range(clients)
        ]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seconds.append(time.perf_counter() - start)
        engine.close()

    driver = threading.Thread(target=run)
    driver.start()
    decode([engine])  # the main thread decodes, as in `gptpipe serve`
    driver.join()
    return {"seconds": seconds, "texts": texts, "steps": engine.steps}


def main(argv: list[str] | None = None) -> None:
    spec = json.loads((sys.argv[1:] if argv is None else argv)[0])
    sides = {"transformers": transformers_side, "gptpipe": gptpipe_side, "engine": engine_side}
    side = sides[spec["side"]]
    print(json.dumps(side(spec)))


if __name__ == "__main__":
    main()
