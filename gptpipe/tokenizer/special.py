"""`<|endoftext|>` and the rules for extra special tokens.

A leaf module: data code that only needs the end-of-text string imports it without the
tokenizer machinery, so a tokenizer change does not rerun the download stage.
"""

from __future__ import annotations

from collections.abc import Sequence

EOT = "<|endoftext|>"


def special_token_problem(tokens: Sequence[str]) -> tuple[int, str] | None:
    """The first reason `tokens` (extra special tokens) cannot be used: (index, message).

    Each must be non-blank, listed once, not `<|endoftext|>` (always present), and no
    special token may start with another one: tiktoken matches specials left to right
    with the first alternative that fits, so the longer one could never be encoded (and
    Hugging Face tokenizers, which prefer the longest, would encode differently).
    """
    for i, token in enumerate(tokens):
        if not token.strip():
            return i, "must not be empty or only whitespace"
        if token == EOT:
            return i, f"{EOT} is always the first special token; do not list it"
        if len(token.encode("utf-8")) == 1:
            return i, f"{token!r} is one byte, already a token of every byte-level vocabulary"
        if token in tokens[:i]:
            return i, f"{token!r} is listed twice (also at index {tokens.index(token)})"
        for other in (EOT, *tokens[:i]):
            if token.startswith(other) or other.startswith(token):
                short, long = sorted((token, other), key=len)
                return i, (
                    f"{token!r} and {other!r}: {short!r} is a prefix of {long!r}, so tiktoken "
                    f"could never encode {long!r}; no special token may start with another"
                )
    return None
