"""Text in, text out: prompts as ids, streamed continuations, stop strings, and the one
function a notebook user calls (`generate_text`).

Tokens are byte sequences: a character of several UTF-8 bytes may be split across tokens,
and a stop string across several. `TextStream` turns ids into text pieces that hold only
whole characters and never a part of the text that may still turn out to begin a stop
string, so what is printed never has to be taken back.
"""

from __future__ import annotations

import codecs
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tiktoken
import torch

from gptpipe.errors import BadInput
from gptpipe.generate.beam import beam_search, beam_stream
from gptpipe.generate.decode import (
    Decoding,
    decode_steps,
    for_decoding,
    problems,
    require_decoding_fits,
)
from gptpipe.model.folder import is_instruct, load_language_model, read_info
from gptpipe.model.gpt import GPT
from gptpipe.prompts import format_prompt
from gptpipe.tokenizer.folder import eot_id


class TextStream:
    """Token ids in, text pieces out, ending at the first stop string (not included)."""

    def __init__(self, encoding: tiktoken.Encoding, stops: Sequence[str] = ()) -> None:
        self.encoding = encoding
        self.stops = tuple(stops)
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.pending = ""  # decoded, not yet released: it may begin a stop string
        self.text = ""  # released so far
        self.stopped = False

    def push(self, token: int) -> str:
        """Add one token; returns the text it releases (possibly empty)."""
        if self.stopped:
            return ""
        self.pending += self.decoder.decode(self.encoding.decode_single_token_bytes(token))
        hits = [i for i in (self.pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.stopped = True
            return self._release(min(hits), rest="")
        hold = 0  # the longest end of `pending` that begins some stop string
        for stop in self.stops:
            for n in range(min(len(stop) - 1, len(self.pending)), hold, -1):
                if self.pending.endswith(stop[:n]):
                    hold = n
                    break
        return self._release(len(self.pending) - hold, rest=None)

    def finish(self) -> str:
        """The text still held back (an unfinished character becomes U+FFFD)."""
        if self.stopped:
            return ""
        self.pending += self.decoder.decode(b"", final=True)
        return self._release(len(self.pending), rest="")

    def _release(self, upto: int, rest: str | None) -> str:
        piece = self.pending[:upto]
        self.pending = self.pending[upto:] if rest is None else rest
        self.text += piece
        return piece


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """`text` up to its first stop string."""
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return text[: min(hits)] if hits else text


def stop_string_ended(
    encoding: tiktoken.Encoding, stops: Sequence[str]
) -> Callable[[Sequence[int]], bool] | None:
    """For beam search: does a hypothesis's text (its new ids) now hold a stop string?

    Each token holds at least one byte, so a stop string that the last token completes lies
    within the bytes of as many last tokens as the string has bytes; only those are decoded.
    """
    if not stops:
        return None
    needles = [s.encode("utf-8") for s in stops]
    reach = max(len(n) for n in needles)

    def ended(ids: Sequence[int]) -> bool:
        tail = encoding.decode_bytes(list(ids[-reach:]))
        return any(n in tail for n in needles)

    return ended


def prompt_ids(encoding: tiktoken.Encoding, text: str) -> list[int]:
    """User text as ids; an empty prompt starts from `<|endoftext|>` (unconditional text)."""
    return encoding.encode_ordinary(text) or [eot_id(encoding)]


def context_ids(model: GPT, encoding: tiktoken.Encoding, text: str, warn: bool = True) -> list[int]:
    """`prompt_ids`, cut from the left to the model's context (with a warning on stderr)."""
    ids = prompt_ids(encoding, text)
    block = model.config.block_size
    if len(ids) > block:
        if warn:
            print(
                f"gptpipe: warning: the prompt's {len(ids)} tokens exceed the model's context "
                f"of {block}: keeping the last {block}",
                file=sys.stderr,
            )
        ids = ids[-block:]
    return ids


def stream(
    model: GPT,
    encoding: tiktoken.Encoding,
    ids: Sequence[int],
    decoding: Decoding,
    generator: torch.Generator | None = None,
) -> Iterator[str]:
    """The continuation of `ids` as text pieces, as they are produced; ends at
    <|endoftext|>, a stop string or the token limit. Beam search yields a token once every
    hypothesis still in the search agrees on it (stop strings end hypotheses inside it)."""
    stop = eot_id(encoding)
    text_stream = TextStream(encoding, decoding.stop)
    if decoding.num_beams > 1:
        ended = stop_string_ended(encoding, decoding.stop)
        tokens: Iterator[int] = beam_stream(model, ids, decoding, stop, ended)
    else:
        tokens = (int(next_ids[0]) for next_ids in decode_steps(model, [ids], decoding, generator))
    for token in tokens:
        if token == stop:
            break
        piece = text_stream.push(token)
        if piece:
            yield piece
        if text_stream.stopped:
            break
    tail = text_stream.finish()
    if tail:
        yield tail


@dataclass(frozen=True)
class Continuation:
    """A continuation's text and how many tokens it took (the stop token not counted)."""

    text: str
    tokens: int


def continuations(
    model: GPT,
    encoding: tiktoken.Encoding,
    prompts: Sequence[Sequence[int]],
    decoding: Decoding,
    generator: torch.Generator | None = None,
    num_samples: int = 1,
) -> list[list[Continuation]]:
    """`num_samples` continuations of each prompt, all decoded as one batch (prompts of
    different lengths are left-padded); each row stops on its own."""
    stop = eot_id(encoding)
    if decoding.num_beams > 1:  # deterministic: one search per prompt, repeated
        found = []
        for p in prompts:
            ids = beam_search(model, p, decoding, stop, stop_string_ended(encoding, decoding.stop))
            text = cut_at_stop(encoding.decode(ids), decoding.stop)
            found.append(Continuation(text, len(ids)))
        return [[c] * num_samples for c in found]
    rows = [p for p in prompts for _ in range(num_samples)]
    streams = [TextStream(encoding, decoding.stop) for _ in rows]
    counts = [0] * len(rows)
    done = [False] * len(rows)
    for next_ids in decode_steps(model, rows, decoding, generator):
        for row, token in enumerate(next_ids.tolist()):
            if done[row]:
                continue
            if token == stop:
                done[row] = True
                continue
            counts[row] += 1
            streams[row].push(token)
            done[row] = streams[row].stopped
        if all(done):
            break
    found = [Continuation(s.text + s.finish(), n) for s, n in zip(streams, counts, strict=True)]
    return [found[i : i + num_samples] for i in range(0, len(found), num_samples)]


def check(decoding: Decoding) -> Decoding:
    """The setting, or BadInput naming the first wrong field."""
    for name, message in problems(decoding):
        raise BadInput(f"{name}: {message}")
    return decoding


def generate_text(
    model: GPT | Path | str,
    prompt: str | Sequence[str],
    encoding: tiktoken.Encoding | None = None,
    seed: int | None = None,
    num_samples: int = 1,
    instruct: bool | None = None,
    device: str = "auto",
    dtype: str = "auto",
    **settings: Any,
) -> str | list[list[str]]:
    """Continue `prompt` with a model folder (or a loaded model and its `encoding`).

    `settings` are the fields of `Decoding` (max_new_tokens, temperature, top_k, top_p,
    repetition_penalty, num_beams, length_penalty, stop, slide); temperature 0, the
    default, is greedy. One prompt and one sample give a string; a list of prompts (or
    num_samples > 1) gives, for each prompt, a list of its samples. `instruct` wraps each
    prompt in the Alpaca template; by default an instruction-tuned folder does. A folder's
    model decodes in `dtype` (`for_decoding`: auto is bfloat16 where native); a loaded
    model decodes in its own. A num_samples (times the prompts) or num_beams whose decode
    cannot fit in memory is refused, naming it, before anything is allocated.

        >>> generate_text("models/base", "Return the", max_new_tokens=20)
    """
    if "stop" in settings and isinstance(settings["stop"], str):
        settings["stop"] = (settings["stop"],)
    elif "stop" in settings:
        settings["stop"] = tuple(settings["stop"])
    decoding = check(Decoding(**settings))
    if num_samples < 1:
        raise BadInput(f"num_samples: must be >= 1, not {num_samples}")
    texts = [prompt] if isinstance(prompt, str) else list(prompt)
    rows = len(texts) * num_samples  # decoded together (`continuations`)
    if isinstance(model, GPT):
        if encoding is None:
            raise BadInput("encoding: a loaded model needs its tokenizer (load_tokenizer)")
        lm, wrap = model, bool(instruct)
    else:
        folder = Path(model)
        if folder.is_dir():  # a count that cannot fit, whatever the prompt: before loading
            require_decoding_fits(str, read_info(folder).config, decoding, rows, 1)
        lm, encoding = load_language_model(folder, device)
        lm = for_decoding(lm, dtype, "dtype")
        wrap = is_instruct(folder, read_info(folder)) if instruct is None else instruct
    ids = [context_ids(lm, encoding, format_prompt(t) if wrap else t) for t in texts]
    require_decoding_fits(str, lm, decoding, rows, max((len(i) for i in ids), default=1))
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    out = continuations(lm, encoding, ids, decoding, generator, num_samples)
    if isinstance(prompt, str) and num_samples == 1:
        return out[0][0].text
    return [[c.text for c in row] for row in out]
