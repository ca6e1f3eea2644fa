"""The decoding loop: greedy or sampled, batched, on the model's key/value cache.

A prompt (or a batch of prompts of different lengths, left-padded) is prefilled in one
forward pass; each new token then costs one position's work on a cache preallocated for
the whole context. When the context fills, the window slides: the oldest `slide` tokens
are dropped and the cache is rebuilt from the rest (positions are learned and absolute,
so cached keys cannot simply be shifted). Which token comes next is decided by the pure
rules of `gptpipe.generate.sampling`; text-level stopping lives in `gptpipe.generate.text`.
The settings (`Decoding`, re-exported here) and their ranges live in `gptpipe.decoding`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gptpipe.config import gpt_params, require_fits
from gptpipe.decoding import Decoding, SettingError, check
from gptpipe.errors import BadInput
from gptpipe.generate import kernels
from gptpipe.generate.fused_step import FusedStep
from gptpipe.generate.layouts import lay_out_linears
from gptpipe.generate.sampling import choose, seen_tokens
from gptpipe.model.gpt import GPT, GPTConfig, KVCache
from gptpipe.runtime import median_seconds, native_bf16

DTYPES = ("auto", "float32", "bfloat16")


def problems(d: Decoding) -> list[tuple[str, str]]:
    """What is wrong with a setting, as (field, message) pairs: `gptpipe.decoding.check`'s
    verdict. A `Decoding` is checked when it is built, so one built normally has none."""
    try:
        check(d.values())
    except SettingError as exc:
        return [(exc.name, exc.message)]
    return []


def for_decoding(
    model: GPT, dtype: str = "auto", option: str = "--dtype", layout: str = "fastest"
) -> GPT:
    """The model in the dtype and weight layout it decodes in, changed in place: `auto` is
    bfloat16 where its device computes bf16 natively (CUDA from Ampere on, AVX-512 BF16 /
    AMX CPUs), else float32; on the CPU its Linears then take their decode-time layout
    (`lay_out_linears`: the fastest here, or `layout`; "plain" keeps them as they are), after
    which the model only decodes.

    Batch-1 decoding reads every weight once per token, so it is bound by memory traffic:
    bf16 halves the bytes per token. Its logits stay within a few hundredths of float32's
    and greedy tokens agree where the top two are not within that (tests/generate). The
    cache is `cache_plan`'s; sampling rules work on float32 logits. Where bf16 is
    not native it is emulated and slower, so `auto` keeps float32 there.
    """
    if dtype not in DTYPES:
        raise BadInput(f"{option}: expected one of {', '.join(DTYPES)}, not {dtype!r}")
    device = next(model.parameters()).device
    if dtype == "auto":
        dtype = "bfloat16" if native_bf16(device) else "float32"
    model = model.to(getattr(torch, dtype))
    return lay_out_linears(model, layout)


@dataclass(frozen=True)
class CachePlan:
    """How a decoding model's key/value cache is kept and read: its dtype, and whether one
    new query reads it through `kernels.one_query_attention` (else torch's attention)."""

    dtype: torch.dtype
    kernel: bool = False

    def new_cache(
        self,
        model: GPT,
        batch_size: int,
        max_len: int,
        pad: torch.Tensor | None = None,
    ) -> KVCache:
        """An empty cache for `model` on its device, kept and read this way."""
        device = next(model.parameters()).device
        attend = kernels.one_query_attention if self.kernel else None
        return KVCache(model.config, batch_size, max_len, device, self.dtype, pad, attend)


def cache_plan(model: GPT) -> CachePlan:
    """The cache a model decodes on: in the weights' dtype and read by torch's attention off
    the CPU; on the CPU, `fastest_cache` at the model's shape. What is fastest differs most
    between CPUs: at GPT-2 124M's shape over 1,000 keys, torch's bf16 attention is ~6x slower
    than its float32 one on an AVX-512 BF16 CPU and ~1.8x faster on an AMX one (one thread),
    and the kernel over a bf16 cache beats both on the first (`kernels.one_query_attention`)."""
    param = next(model.parameters())
    if param.device.type != "cpu" or param.dtype not in (torch.float32, torch.bfloat16):
        return CachePlan(param.dtype)
    cfg = model.config
    return fastest_cache(
        cfg.n_layer, cfg.n_head, cfg.n_embd // cfg.n_head, cfg.block_size, param.dtype
    )


# What a decode keeps per row besides its cache, in the units `decoding_bytes` counts them:
# float32 (rows, V) tensors alive at once while choosing a token (the logits as float32, the
# penalised and tempered copies, top-k's mask, top-p's sorted values, int64 order (two),
# softmax and cumulative sum, the probabilities); a prefilled token's activations in one
# block, in units of n_embd (residual, LayerNorm out, the MLP's 4C input and 4C GELU out);
# and the Python objects of a continuation (its text stream, count, text).
LOGIT_COPIES = 8
PREFILL_WIDTH = 10
ROW_OBJECT_BYTES = 1024


def decoding_bytes(
    model: GPT | GPTConfig, rows: int, reach: int, *, penalty: bool, prefill: int | None = None
) -> int:
    """Estimated bytes a batched decode of `rows` rows needs beyond the weights, for
    refusing a size that cannot fit before anything is allocated (`require_decoding_fits`):

    - the key/value cache: 2 x n_layer x rows x reach x n_embd at the cache's dtype (what
      `CachePlan.new_cache` allocates for `reach` positions: the prompt and the tokens fed
      back, the whole context when the window slides);
    - the token buffer, (rows, block_size + 1) int64;
    - the logits, (rows, V) at the weights' dtype, and `LOGIT_COPIES` float32 (rows, V)
      tensors `sampling.choose` makes at its peak (top-p's sort and softmax);
    - with a repetition penalty, the (rows, V + 1) bool `seen` mask;
    - a prefill's activations of one block, `PREFILL_WIDTH` x n_embd per token over
      `prefill` tokens a row (default `reach`: a slide re-reads up to the whole context);
      attention's scratch is not (torch's fused kernels keep no (T, T) scores; its math
      path keeps one layer's, (H, T, T) float per row, below the cache at GPT-2's shapes);
    - `ROW_OBJECT_BYTES` of Python objects per row.

    A loaded model counts its cache at `cache_plan`'s dtype and its activations at its
    weights'; a bare `GPTConfig` (a model folder's, before loading it) counts both in
    bfloat16, the narrowest dtype a model decodes in, so that what it refuses cannot fit
    whatever the dtype. An estimate for refusing: above the cache itself and at most about
    twice what a decode holds at once (the prefill and the choosing do not peak together),
    never orders of magnitude off (tests/generate/test_decode.py checks it against a
    real cache).
    """
    if isinstance(model, GPT):
        cfg, act = model.config, next(model.parameters()).element_size()
        kv = cache_plan(model).dtype.itemsize
    else:
        cfg, act, kv = model, 2, 2
    C, V = cfg.n_embd, cfg.vocab_size
    tokens = reach if prefill is None else min(prefill, reach)
    per_row = (
        2 * cfg.n_layer * reach * C * kv  # keys and values
        + 8 * (cfg.block_size + 1)  # the token buffer
        + V * act  # the logits
        + LOGIT_COPIES * V * 4  # choosing: float32 copies
        + (V + 1 if penalty else 0)  # the seen mask
        + PREFILL_WIDTH * tokens * C * act  # one block's prefill activations
        + ROW_OBJECT_BYTES
    )
    return rows * per_row


def beam_bytes(
    model: GPT | GPTConfig,
    num_beams: int,
    reach: int,
    max_new_tokens: int,
    *,
    penalty: bool,
    prefill: int | None = None,
) -> int:
    """`decoding_bytes` of beam search (`gptpipe.generate.beam`): its `num_beams` rows share
    one cache, and reordering it copies the filled part of keys or values (half the cache)
    at once; the search keeps about 9 (num_beams, max_new_tokens) int64 tensors of
    hypotheses (the running and finished beams, the 2 x num_beams candidates, their merge)."""
    if isinstance(model, GPT):
        cfg, kv = model.config, cache_plan(model).dtype.itemsize
    else:
        cfg, kv = model, 2
    reorder = cfg.n_layer * num_beams * reach * cfg.n_embd * kv
    hypotheses = 9 * num_beams * max_new_tokens * 8
    searched = decoding_bytes(model, num_beams, reach, penalty=penalty, prefill=prefill)
    return searched + reorder + hypotheses


def weight_bytes(model: GPT | GPTConfig) -> int:
    """The weights' bytes: a loaded model's own, a bare config's in bfloat16 (see
    `decoding_bytes`)."""
    if isinstance(model, GPT):
        return sum(p.nbytes for p in model.parameters())
    return 2 * gpt_params(model, model.vocab_size)


def require_decoding_fits(
    name: Callable[[str], str],
    model: GPT | GPTConfig,
    decoding: Decoding,
    rows: int,
    prompt_tokens: int,
    error: Callable[[str, str], Exception] = SettingError,
    available: int | None = None,
) -> None:
    """Refuse, before anything is allocated, a decode whose memory (the weights and
    `decoding_bytes`) exceeds the machine's (`gptpipe.config.require_fits`): `rows`
    continuations decoded together (each entry point's num_samples times its prompts), or
    beam search's num_beams. `prompt_tokens` is the longest prompt's token count or a bound
    of it (1 when it is not known yet: a refusal then holds for any prompt). The setting
    that is too large is reported by the caller's `name` for it (`--num-beams`,
    `sample.decoding[3].num_beams`) as `error(name, why)`, as `gptpipe.decoding.check`
    reports a value out of range. One sequential continuation at a time needs no check: the
    model's context bounds its cache."""
    cfg = model.config if isinstance(model, GPT) else model
    reach = max(1, min(cfg.block_size, prompt_tokens + decoding.max_new_tokens - 1))
    # a prompt that fits with its continuation is prefilled whole; a slide re-reads the
    # window (up to the whole context)
    prefill = prompt_tokens if reach < cfg.block_size else cfg.block_size
    penalty = decoding.repetition_penalty != 1.0
    if decoding.num_beams > 1:
        k = decoding.num_beams
        need = beam_bytes(
            model, k, reach, decoding.max_new_tokens, penalty=penalty, prefill=prefill
        )
        need += 16 * rows  # the repeated result's list slots (`continuations`)
        setting, what = "num_beams", f"beam search with {k:,} beams"
    else:
        need = decoding_bytes(model, rows, reach, penalty=penalty, prefill=prefill)
        setting, what = "num_samples", f"decoding {rows:,} continuations together"
    need += weight_bytes(model)
    require_fits(
        name(setting), need, f"{what} (their key/value caches and logits)", available, error
    )


# the cache memory `fastest_cache` reads per timed call, at most
TIMED_CACHE_BYTES = 64 << 20


@functools.lru_cache(maxsize=16)
def fastest_cache(
    n_layer: int, n_head: int, head_dim: int, block_size: int, weights: torch.dtype
) -> CachePlan:
    """The fastest of `plan_seconds`' plans, here and now (measured once per process and
    shape). On a tie the first plan listed wins: float32, torch's attention."""
    seconds = plan_seconds(n_layer, n_head, head_dim, block_size, weights)
    return min(seconds, key=seconds.__getitem__)


def plan_seconds(
    n_layer: int, n_head: int, head_dim: int, block_size: int, weights: torch.dtype
) -> dict[CachePlan, float]:
    """Seconds of a decoding step's attention far into the context, for each plan a CPU
    model with `weights` may decode on: a float32 cache, a bf16 one too for bf16 weights,
    each read by `scaled_dot_product_attention` or by the kernel where it is built.

    Timed as a decoding step reads the cache: one query per layer over block_size keys (at
    most 2,048), every layer's own keys and values in turn, so that a cache larger than the
    CPU's caches comes from memory as it does when decoding (at most `TIMED_CACHE_BYTES` of
    it, to bound the timing's cost); `median_seconds` of each. The values do not matter to
    the speed, so they are ones."""
    keys = min(block_size, 2048)
    per_layer = 2 * n_head * keys * head_dim * 4  # keys and values, float32
    layers = max(1, min(n_layer, TIMED_CACHE_BYTES // per_layer))
    dtypes = [torch.float32] + ([torch.bfloat16] if weights == torch.bfloat16 else [])
    readers = (False, True) if kernels.library() is not None else (False,)
    plans = [CachePlan(dtype, kernel) for dtype in dtypes for kernel in readers]
    return {plan: _read_seconds(plan, layers, n_head, keys, head_dim) for plan in plans}


def _read_seconds(plan: CachePlan, layers: int, n_head: int, keys: int, head_dim: int) -> float:
    """`median_seconds` of one query per layer over `keys` keys, each layer's cache in turn."""
    k = torch.ones(layers, 1, n_head, keys, head_dim, dtype=plan.dtype)
    v = torch.ones_like(k)
    q = torch.ones(1, n_head, 1, head_dim, dtype=plan.dtype)
    attend = kernels.one_query_attention if plan.kernel else F.scaled_dot_product_attention

    def step() -> None:
        for layer in range(layers):
            attend(q, k[layer], v[layer])

    with torch.inference_mode():
        return median_seconds(step)


def next_logits(
    model: GPT, ids: torch.Tensor, cache: KVCache, fused: FusedStep | None = None
) -> torch.Tensor:
    """Logits (B, V) of the token after `ids` (B, T), the cache holding what came before
    (its positions advance by T): a prompt's prefill, or one new token per row, through
    `fused` (`FusedStep.of(model)`) where it applies."""
    if fused is not None and fused.applies(ids, cache):
        return model.lm_head(fused(ids, cache))
    return model.lm_head(model.hidden_states(ids, cache, last=1)[:, -1])


def slide_size(model: GPT, slide: int) -> int:
    """Tokens dropped from the window when the context fills (0: a quarter of it)."""
    block = model.config.block_size
    return min(max(slide or block // 4, 1), block - 1)


def left_pad(
    prompts: Sequence[Sequence[int]], block_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts cropped to their last `block_size` ids, left-padded with 0 to one width:
    (B, T) ids and (B,) padding counts."""
    rows = [list(p)[-block_size:] for p in prompts]
    if not rows or any(not r for r in rows):
        raise ValueError("every prompt must hold at least one token")
    width = max(len(r) for r in rows)
    ids = torch.tensor([[0] * (width - len(r)) + r for r in rows], dtype=torch.long)
    pad = torch.tensor([width - len(r) for r in rows], dtype=torch.long)
    return ids, pad


@torch.inference_mode()
def decode_steps(
    model: GPT,
    prompts: Sequence[Sequence[int]],
    decoding: Decoding,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> Iterator[torch.Tensor]:
    """Yield the next token of every row, (B,) on the model's device, step after step, up
    to `decoding.max_new_tokens` steps; stop early by leaving the loop.

    Rows are independent (a row does not see another's tokens); one `generator` draws for
    all rows, so the same seed and prompts give the same tokens. `use_cache=False`
    recomputes the whole window for every token (the reference the cache is tested
    against; with left padding it uses a fresh cache per step as its mask).
    """
    was_training = model.training
    model.eval()
    try:
        yield from _steps(model, prompts, decoding, generator, use_cache)
    finally:
        model.train(was_training)


def _steps(
    model: GPT,
    prompts: Sequence[Sequence[int]],
    d: Decoding,
    generator: torch.Generator | None,
    use_cache: bool,
) -> Iterator[torch.Tensor]:
    device, plan = next(model.parameters()).device, cache_plan(model)
    block, vocab = model.config.block_size, model.config.vocab_size
    prompt, pad = left_pad(prompts, block)
    B, width = prompt.shape
    pad = pad.to(device)
    # the tokens in the context window, preallocated: buffer[:, :width] is the window
    buffer = torch.empty(B, block + 1, dtype=torch.long, device=device)
    buffer[:, :width] = prompt
    rows = torch.arange(B, device=device)
    seen = None
    if d.repetition_penalty != 1.0:  # the whole prompt counts, even what the window cropped
        full = torch.full((B, max(len(p) for p in prompts)), -1, dtype=torch.long)
        for row, p in enumerate(prompts):
            full[row, : len(p)] = torch.tensor(list(p), dtype=torch.long)
        seen = seen_tokens(full.to(device), vocab)
    # The cache holds what the window can reach: the prompt and the tokens fed back (the
    # last one yielded is not), the whole context only if the window will slide.
    reach = min(block, width + d.max_new_tokens - 1)
    cache = plan.new_cache(model, B, reach, pad) if use_cache else None
    fused = FusedStep.of(model)
    drop = slide_size(model, d.slide)

    def logits_of(ids: torch.Tensor) -> torch.Tensor:
        """Next-token logits (B, V) after `ids`: all of the window, or one new token."""
        if cache is None:
            window = buffer[:, :width]
            if not bool(pad.any()):
                return model.lm_head(model.hidden_states(window)[:, -1])
            scratch = plan.new_cache(model, B, width, pad)
            return model.lm_head(model.hidden_states(window, scratch)[:, -1])
        return next_logits(model, ids, cache, fused)

    logits = logits_of(buffer[:, :width])
    for step in range(d.max_new_tokens):
        next_ids = choose(
            logits, d.temperature, d.top_k, d.top_p, d.repetition_penalty, seen, generator
        )  # (B,)
        yield next_ids
        if step + 1 == d.max_new_tokens:
            return
        if seen is not None:
            seen[rows, next_ids] = True
        buffer[:, width] = next_ids
        width += 1
        if width > block:  # the context is full: slide, and rebuild the cache
            cut = max(drop, width - block)
            buffer[:, : width - cut] = buffer[:, cut:width].clone()
            width -= cut
            pad = (pad - cut).clamp_min(0)
            if cache is not None:
                cache.reset(pad)
            logits = logits_of(buffer[:, :width])
        else:
            logits = logits_of(buffer[:, width - 1 : width])


def generate_ids(
    model: GPT,
    prompts: Sequence[Sequence[int]],
    decoding: Decoding,
    generator: torch.Generator | None = None,
    stop_ids: Collection[int] = (),
    use_cache: bool = True,
) -> list[list[int]]:
    """The new ids of each prompt, each row ending before its first id in `stop_ids`."""
    rows: list[list[int]] = [[] for _ in prompts]
    done = [False] * len(rows)
    stops = set(stop_ids)
    for next_ids in decode_steps(model, prompts, decoding, generator, use_cache):
        for row, token in enumerate(next_ids.tolist()):
            if done[row]:
                continue
            if token in stops:
                done[row] = True
            else:
                rows[row].append(token)
        if all(done):
            break
    return rows


def generate_many(
    model: GPT,
    prompts: Sequence[Sequence[int]],
    decoding: Decoding,
    stop_ids: Collection[int] = (),
    batch_size: int = 8,
    generator: torch.Generator | None = None,
    advance: Callable[[int], object] | None = None,
) -> list[list[int]]:
    """`generate_ids` over any number of prompts, `batch_size` at a time, in the prompts'
    order. Prompts of similar length share a batch (sorted by length), so that little
    padding is computed; a batch ends when all its rows have stopped. Greedy decoding gives
    each prompt the tokens it gets alone; sampled rows draw in batch order from `generator`.
    `advance` (a progress bar's, say) is called with the number of prompts each batch answered.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[list[int]] = [[] for _ in prompts]
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        new = generate_ids(model, [prompts[i] for i in rows], decoding, generator, stop_ids)
        for i, ids in zip(rows, new, strict=True):
            out[i] = ids
        if advance is not None:
            advance(len(rows))
    return out
