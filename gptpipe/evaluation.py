"""Perplexity of a fixed-length model by the sliding-window method, and bits per byte.

The method is the one of Hugging Face's guide "Perplexity of fixed-length models": a window
of the model's context length (`block_size`) slides over the token stream by `stride`
tokens. Each window scores only the tokens no earlier window scored (the first window all
but its first token, which has no context), so every token after the first is scored
exactly once, with as much left context as the window gives it (at most window-1 tokens).
stride = 1 gives every token its full context and is the most exact (and the slowest).
stride = block_size is the non-overlapping-chunks estimate: as in the guide, each chunk's
first token then has no context inside its window and is not scored.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tiktoken
import torch
import torch.nn.functional as F

from gptpipe.config import DataConfig, EvaluateConfig
from gptpipe.errors import BadInput, ConfigError
from gptpipe.model.folder import load_language_model
from gptpipe.model.gpt import GPT
from gptpipe.progress import progress
from gptpipe.runtime import resolve_device
from gptpipe.sources.datasets import FetchOptions, load_source
from gptpipe.tokenizer.folder import load_tokenizer
from gptpipe.tokenizer.special import EOT
from gptpipe.tokenizer.vocab import BOM, WholeTokenEncoding, WordEncoding
from gptpipe.tokens.corpus import iter_documents, split_documents


@dataclass(frozen=True)
class Window:
    """One forward pass: tokens[begin:end] as the window, scoring tokens[first:end]."""

    begin: int
    end: int
    first: int  # the first token index scored in this window (>= begin + 1)


def windows(n_tokens: int, block_size: int, stride: int) -> list[Window]:
    """The windows of the sliding-window method over a stream of `n_tokens` tokens.

    Mirrors the guide's loop: begin = 0, stride, 2*stride, ...; end = min(begin + window, n);
    the window scores the tokens from the previous window's end to its own end; stop once a
    window reaches the end of the stream.
    """
    if block_size < 2:
        raise ValueError("block_size must be >= 2 to score a token with context")
    if not 1 <= stride <= block_size:
        raise ValueError(f"stride must be in 1..{block_size}, got {stride}")
    result: list[Window] = []
    prev_end = 0
    for begin in range(0, n_tokens, stride):
        end = min(begin + block_size, n_tokens)
        first = max(prev_end, begin + 1)  # a window's first token has no context
        if end > first:
            result.append(Window(begin, end, first))
        prev_end = end
        if end == n_tokens:
            break
    return result


def _as_array(tokens: np.ndarray | Sequence[int]) -> np.ndarray:
    array = np.asarray(tokens)
    if array.ndim != 1:
        raise BadInput(f"tokens must be one-dimensional, got shape {array.shape}")
    return array.astype(np.int64, copy=False)


@torch.inference_mode()
def perplexity(
    model: GPT,
    tokens: np.ndarray | Sequence[int],
    stride: int,
    batch_size: int = 8,
    device: torch.device | str | None = None,
    description: str = "perplexity",
) -> dict[str, float | int]:
    """Sliding-window perplexity of `model` on a token stream.

    Returns `perplexity` (exp of the mean NLL), `nll` (total negative log-likelihood in
    nats), `mean_nll`, `tokens` (tokens scored: all but the first when stride < block_size),
    `windows`, `stride` and `block_size`. Raises BadInput naming `evaluate.stride` if the
    stride exceeds the model's context, and BadInput if there are fewer than two tokens.
    """
    block_size = model.config.block_size
    if not 1 <= stride <= block_size:
        raise ConfigError("evaluate.stride", f"must be in 1..{block_size} (the model's block_size)")
    if batch_size < 1:
        raise ConfigError("evaluate.batch_size", "must be >= 1")
    ids = _as_array(tokens)
    if ids.size < 2:
        raise BadInput(f"need at least 2 tokens to score, got {ids.size}")
    if ids.min() < 0 or ids.max() >= model.config.vocab_size:
        raise BadInput(
            f"token ids out of range for the model's vocabulary of {model.config.vocab_size} "
            f"(min {ids.min()}, max {ids.max()}): model and tokenizer do not match"
        )
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    all_windows = windows(int(ids.size), block_size, stride)
    stream = torch.from_numpy(ids)
    total_nll = 0.0
    scored = 0
    with progress() as bar:
        task = bar.add_task(description, total=len(all_windows))
        for start in range(0, len(all_windows), batch_size):
            batch = all_windows[start : start + batch_size]
            nll, count = _score_batch(model, stream, batch, device)
            total_nll += nll
            scored += count
            bar.advance(task, len(batch))
    model.train(was_training)
    if stride < block_size and scored != ids.size - 1:  # every token but the first, once
        raise AssertionError(f"scored {scored} tokens, expected {ids.size - 1}")
    mean_nll = total_nll / scored
    return {
        "perplexity": math.exp(mean_nll),
        "mean_nll": mean_nll,
        "nll": total_nll,
        "tokens": scored,
        "windows": len(all_windows),
        "stride": stride,
        "block_size": block_size,
    }


def _score_batch(
    model: GPT, stream: torch.Tensor, batch: list[Window], device: torch.device
) -> tuple[float, int]:
    """Summed NLL and count of the scored tokens of a batch of windows.

    A window of L tokens is L-1 inputs predicting L-1 targets; shorter windows (only the
    last ones) are right-padded, which a causal model never looks at, and their padding
    targets are ignored. The head runs only on scored positions: with stride < block_size
    most positions are context only, and for large vocabularies the (B, T, V) logits would
    dominate memory.
    """
    width = max(w.end - w.begin for w in batch) - 1
    inputs = torch.zeros(len(batch), width, dtype=torch.long)
    targets = torch.full((len(batch), width), -100, dtype=torch.long)
    skips = []
    for row, w in enumerate(batch):
        window = stream[w.begin : w.end]
        n = window.numel() - 1
        inputs[row, :n] = window[:-1]
        # target j is token begin+1+j; score it only if it is at or after `first`
        skip = w.first - (w.begin + 1)
        targets[row, skip:n] = window[1 + skip :]
        skips.append(skip)
    # Every scored position lies in the last `tail` columns (with stride < block_size, the
    # last `stride` of a full window): only those go through the last block's MLP, the
    # final LayerNorm and the head; the context-only positions feed the attention alone.
    tail = width - min(skips)
    inputs, targets = inputs.to(device), targets[:, width - tail :].to(device)
    hidden = model.hidden_states(inputs, last=tail)  # (B, tail, C)
    if bool((targets == -100).any()):  # ragged rows (the first or last window): gather
        scored = targets != -100
        hidden, targets = hidden[scored], targets[scored]  # (N, C), (N,)
    else:
        hidden, targets = hidden.flatten(0, 1), targets.flatten()
    logits = model.lm_head(hidden).float()  # (N, V)
    nll = F.cross_entropy(logits, targets, reduction="sum")
    return float(nll.double()), int(targets.numel())


def bits_per_byte(nll: float, n_bytes: int) -> float:
    """Total NLL in nats -> bits per UTF-8 byte of the text scored (tokenizer-independent)."""
    if n_bytes <= 0:
        raise BadInput("no bytes scored: cannot compute bits per byte")
    return nll / math.log(2) / n_bytes


def scored_bytes(encoding: tiktoken.Encoding, tokens: np.ndarray | Sequence[int]) -> int:
    """UTF-8 bytes of the text scored: the tokens after the first, special tokens excluded.

    Byte-level tokens map to their exact bytes, so the count does not depend on how the text
    was split into tokens. `<|endoftext|>` separates documents and is not text, so it adds
    no bytes (predicting it still adds to the NLL, as any token does). Word tokens do not keep
    the text's bytes (case, whitespace): each counts the corpus's bytes per token.
    """
    ids = _as_array(tokens)[1:]
    special = np.array(
        sorted(encoding.encode_single_token(s) for s in encoding.special_tokens_set), dtype=np.int64
    )
    ids = ids[~np.isin(ids, special)]
    if isinstance(encoding, WholeTokenEncoding):
        return encoding.text_bytes(ids.tolist())
    return len(encoding.decode_bytes(ids.tolist()))


def evaluate_tokens(
    cfg: EvaluateConfig,
    model_dir: Path,
    tokens: np.ndarray,
    label: str | None = None,
    n_bytes: int | None = None,
) -> dict[str, Any]:
    """Perplexity, bits per byte and counts of one model folder on a token stream (`n_bytes`:
    the scored text's UTF-8 bytes where known, else counted from the tokens)."""
    device = resolve_device(cfg.device, "evaluate.device")
    model, encoding = load_language_model(model_dir, device)
    result = perplexity(
        model, tokens, cfg.stride, cfg.batch_size, device, description=label or model_dir.name
    )
    if n_bytes is None:
        n_bytes = scored_bytes(encoding, tokens)
    return {
        "perplexity": result["perplexity"],
        "bits_per_byte": bits_per_byte(float(result["nll"]), n_bytes),
        "mean_nll": result["mean_nll"],
        "tokens": result["tokens"],
        "bytes": n_bytes,
        "windows": result["windows"],
        "stride": result["stride"],
        "block_size": result["block_size"],
    }


def evaluate_text(cfg: EvaluateConfig, model_dir: Path, text_file: Path) -> dict[str, Any]:
    """Evaluate any UTF-8 text file, encoded with the model folder's own tokenizer.

    The file is read as a corpus is: a leading byte-order mark is the file's signature, not
    text, and a line that is only `<|endoftext|>` separates documents, scored as that token
    (as the shards hold it) rather than as its 13 characters. A file with fewer than 2
    tokens (empty, one character, only a byte-order mark or separators) is too short.
    """
    if not text_file.is_file():
        raise BadInput(f"{text_file}: text file not found")
    try:
        text = text_file.read_text(encoding="utf-8").removeprefix(BOM)
    except UnicodeDecodeError as exc:
        raise BadInput(f"{text_file}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    check_model_dir(model_dir)
    encoding = load_tokenizer(model_dir)
    pieces = split_documents(text)
    documents = [piece for piece in pieces if piece]
    tokens = document_tokens(encoding, documents)
    if pieces[-1]:  # the text does not end with a separator: no <|endoftext|> after it
        tokens = tokens[:-1]
    if tokens.size < 2:
        raise BadInput(f"{text_file}: too short to evaluate ({tokens.size} tokens, need 2)")
    # Word tokens lose the text's bytes; here the text itself tells them exactly.
    n_bytes = None
    if isinstance(encoding, WordEncoding):
        n_bytes = encoding.scored_text_bytes("\n".join(documents))
    result = evaluate_tokens(cfg, model_dir, tokens, n_bytes=n_bytes)
    return {"model": str(model_dir), "file": str(text_file), **result}


def check_model_dir(model_dir: Path) -> None:
    if not model_dir.is_dir():
        raise BadInput(f"{model_dir}: model folder not found")


def corpus_tokens(encoding: tiktoken.Encoding, corpus: Path) -> np.ndarray:
    """A corpus file's documents as one id stream, each followed by <|endoftext|> (as the
    shards hold them)."""
    return document_tokens(encoding, iter_documents(corpus))


def document_tokens(encoding: tiktoken.Encoding, documents: Iterable[str]) -> np.ndarray:
    """Documents as one id stream, each followed by <|endoftext|> (as the shards hold them)."""
    eot = encoding.encode_single_token(EOT)
    parts: list[np.ndarray] = []
    for document in documents:
        parts.append(
            encoding.encode_to_numpy(document, allowed_special=set(), disallowed_special=())
        )
        parts.append(np.array([eot], dtype=np.uint32))
    return np.concatenate(parts).astype(np.int64) if parts else np.empty(0, dtype=np.int64)


def evaluate_source(
    cfg: EvaluateConfig, model_dir: Path, source: str, mirror: Path | None = None
) -> dict[str, Any]:
    """Evaluate any corpus `download` accepts: a named set (stdlib, tinyshakespeare), a URL
    or a path (archive#member too), normalised as the download stage does; named sets are
    looked for in `mirror` (else $GPTPIPE_MIRROR) first and verified by sha256."""
    check_model_dir(model_dir)
    data = DataConfig()  # the download defaults: timeout, retries, size limit
    if mirror is None and os.environ.get("GPTPIPE_MIRROR"):
        mirror = Path(os.environ["GPTPIPE_MIRROR"])
    if mirror is not None and not mirror.is_dir():
        raise BadInput(f"--mirror {mirror}: mirror folder not found")
    options = FetchOptions(data.timeout, data.retries, data.max_bytes)
    with tempfile.TemporaryDirectory(prefix="gptpipe-evaluate-") as tmp:
        corpus = Path(tmp) / "corpus.txt"
        loaded = load_source(
            "corpus", source, "--source", Path(tmp) / "downloads", corpus, options, mirror=mirror
        )
        tokens = corpus_tokens(load_tokenizer(model_dir), corpus)
    if tokens.size < 2:
        raise BadInput(f"--source {source}: too short to evaluate ({tokens.size} tokens, need 2)")
    result = evaluate_tokens(cfg, model_dir, tokens)
    return {"model": str(model_dir), "source": loaded.provenance["source"], **result}
