"""GPT-2's vocabulary files (`vocab.json` + `merges.txt`, byte-to-unicode encoded) to and from
tiktoken ranks.
"""

from __future__ import annotations

from collections.abc import Mapping

from gptpipe.errors import BadInput

GPT2_VOCAB = 50257  # GPT-2's vocabulary: 50,000 merges + 256 bytes + <|endoftext|>

# --------------------------------------------------------------------------- tokenizer files


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters (vocab.json's alphabet)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 256)]
    chars, extra = list(keep), 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(keep, chars, strict=True)}


def _bpe_parts(ranks: Mapping[bytes, int], token: bytes, max_rank: int) -> list[bytes]:
    """Merge `token`'s bytes with ranks below `max_rank`, lowest first (tiktoken's BPE)."""
    parts = [bytes([b]) for b in token]
    while True:
        best: tuple[int, int] | None = None
        for i in range(len(parts) - 1):
            rank = ranks.get(parts[i] + parts[i + 1])
            if rank is not None and rank < max_rank and (best is None or rank < best[0]):
                best = (rank, i)
        if best is None:
            return parts
        i = best[1]
        parts[i : i + 2] = [parts[i] + parts[i + 1]]


def ranks_to_vocab_merges(
    ranks: Mapping[bytes, int], special: Mapping[str, int]
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """tiktoken ranks as GPT-2's `vocab.json` (token -> id) and `merges.txt` pairs in rank order.

    Each multi-byte token's merge is found by running BPE on its bytes with only the ranks
    below its own: the two parts left are the pair merged into it.
    """
    alphabet = bytes_to_unicode()

    def text(token: bytes) -> str:
        return "".join(alphabet[b] for b in token)

    vocab = {text(token): rank for token, rank in ranks.items()}
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) == 1:
            continue
        parts = _bpe_parts(ranks, token, rank)
        if len(parts) != 2:
            raise BadInput(f"token {token!r} (rank {rank}) is not the merge of two earlier tokens")
        merges.append((text(parts[0]), text(parts[1])))
    vocab.update(special)
    return vocab, merges


def vocab_merges_to_ranks(vocab: Mapping[str, int], special: set[str]) -> dict[bytes, int]:
    """The inverse: `vocab.json` back to tiktoken ranks (special tokens left out)."""
    decoder = {c: b for b, c in bytes_to_unicode().items()}
    try:
        return {bytes(decoder[c] for c in tok): i for tok, i in vocab.items() if tok not in special}
    except KeyError as exc:
        raise BadInput(
            f"vocab.json: token with a character outside GPT-2's byte alphabet {exc}"
        ) from None
