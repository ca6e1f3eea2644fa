"""Arrow token shards: write/read round trips, checks, training windows and the sampler."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from gptpipe.errors import BadInput
from gptpipe.tokens.sampler import WindowSampler
from gptpipe.tokens.shard_writer import ShardWriter, TrainValSplitter, new_manifest, write_manifest
from gptpipe.tokens.shards import MANIFEST, TokenWindows, dtype_for_vocab, load_split, read_manifest


def make_shards(
    out: Path, train: np.ndarray, val: np.ndarray, shard_tokens: int = 1024, vocab: int = 5000
) -> dict:
    dtype = dtype_for_vocab(vocab)
    out.mkdir(parents=True, exist_ok=True)
    splits = {}
    for name, data in (("train", train), ("val", val)):
        writer = ShardWriter(out, name, dtype, shard_tokens)
        for piece in np.array_split(data, 7):  # appends of uneven sizes
            writer.append(piece)
        splits[name] = writer.close()
    manifest = new_manifest(
        dtype=dtype, eot_id=vocab - 1, vocab_size=vocab, tokenizer_hash="0" * 64, splits=splits
    )
    write_manifest(out, manifest)
    return manifest


@pytest.fixture
def shards(tmp_path) -> tuple[Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    train = rng.integers(0, 5000, 3000)
    val = rng.integers(0, 5000, 500)
    make_shards(tmp_path / "shards", train, val)
    return tmp_path / "shards", train, val


def test_round_trip_across_several_files(shards):
    out, train, val = shards
    manifest = read_manifest(out)
    assert manifest["splits"]["train"]["files"] == [
        "train-00000.arrow",
        "train-00001.arrow",
        "train-00002.arrow",
    ]
    assert [s["tokens"] for s in manifest["splits"]["train"]["shards"]] == [1024, 1024, 952]
    assert manifest["splits"]["train"]["tokens"] == 3000
    assert manifest["dtype"] == "uint16" and manifest["block_separator"] == "<|endoftext|>"
    loaded = load_split(out, "train")
    assert loaded.dtype == np.uint16 and np.array_equal(loaded, train)
    assert np.array_equal(load_split(out, "val"), val)


def test_single_shard_is_memory_mapped_read_only(shards):
    out, _, val = shards
    array = load_split(out, "val")
    assert len(read_manifest(out)["splits"]["val"]["files"]) == 1
    assert not array.flags.writeable and not array.flags.owndata
    assert np.array_equal(array, val)


def test_large_vocabulary_uses_uint32(tmp_path):
    data = np.arange(70_000, 72_000)
    make_shards(tmp_path, data, data[:300], vocab=100_000)
    assert read_manifest(tmp_path)["dtype"] == "uint32"
    loaded = load_split(tmp_path, "train")
    assert loaded.dtype == np.uint32 and np.array_equal(loaded, data)
    assert dtype_for_vocab(65535) == "uint16" and dtype_for_vocab(65536) == "uint32"


def test_windows_cross_shard_boundaries(shards):
    out, train, _ = shards
    windows = TokenWindows(out, "train", block_size=100)
    assert len(windows) == (3000 - 1) // 100 == 29
    indices = [0, 10, 28, 9]  # window 10 spans tokens 1000..1100, across the first boundary
    x, y = windows.get_batch(indices)
    assert x.dtype == torch.int64 and x.shape == (4, 100) and y.shape == (4, 100)
    for row, i in enumerate(indices):
        assert x[row].tolist() == train[i * 100 : i * 100 + 100].tolist()
        assert y[row].tolist() == train[i * 100 + 1 : i * 100 + 101].tolist()
    with pytest.raises(IndexError):
        windows.get_batch([29])


def test_split_too_small_for_one_window_names_split_and_size(shards):
    out, _, _ = shards
    with pytest.raises(BadInput, match=r"split 'val' has 500 tokens.*\(600 = block_size \+ 1\)"):
        TokenWindows(out, "val", block_size=599)
    assert len(TokenWindows(out, "val", block_size=499)) == 1


def test_unknown_split_and_missing_manifest(tmp_path, shards):
    out, _, _ = shards
    with pytest.raises(BadInput, match="no split 'test'"):
        load_split(out, "test")
    with pytest.raises(BadInput, match=r"manifest\.json: shard manifest not found"):
        load_split(tmp_path / "nowhere", "train")


def test_truncated_shard_is_bad_input_naming_the_file(shards):
    out, _, _ = shards
    path = out / "train-00001.arrow"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(BadInput, match=r"train-00001\.arrow: shard is corrupt"):
        load_split(out, "train")
    with pytest.raises(BadInput, match=r"train-00001\.arrow: not a readable Arrow shard"):
        TokenWindows(out, "train", 16, verify=False)


def test_flipped_byte_is_caught_by_checksum(shards):
    out, _, _ = shards
    path = out / "val-00000.arrow"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BadInput, match=r"val-00000\.arrow: shard is corrupt \(sha256"):
        TokenWindows(out, "val", 16)


def test_missing_shard_and_count_mismatch(shards):
    out, _, _ = shards
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["splits"]["val"]["shards"][0]["tokens"] = 499
    manifest["splits"]["val"]["tokens"] = 499
    (out / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(
        BadInput, match=r"val-00000\.arrow: holds 500 tokens, the manifest says 499"
    ):
        load_split(out, "val")
    manifest["splits"]["val"]["tokens"] = 12
    (out / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(BadInput, match=r"manifest\.json: not a valid shard manifest"):
        read_manifest(out)
    manifest["splits"]["val"]["tokens"] = 499
    (out / MANIFEST).write_text(json.dumps(manifest))
    (out / "train-00002.arrow").unlink()
    with pytest.raises(BadInput, match=r"train-00002\.arrow: shard file not found"):
        load_split(out, "train")


def test_sampler_has_no_repeats_within_an_epoch_and_reshuffles():
    sampler = WindowSampler(num_windows=40, batch_size=8, seed=7)
    epoch0 = np.concatenate([sampler.indices(s) for s in range(5)])
    epoch1 = np.concatenate([sampler.indices(s) for s in range(5, 10)])
    assert sorted(epoch0.tolist()) == list(range(40)) == sorted(epoch1.tolist())
    assert epoch0.tolist() != epoch1.tolist()
    assert sampler.epoch(10) == 2.0


def test_sampler_straddles_epochs_without_repeats_per_epoch():
    sampler = WindowSampler(num_windows=10, batch_size=3, seed=1)
    stream = np.concatenate([sampler.indices(s) for s in range(10)])  # 30 = 3 epochs
    for e in range(3):
        assert sorted(stream[e * 10 : (e + 1) * 10].tolist()) == list(range(10))


def test_sampler_is_reproducible_from_seed_and_step():
    a = WindowSampler(1000, 16, seed=3)
    b = WindowSampler(1000, 16, seed=3)
    later = [b.indices(s).tolist() for s in (900, 5, 123)]  # fresh sampler, any order
    assert later == [a.indices(s).tolist() for s in (900, 5, 123)]
    assert WindowSampler(1000, 16, seed=4).indices(5).tolist() != later[1]
    assert a.indices(0).dtype == np.int64


def test_ranks_get_disjoint_slices_whose_union_is_the_global_batch():
    world = 4
    reference = WindowSampler(100, 6 * world, seed=11)
    for step in (0, 3, 17):
        parts = [WindowSampler(100, 6, seed=11, rank=r, world_size=world) for r in range(world)]
        slices = [p.indices(step).tolist() for p in parts]
        flat = [i for part in slices for i in part]
        assert flat == reference.indices(step).tolist()
        assert len(set(flat)) == len(flat)
    with pytest.raises(ValueError):
        WindowSampler(100, 6, seed=0, rank=4, world_size=4)


def split_with(stream: np.ndarray, out: Path, fraction: float, seed: int, chunk: int):
    """Run the splitter over `stream` (fed in uneven pieces); return counts and both splits."""
    out.mkdir(parents=True, exist_ok=True)
    writers = [ShardWriter(out, s, "uint16", 1 << 20) for s in ("train", "val")]
    splitter = TrainValSplitter(*writers, chunk_tokens=chunk, val_fraction=fraction, seed=seed)
    for piece in np.array_split(stream, 13):
        splitter.append(piece)
    count = splitter.close()
    manifest = new_manifest(dtype="uint16", eot_id=0, vocab_size=60_000, tokenizer_hash="x")
    manifest["splits"] = {w.split: w.close() for w in writers}
    write_manifest(out, manifest)
    return count, splitter.chunks, {s: load_split(out, s) for s in ("train", "val")}


def test_splitter_chunks_are_stream_slices_and_deterministic(tmp_path):
    stream = np.arange(10_050)  # token i at position i: a chunk's first token is its offset
    count, chunks, data = split_with(stream, tmp_path / "a", 0.3, seed=5, chunk=100)
    assert count == 100 and chunks["train"] + chunks["val"] == 100
    assert 10 < chunks["val"] < 60
    starts = []
    for split in data.values():
        i = 0
        while i < len(split):
            first = int(split[i])
            length = 150 if first == 9900 else 100  # the last chunk takes the remainder
            assert first % 100 == 0
            assert np.array_equal(split[i : i + length], stream[first : first + length])
            starts.append(first)
            i += length
    assert sorted(starts) == list(range(0, 10_000, 100))
    _, _, again = split_with(stream, tmp_path / "b", 0.3, seed=5, chunk=100)
    assert all(np.array_equal(data[s], again[s]) for s in data)
    _, _, other = split_with(stream, tmp_path / "c", 0.3, seed=6, chunk=100)
    assert not np.array_equal(data["val"], other["val"])


@pytest.mark.parametrize("fraction", [0.001, 0.999])
def test_splitter_guarantees_a_chunk_for_each_split(tmp_path, fraction):
    count, chunks, data = split_with(np.arange(350), tmp_path, fraction, seed=0, chunk=100)
    assert count == 3 and chunks["train"] >= 1 and chunks["val"] >= 1
    assert len(data["train"]) + len(data["val"]) == 350


# --------------------------------------------------------------------------- encode_corpus

TRICKY = [
    "Plain prose. It's here; they'll say: 'no'.\nNext line\n\n  indented  \n",
    "Ünïcödé façade — “quotes” 日本語 😀👍🏽 and tabs\tand   spaces   \n\n\n",
    "numbers 1234567 89\r\nwindows\r\nlines\r\n",
    "inline <|endoftext|> is plain text here\nx\ny z\n",
    "",  # an empty document between two separators is skipped
    "last words without a newline",
]


def tricky_corpus(path: Path, copies: int = 40) -> Path:
    docs = [f"{d}{i}" if d else d for i in range(copies) for d in TRICKY]
    data = "\n<|endoftext|>\n".join(docs) + "\n<|endoftext|>\r\n<|endoftext|>\ntail"
    path.write_text(data, encoding="utf-8", newline="")
    return path


def reference_ids(path: Path, encoding) -> list[int]:
    from gptpipe.tokenizer.folder import eot_id
    from gptpipe.tokens.corpus import iter_documents

    return [
        t for d in iter_documents(path) for t in [*encoding.encode_ordinary(d), eot_id(encoding)]
    ]


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory) -> Path:
    from gptpipe.tokenizer.folder import save_gpt2

    out = tmp_path_factory.mktemp("tok") / "gpt2"
    save_gpt2(out)
    return out


@pytest.mark.parametrize("block", [7, 64, 1000, 1 << 20])
def test_streamed_pieces_encode_exactly_like_whole_documents(tmp_path, gpt2_dir, block):
    from gptpipe.tokenizer.folder import load_tokenizer
    from gptpipe.tokens.corpus import read_pieces
    from gptpipe.tokens.shard_writer import CorpusStats, encode_corpus

    corpus = tricky_corpus(tmp_path / "corpus.txt")
    pieces = list(read_pieces(corpus, block))
    assert b"".join(p for _, p in pieces) == corpus.read_bytes()
    if block < 1000:
        assert len(pieces) > 50 and max(len(p) for _, p in pieces) < 4 * block + 200
    expected = reference_ids(corpus, load_tokenizer(gpt2_dir))
    for workers in (1, 2):
        stats = CorpusStats()
        ids = encode_corpus(corpus, gpt2_dir, "uint16", workers, stats, block_bytes=block)
        assert np.concatenate(list(ids)).tolist() == expected
        assert stats.documents == 5 * 40 + 1 and stats.bytes == corpus.stat().st_size


def test_non_utf8_bytes_name_the_file_and_offset_from_a_worker(tmp_path, gpt2_dir):
    from gptpipe.tokens.shard_writer import encode_corpus

    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(b"good words here\n" * 1000 + b"bad \xff byte\n" + b"more text\n" * 10)
    with pytest.raises(
        BadInput, match=r"corpus\.txt: not UTF-8 text \(invalid byte at offset 16004\)"
    ):
        list(encode_corpus(corpus, gpt2_dir, "uint16", 2, block_bytes=256))


def test_split_documents_agrees_with_the_separator_regex():
    import random

    from gptpipe.tokenizer.special import EOT
    from gptpipe.tokens.corpus import _SEPARATOR, split_documents

    rng = random.Random(0)
    alphabet = ["a", "\n", "\r", EOT, " "]
    texts = [f"a\r\n{EOT}\r\r\nb", f"a{EOT}\nb", f"a\n{EOT}x\nb", f"\n\n{EOT}\n\n{EOT}\n"]
    texts += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))) for _ in range(5000)]
    for text in texts:
        assert split_documents(text) == _SEPARATOR.split(text), repr(text)
