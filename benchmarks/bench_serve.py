"""Serving: `gptpipe serve`'s continuous batching under streaming clients, against the same
requests answered one at a time.

The model is the decoding benchmark's (`bench_generate.build`, config a: 6L/6H/384d, context
1024, GPT-2's vocabulary, random weights), saved as a model folder with GPT-2's tokenizer
(and as the Hugging Face folder it came from). `gptpipe serve --batch 16` runs as a child
process on 127.0.0.1; clients in this process (asyncio + httpx2) stream completions of 16
different short prompts, `max_tokens` 128 each, temperature 0. Measured, the sides
alternating within each repeat:

- aggregate generated tokens/s and time to first token (p50, p99 over every request of every
  repeat) at 1, 4 and 16 concurrent clients, each client sending its share of the 16
  requests one after another (1 client: the requests one at a time through the server);
- the same requests answered one at a time by `transformers` (`GPT2LMHeadModel`, `generate`
  in a loop, greedy, exactly 128 new tokens: bench_generate's `hf_run`) and by `gptpipe
  generate`'s functions in process (`for_decoding` as generate uses it, `stream`), each in a
  fresh process (`benchmarks.workers.serve_alone`);
- the server's engine alone, without HTTP, at 1 and 16 clients (the same worker): what the
  decoding costs, so that the difference from the server is what the HTTP side costs;
- the dtype: the server decodes as `--dtype auto` does, in bfloat16 where the CPU computes it
  natively; transformers then runs with bf16 weights beside it, and a float32 pair (`gptpipe
  serve --dtype float32`, one client, against transformers in float32) runs too (where bf16
  is not native, auto is float32 and the pair is the same);
- memory-bandwidth utilisation per batched step, as bench_generate counts it: every weight
  once plus the keys and values of every row at its mean position, per step (the median
  time between one request's tokens), against the machine's copy bandwidth
  (`bench_generate.bandwidth_gbs`);
- memory across many requests, on a fresh server: 2,000 short requests (8 tokens, every other
  one streamed), 16 at a time; the server's peak RSS (VmHWM, /proc/PID/status) after the
  first 100 and after all of them.

Targets (2 cores): 16 clients >= 4x one client's tokens/s; one client through the server >=
0.8x the in-process tokens/s; peak RSS after 2,000 requests <= 1.1x that after 100.

    python -m benchmarks.bench_serve                 # config a, 3 repeats (~5 min on 2 cores)
    python -m benchmarks.bench_serve --quick         # a tiny float32 model, 8 tokens (~20 s)
    python -m benchmarks.bench_serve --json out.json

`main(argv) -> dict` returns the results (also printed, and written with --json).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import itertools
import json
import math
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.harness import REPO, alternate, median, paired_ratio, python_module, run_worker

QUICK_ARCH = {"n_layer": 2, "n_head": 2, "n_embd": 64, "block_size": 256, "vocab_size": 50257}
PROMPTS = [
    "The history of the city",
    "Once upon a time",
    "In a quiet village by the sea,",
    "The first rule of",
    "Scientists have discovered",
    "My favourite recipe is",
    "The train left the station",
    "When the war ended,",
    "Dear diary, today",
    "The best way to learn",
    "Under the old bridge",
    "She opened the letter and",
    "According to the report,",
    "The meeting began with",
    "Late at night the",
    "Every morning he",
]
CLIENTS = (1, 4, 16)
BATCH = 16
NEW_TOKENS = 128
MEMORY_REQUESTS, MEMORY_FIRST, MEMORY_TOKENS = 2000, 100, 8
MODEL = "model"  # the served folder's name, the requests' model id
URL = re.compile(r"gptpipe serve: (http://\S+/) ")


# --------------------------------------------------------------------------- the server


@dataclass
class Server:
    url: str
    pid: int


@contextlib.contextmanager
def serving(folder: Path, dtype: str, batch: int = BATCH) -> Iterator[Server]:
    """`gptpipe serve --model FOLDER --batch B --dtype D` on 127.0.0.1 at a free port, until
    it prints its URL; stopped with SIGTERM afterwards."""
    argv = python_module("gptpipe", "serve", "--model", folder, "--port", 0)
    argv += ["--batch", str(batch), "--dtype", dtype]
    process = subprocess.Popen(
        argv, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    found: list[str] = []
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:  # drains stderr for the server's whole life
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            match = URL.search(line)
            if match and not found:
                found.append(match.group(1))
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    try:
        if not ready.wait(300) or not found:
            raise RuntimeError(f"gptpipe serve did not start:\n{''.join(lines)[-3000:]}")
        yield Server(found[0], process.pid)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def memory_of(pid: int) -> dict[str, float]:
    """A process's peak and current resident memory (VmHWM, VmRSS) in MB (Linux)."""
    found = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                found[key] = int(value.split()[0]) * 1024 / 1e6
    return {"peak_mb": found["VmHWM"], "rss_mb": found["VmRSS"]}


# --------------------------------------------------------------------------- the clients


def client(connections: int, timeout: float = 600) -> Any:
    """An httpx2 async client for a local server (no proxies from the environment)."""
    import httpx2

    limits = httpx2.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx2.AsyncClient(timeout=timeout, limits=limits, trust_env=False)


async def sse_chunks(reply: Any) -> AsyncIterator[dict[str, Any]]:
    """The JSON chunks of a server-sent event stream (an httpx2 response), up to [DONE]."""
    async for line in reply.aiter_lines():
        if not line.startswith("data:"):
            continue
        data = line.removeprefix("data:").strip()
        if data == "[DONE]":
            return
        yield json.loads(data)


@dataclass
class Answer:
    """One request as its client saw it: seconds to the first text and to the end, the text,
    the completion tokens its usage counted, and the median seconds between its tokens."""

    first_s: float
    seconds: float
    text: str
    tokens: int
    step_s: float


def completion(prompt: str, tokens: int, stream: bool) -> dict[str, Any]:
    body = {"model": MODEL, "prompt": prompt, "max_tokens": tokens, "temperature": 0}
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return body


async def streamed(http: Any, url: str, prompt: str, tokens: int) -> Answer:
    """One streamed greedy completion, timed from the moment it is sent."""
    start = time.perf_counter()
    stamps: list[float] = []
    pieces: list[str] = []
    used = 0
    body = completion(prompt, tokens, stream=True)
    async with http.stream("POST", url + "v1/completions", json=body) as reply:
        if reply.status_code != 200:
            raise RuntimeError(f"{reply.status_code}: {(await reply.aread()).decode()[:500]}")
        async for chunk in sse_chunks(reply):
            if chunk.get("usage"):
                used = chunk["usage"]["completion_tokens"]
            for choice in chunk["choices"]:
                if choice["text"]:
                    stamps.append(time.perf_counter())
                    pieces.append(choice["text"])
    if not stamps:
        raise RuntimeError(f"no text streamed for {prompt!r}")
    step = median(b - a for a, b in itertools.pairwise(stamps)) if stamps[1:] else math.nan
    return Answer(stamps[0] - start, time.perf_counter() - start, "".join(pieces), used, step)


async def _clients(url: str, prompts: list[str], clients: int, tokens: int) -> dict[str, Any]:
    answers: list[Answer | None] = [None] * len(prompts)
    queue = list(range(len(prompts)))[::-1]
    async with client(clients) as http:

        async def one_client() -> None:
            while queue:
                i = queue.pop()
                answers[i] = await streamed(http, url, prompts[i], tokens)

        start = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        wall = time.perf_counter() - start
    done = [a for a in answers if a is not None]
    return {
        "seconds": wall,
        "tokens": sum(a.tokens for a in done),
        "tokens_per_s": sum(a.tokens for a in done) / wall,
        "first_token_s": [a.first_s for a in done],
        "step_s": median(a.step_s for a in done if not math.isnan(a.step_s)),
        "texts": [a.text for a in done],
        "full_length": all(a.tokens == tokens for a in done),
    }


def run_clients(url: str, prompts: list[str], clients: int, tokens: int) -> dict[str, Any]:
    """`clients` concurrent clients streaming `prompts` (each client its next one as soon as
    the last ended): wall time, tokens, tokens/s, each request's time to first token."""
    return asyncio.run(_clients(url, prompts, clients, tokens))


async def _many(url: str, pid: int, total: int, first: int, at_once: int) -> dict[str, Any]:
    sent = 0
    done = 0
    marks: dict[str, dict[str, float]] = {}
    async with client(at_once) as http:

        async def one_client() -> None:
            nonlocal sent, done
            while sent < total:
                i, sent = sent, sent + 1
                prompt = f"{PROMPTS[i % len(PROMPTS)]} ({i})"
                if i % 2:
                    await streamed(http, url, prompt, MEMORY_TOKENS)
                else:
                    body = completion(prompt, MEMORY_TOKENS, stream=False)
                    reply = await http.post(url + "v1/completions", json=body)
                    if reply.status_code != 200:
                        raise RuntimeError(f"{reply.status_code}: {reply.text[:500]}")
                done += 1
                if done == first:
                    marks["first"] = memory_of(pid)

        start = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(at_once)))
        seconds = time.perf_counter() - start
    marks["all"] = memory_of(pid)
    return {
        "requests": total,
        "first": first,
        "at_once": at_once,
        "new_tokens": MEMORY_TOKENS,
        "seconds": seconds,
        "peak_first_mb": marks["first"]["peak_mb"],
        "peak_all_mb": marks["all"]["peak_mb"],
        "rss_first_mb": marks["first"]["rss_mb"],
        "rss_all_mb": marks["all"]["rss_mb"],
        "peak_ratio": marks["all"]["peak_mb"] / marks["first"]["peak_mb"],
    }


def many_requests(server: Server, total: int, first: int, at_once: int = BATCH) -> dict[str, Any]:
    """`total` short requests, `at_once` at a time; the server's memory after `first` of
    them and after all."""
    return asyncio.run(_many(server.url, server.pid, total, first, at_once))


# --------------------------------------------------------------------------- the sides


def build_folders(arch: dict[str, int], work: Path) -> tuple[Any, Path, Path]:
    """bench_generate's random GPT-2 (transformers, float32), saved as a Hugging Face folder
    and converted from it into a model folder with GPT-2's tokenizer, as `gptpipe` would
    convert a downloaded checkpoint: (the transformers model, model folder, HF folder)."""
    from benchmarks.bench_generate import build
    from gptpipe.interop.gpt2_formats import open_gpt2_checkpoint
    from gptpipe.model.folder import model_from_tensors, save_model
    from gptpipe.tokenizer.folder import save_gpt2

    hf, _ = build(arch, layout="plain")
    hf.save_pretrained(work / "hf")
    checkpoint = open_gpt2_checkpoint(work / "hf")
    save_gpt2(work / "tokenizer")
    ours = model_from_tensors(checkpoint.config, checkpoint.tensors)
    save_model(work / MODEL, ours, work / "tokenizer", meta={"stage": "pretrain"})
    return hf, work / MODEL, work / "hf"


def alone(
    side: str, folder: Path, dtype: str, prompts: list[str], tokens: int, clients: int = 1
) -> dict[str, Any]:
    """The requests one at a time (or, for the engine, from `clients` at once), in a fresh
    process (`benchmarks.workers.serve_alone`)."""
    spec = {"side": side, "folder": str(folder), "dtype": dtype, "prompts": prompts,
            "new_tokens": tokens, "clients": clients}  # fmt: skip
    data = run_worker(python_module("benchmarks.workers.serve_alone", json.dumps(spec))).data
    data["tokens_per_s"] = tokens * len(prompts) / sum(data["seconds"])
    return data


def measure(
    folder: Path, hf_folder: Path, dtypes: list[str], tokens: int, repeats: int
) -> dict[str, list[dict[str, Any]]]:
    """Every side's runs, the sides alternating within each repeat: transformers, the server
    at 1 client, gptpipe in process, the server at 4 and 16 clients (the server as `--dtype
    auto` decodes, `dtypes[0]`); then the float32 pair where that is another dtype."""
    with contextlib.ExitStack() as stack:
        urls = [stack.enter_context(serving(folder, d)).url for d in dtypes]
        for url in urls:  # warm up: every batch size, the first calls
            run_clients(url, PROMPTS, BATCH, 4)
            run_clients(url, PROMPTS[:2], 1, 4)
        sides: dict[str, Callable[[], dict[str, Any]]] = {}
        for dtype, url in zip(dtypes, urls, strict=True):
            sides[f"transformers_{dtype}"] = functools.partial(
                alone, "transformers", hf_folder, dtype, PROMPTS, tokens
            )
            sides[f"server_{dtype}_1"] = functools.partial(run_clients, url, PROMPTS, 1, tokens)
            if dtype == dtypes[0]:
                sides["inprocess"] = functools.partial(
                    alone, "gptpipe", folder, dtype, PROMPTS, tokens
                )
                for clients in (1, CLIENTS[-1]):  # the engine alone, no HTTP
                    sides[f"engine_{clients}"] = functools.partial(
                        alone, "engine", folder, dtype, PROMPTS, tokens, clients
                    )
                for clients in CLIENTS[1:]:
                    sides[f"server_{clients}"] = functools.partial(
                        run_clients, url, PROMPTS, clients, tokens
                    )
        runs = alternate(sides, repeats)
    runs["server_1"] = runs.pop(f"server_{dtypes[0]}_1")
    return runs


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank q-th percentile."""
    ranked = sorted(values)
    return ranked[max(0, math.ceil(q / 100 * len(ranked)) - 1)]


def tokens_per_s(runs: list[dict[str, Any]]) -> list[float]:
    return [run["tokens_per_s"] for run in runs]


def same_texts(a: dict[str, Any], b: dict[str, Any]) -> int:
    """How many of the requests two runs answered with the same text."""
    return sum(x == y for x, y in zip(a["texts"], b["texts"], strict=True))


def summarise(
    runs: dict[str, list[dict[str, Any]]], dtypes: list[str], step_bytes: dict[int, float]
) -> dict[str, Any]:
    """The figures of every side's runs (in repeat order); `step_bytes`: the bytes a batched
    step reads at each number of clients (one row each)."""
    per_client = {}
    for clients in CLIENTS:
        side = runs[f"server_{clients}"]
        firsts = [s for run in side for s in run["first_token_s"]]
        per_client[str(clients)] = {
            "tokens_per_s": median(tokens_per_s(side)),
            "runs_tokens_per_s": tokens_per_s(side),
            "first_token_p50_s": percentile(firsts, 50),
            "first_token_p99_s": percentile(firsts, 99),
            "runs_first_token_s": [[round(t, 5) for t in run["first_token_s"]] for run in side],
            "step_s": median(run["step_s"] for run in side),
            "bytes_per_step": step_bytes[clients],
            "full_length": all(run["full_length"] for run in side),
            # batched rows against the same requests one at a time (first repeat)
            "same_texts_as_1": same_texts(side[0], runs["server_1"][0]),
        }
    one, inprocess = runs["server_1"], runs["inprocess"]
    pairs = {}
    for dtype in dtypes:
        server = one if dtype == dtypes[0] else runs[f"server_{dtype}_1"]
        reference = runs[f"transformers_{dtype}"]
        pairs[dtype] = {
            "server_tokens_per_s": median(tokens_per_s(server)),
            "transformers_tokens_per_s": median(tokens_per_s(reference)),
            "runs_transformers_tokens_per_s": tokens_per_s(reference),
            "ratio": paired_ratio(tokens_per_s(server), tokens_per_s(reference)),
            "same_texts": same_texts(server[0], reference[0]),
        }
    return {
        "clients": per_client,
        "sixteen_over_one": paired_ratio(tokens_per_s(runs["server_16"]), tokens_per_s(one)),
        "four_over_one": paired_ratio(tokens_per_s(runs["server_4"]), tokens_per_s(one)),
        "inprocess": {
            "tokens_per_s": median(tokens_per_s(inprocess)),
            "runs_tokens_per_s": tokens_per_s(inprocess),
            "first_token_s": median(s for run in inprocess for s in run["first_token_s"]),
            "dtype": inprocess[0]["dtype"],
            "same_texts": same_texts(one[0], inprocess[0]),
        },
        "server_over_inprocess": paired_ratio(tokens_per_s(one), tokens_per_s(inprocess)),
        "engine": {
            str(c): {
                "tokens_per_s": median(tokens_per_s(runs[f"engine_{c}"])),
                "runs_tokens_per_s": tokens_per_s(runs[f"engine_{c}"]),
                "same_texts_as_server": same_texts(runs[f"engine_{c}"][0], runs[f"server_{c}"][0]),
            }
            for c in (1, CLIENTS[-1])
        },
        "engine_sixteen_over_one": paired_ratio(
            tokens_per_s(runs[f"engine_{CLIENTS[-1]}"]), tokens_per_s(runs["engine_1"])
        ),
        "transformers": pairs,
    }


def step_bytes(hf: Any, dtype: str, tokens: int) -> tuple[str, dict[int, float]]:
    """The cache's dtype where the server decodes in `dtype` (`fastest_cache`, as its
    `cache_plan` picks it), and the bytes one batched step reads at each number of clients,
    as bench_generate counts them: every weight once, and the keys and values of every row
    at its mean position (the prompts' median length + half the new tokens)."""
    import torch

    from benchmarks.bench_generate import bytes_per_token
    from gptpipe.generate.decode import fastest_cache
    from gptpipe.tokenizer.folder import gpt2_encoding

    cfg = hf.config
    cache = fastest_cache(cfg.n_layer, cfg.n_head, cfg.n_embd // cfg.n_head, cfg.n_positions,
                          getattr(torch, dtype)).dtype  # fmt: skip
    encoding = gpt2_encoding()
    position = median(len(encoding.encode_ordinary(p)) for p in PROMPTS) + tokens / 2
    size = getattr(torch, dtype).itemsize
    per_rows = {c: bytes_per_token(hf, size, c * position, cache.itemsize) for c in CLIENTS}
    return str(cache).removeprefix("torch."), per_rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tiny model, 8 tokens, 1 repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=NEW_TOKENS)
    parser.add_argument("--memory-requests", type=int, default=MEMORY_REQUESTS)
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    import torch

    from benchmarks.bench_generate import CONFIGS, bandwidth_gbs, machine
    from gptpipe.runtime import resolve_dtype

    arch = QUICK_ARCH if args.quick else CONFIGS["a"]
    tokens = 8 if args.quick else args.new_tokens
    repeats = 1 if args.quick else args.repeats
    total = 200 if args.quick else args.memory_requests
    dtype = resolve_dtype("auto", torch.device("cpu"))  # what `gptpipe serve` decodes in
    if args.quick:  # one pair, in float32, where greedy texts must agree exactly
        dtype = "float32"
    dtypes = [dtype] + (["float32"] if dtype != "float32" else [])
    results: dict[str, Any] = {"machine": machine(), "arch": arch, "new_tokens": tokens}
    results["machine"]["bandwidth_gb_per_s"] = gbs = bandwidth_gbs(64 if args.quick else 256)
    results |= {"requests": len(PROMPTS), "repeats": repeats, "batch": BATCH, "dtype": dtype}
    print(json.dumps(results), flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        hf, folder, hf_folder = build_folders(arch, Path(tmp))
        results["cache_dtype"], per_step = step_bytes(hf, dtype, tokens)
        del hf
        results |= summarise(measure(folder, hf_folder, dtypes, tokens, repeats), dtypes, per_step)
        for row in results["clients"].values():
            row["bandwidth_utilisation"] = row["bytes_per_step"] / row["step_s"] / (gbs * 1e9)
        print(json.dumps({k: results[k] for k in ("clients", "transformers")}), flush=True)
        with serving(folder, dtype) as server:  # a fresh one: its peak is this test's own
            run_clients(server.url, PROMPTS[:2], 1, 4)
            first = total // 10 if args.quick else MEMORY_FIRST
            results["memory"] = many_requests(server, total, first)
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return results


def report(results: dict[str, Any]) -> str:
    m, c = results["machine"], results["clients"]
    lines = [
        f"machine: {m['cpu']}, {m['threads']} threads, native bf16: {m['native_bf16']}, copy "
        f"bandwidth {m['bandwidth_gb_per_s']:.1f} GB/s; server dtype {results['dtype']}, "
        f"cache {results['cache_dtype']}",
        "clients  tokens/s  TTFT p50 / p99 (ms)  step (ms)  bandwidth",
    ]
    for clients, row in c.items():
        lines.append(
            f"{clients:>7} {row['tokens_per_s']:>9.1f}  {1e3 * row['first_token_p50_s']:>7.1f} / "
            f"{1e3 * row['first_token_p99_s']:<8.1f}  {1e3 * row['step_s']:>9.2f}  "
            f"{row['bandwidth_utilisation']:>8.1%}"
        )
    inp = results["inprocess"]
    lines.append(
        f"16 / 1 clients: {results['sixteen_over_one']:.2f}x (target >= 4x); one client / in "
        f"process ({inp['tokens_per_s']:.1f} tokens/s): {results['server_over_inprocess']:.2f}x "
        "(target >= 0.8x)"
    )
    eng = results["engine"]
    lines.append(
        f"the engine alone, no HTTP: {eng['1']['tokens_per_s']:.1f} tokens/s at 1 client, "
        f"{eng['16']['tokens_per_s']:.1f} at 16 ({results['engine_sixteen_over_one']:.2f}x)"
    )
    for dtype, pair in results["transformers"].items():
        lines.append(
            f"{dtype}: one at a time, server {pair['server_tokens_per_s']:.1f} vs transformers "
            f"{pair['transformers_tokens_per_s']:.1f} tokens/s: {pair['ratio']:.2f}x "
            f"({pair['same_texts']} of {results['requests']} texts equal)"
        )
    mem = results["memory"]
    lines.append(
        f"memory: peak RSS {mem['peak_first_mb']:.0f} MB after {mem['first']} requests, "
        f"{mem['peak_all_mb']:.0f} MB after {mem['requests']} ({mem['peak_ratio']:.3f}x, target "
        f"<= 1.1x); RSS {mem['rss_first_mb']:.0f} -> {mem['rss_all_mb']:.0f} MB; "
        f"{mem['requests'] / mem['seconds']:.1f} requests/s"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main(sys.argv[1:])
