"""bench_bigdata's corpus: generated, text-like documents written as a set of Parquet files
with several row groups each, the way web-text corpora are published on dataset hubs.

    python -m benchmarks.workers.bigdata_corpus OUT_DIR MEGABYTES FILES ROW_GROUP_ROWS SEED

Text: words drawn from a 30,000-word vocabulary of pronounceable made-up words (one to three
syllables) with a Zipf-like law (p(rank r) ~ 1 / (r + 2.7)^1.05, short words frequent, as in
natural text); some words carry a comma or a full stop or are capitalised; paragraphs of 80
words end with a line break; document lengths are log-normal (median ~400 words, 20 to 30,000
words). So BPE merges and GPT-2's tokenizer meet realistic word frequencies and pre-tokens
(about 2.9 KB and 1,100 GPT-2 tokens per document), not random bytes.

The text (UTF-8, MEGABYTES * 1e6 bytes, plus at most a document per file) is spread evenly
over FILES files `part-00000.parquet`, ... with one string column `text`, ROW_GROUP_ROWS
documents per row group (the last of a file fewer; snappy, pyarrow's default). Deterministic
for given arguments. Generated and written one row group at a time (memory: one row group).
Prints {"text_bytes", "parquet_bytes", "documents", "files", "row_groups"}.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ONSETS = "b c d f g h j k l m n p r s t v w y z br ch cl cr dr fl fr gr pl pr sh sk sl sp st th tr"
VOWELS = "a e i o u ai ea ee ie oo ou y"
CODAS = [""] * 3 + ["n", "r", "s", "t", "l", "nd", "st", "ng", "ck", "m"]
WORDS = 30_000
PARAGRAPH_WORDS = 80


def vocabulary(rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    """The word forms and the cumulative probability of each (for `searchsorted`)."""
    onsets, vowels = ONSETS.split(), VOWELS.split()
    seen: set[str] = set()
    words: list[str] = []
    while len(words) < WORDS:
        syllables = min(int(rng.geometric(0.5)), 3)
        word = "".join(
            str(rng.choice(onsets)) + str(rng.choice(vowels)) + str(rng.choice(CODAS))
            for _ in range(syllables)
        )
        if word not in seen:
            seen.add(word)
            words.append(word)
    words.sort(key=lambda w: (len(w), w))  # the frequent ranks are the short words
    forms = words + [w + "," for w in words] + [w + "." for w in words]
    forms += [w.capitalize() for w in words]
    rank = np.arange(len(words)) + 2.7
    base = 1 / rank**1.05
    base /= base.sum()
    p = np.concatenate([base * 0.86, base * 0.06, base * 0.05, base * 0.03])
    cumulative = np.cumsum(p)
    return forms, cumulative / cumulative[-1]


def documents(
    rng: np.random.Generator, forms: list[str], cumulative: np.ndarray, n: int
) -> list[str]:
    lengths = np.clip(rng.lognormal(6.0, 0.9, n).astype(np.int64), 20, 30_000)
    ids = np.searchsorted(cumulative, rng.random(int(lengths.sum()))).tolist()
    words = [forms[i] for i in ids]
    out = []
    at = 0
    for length in lengths.tolist():
        doc = words[at : at + length]
        at += length
        paragraphs = (
            " ".join(doc[j : j + PARAGRAPH_WORDS]) for j in range(0, length, PARAGRAPH_WORDS)
        )
        out.append("\n".join(paragraphs))
    return out


def write_corpus(
    out_dir: Path, megabytes: float, files: int, row_group_rows: int, seed: int
) -> dict[str, int]:
    rng = np.random.default_rng(seed)
    forms, cumulative = vocabulary(rng)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = int(megabytes * 1e6)
    per_file = -(-target // files)
    schema = pa.schema([("text", pa.string())])
    stats = {"text_bytes": 0, "parquet_bytes": 0, "documents": 0, "files": files, "row_groups": 0}
    for index in range(files):
        path = out_dir / f"part-{index:05d}.parquet"
        written = 0
        with pq.ParquetWriter(path, schema) as writer:
            while written < per_file:
                docs = documents(rng, forms, cumulative, row_group_rows)
                sizes = np.cumsum([len(d.encode("utf-8")) for d in docs])
                # the file's last row group: the documents that reach its share, no more
                keep = int(np.searchsorted(sizes, per_file - written)) + 1
                docs = docs[:keep]
                size = int(sizes[min(keep, len(docs)) - 1])
                writer.write_table(pa.table({"text": docs}, schema=schema))
                written += size
                stats["documents"] += len(docs)
                stats["row_groups"] += 1
        stats["text_bytes"] += written
        stats["parquet_bytes"] += path.stat().st_size
    return stats


def main(argv: list[str] | None = None) -> None:
    out_dir, megabytes, files, rows, seed = (sys.argv[1:] if argv is None else argv)[:5]
    stats = write_corpus(Path(out_dir), float(megabytes), int(files), int(rows), int(seed))
    print(json.dumps(stats))


if __name__ == "__main__":
    main()
