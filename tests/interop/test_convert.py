"""Weight layouts: name maps, the TF checkpoint reader (table, Snappy, protobuf), streaming."""

from __future__ import annotations

import struct

import pytest
import torch
from helpers.gpt2 import (
    crc32c_bitwise,
    hf_model,
    snappy_compress,
    write_table,
    write_tf_checkpoint,
)
from safetensors.torch import load_file

from gptpipe.errors import BadInput
from gptpipe.interop.gpt2_formats import (
    config_from_shapes,
    expected_shapes,
    hf_to_ours,
    open_gpt2_checkpoint,
    ours_to_hf,
    tf_name_to_ours,
)
from gptpipe.interop.gpt2_vocab import ranks_to_vocab_merges, vocab_merges_to_ranks
from gptpipe.interop.tf_checkpoint import crc32c, read_table, snappy_decompress
from gptpipe.model.folder import model_from_tensors
from gptpipe.model.gpt import GPT, GPTConfig
from gptpipe.model.tensors import LazyTensor, lazy_tensors, write_safetensors
from gptpipe.tokenizer.folder import gpt2_ranks_path, read_ranks


def test_crc32c_matches_the_standard_check_value():
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C catalogue's check value
    data = bytes(range(256)) * 3
    assert crc32c(data) == crc32c_bitwise(data)


def test_snappy_decodes_literals_and_overlapping_copies():
    # varint 12, literal "abc", copy-1 of 9 bytes from offset 3 (overlapping its output)
    assert snappy_decompress(bytes([12, 0x08]) + b"abc" + bytes([0x15, 0x03])) == b"abc" * 4
    # copy with a 2-byte offset and a 4-byte offset
    assert snappy_decompress(bytes([8, 0x0C]) + b"wxyz" + bytes([0x0E, 4, 0])) == b"wxyz" * 2
    assert snappy_decompress(bytes([8, 0x0C]) + b"wxyz" + bytes([0x0F, 4, 0, 0, 0])) == b"wxyz" * 2
    data = b"model/h0/attn/c_attn/w model/h0/attn/c_proj/w " * 40 + bytes(range(200))
    assert snappy_decompress(snappy_compress(data)) == data
    with pytest.raises(ValueError):
        snappy_decompress(bytes([12, 0x08]) + b"abc" + bytes([0x15, 0x09]))  # offset too far


@pytest.mark.parametrize("compress", [False, True])
def test_table_reader_reads_every_entry_across_blocks(compress):
    entries = [(f"model/h{i}/attn/c_attn/w".encode(), bytes([i]) * (i + 1)) for i in range(60)]
    entries.append((b"", b"header"))
    data = write_table(entries, block_size=128, compress=compress)
    assert read_table(data) == dict(entries)
    corrupt = bytearray(data)
    corrupt[10] ^= 0xFF
    with pytest.raises(ValueError, match="checksum"):
        read_table(bytes(corrupt))
    with pytest.raises(ValueError, match="magic"):
        read_table(data[:-1] + b"\0")


def test_hf_and_tf_name_maps():
    hf = hf_model(0)
    ours = hf_to_ours(hf.state_dict())
    shapes = {k: tuple(v.shape) for k, v in ours.items()}
    config = config_from_shapes(shapes, n_head=4, where="x")
    assert shapes == expected_shapes(config)
    assert (config.n_layer, config.n_embd, config.block_size, config.vocab_size) == (
        2,
        64,
        128,
        50257,
    )
    back = ours_to_hf(ours)
    for name, value in back.items():
        assert torch.equal(value, hf.state_dict()[name]), name
    assert tf_name_to_ours("model/h11/mlp/c_fc/w") == "h.11.mlp.c_fc.weight"
    assert tf_name_to_ours("model/h0/ln_1/g") == "h.0.ln_1.weight"
    assert tf_name_to_ours("model/ln_f/b") == "ln_f.bias"
    assert tf_name_to_ours("model/wte") == "wte.weight"
    assert tf_name_to_ours("global_step") is None


def _logits_equal(ours: GPT, hf, ids: torch.Tensor) -> float:
    with torch.no_grad():
        return (ours(ids)[0] - hf(ids).logits).abs().max().item()


@pytest.mark.parametrize(("compress", "dtype"), [(False, torch.float32), (True, torch.float16)])
def test_tf_checkpoint_loads_equal_to_the_reference(tmp_path, compress, dtype):
    hf = hf_model(1)
    if dtype == torch.float16:  # the reference holds the same rounded weights
        hf = hf.half().float()
    hparams = {"n_vocab": 50257, "n_ctx": 128, "n_embd": 64, "n_head": 4, "n_layer": 2}
    write_tf_checkpoint(tmp_path / "tf", hf.state_dict(), hparams, compress=compress, dtype=dtype)
    checkpoint = open_gpt2_checkpoint(tmp_path / "tf")
    assert checkpoint.format == "openai-tf"
    model = model_from_tensors(checkpoint.config, checkpoint.tensors)
    ids = torch.randint(0, 50257, (2, 40), generator=torch.Generator().manual_seed(0))
    assert _logits_equal(model, hf, ids) < 1e-4


def test_tf_checkpoint_errors_name_the_file(tmp_path):
    hf = hf_model(2)
    hparams = {"n_vocab": 50257, "n_ctx": 128, "n_embd": 64, "n_head": 4, "n_layer": 2}
    write_tf_checkpoint(tmp_path / "tf", hf.state_dict(), {**hparams, "n_layer": 3})
    with pytest.raises(BadInput, match=r"hparams\.json: n_layer is 3"):
        open_gpt2_checkpoint(tmp_path / "tf")
    index = tmp_path / "tf" / "model.ckpt.index"
    index.write_bytes(index.read_bytes()[:-3])
    with pytest.raises(BadInput, match=r"model\.ckpt\.index: not a readable"):
        open_gpt2_checkpoint(tmp_path / "tf")
    with pytest.raises(BadInput, match="no GPT-2 checkpoint"):
        open_gpt2_checkpoint(tmp_path)


def test_hf_folder_with_untied_head_or_other_variant_is_refused(tmp_path):
    hf = hf_model(3)
    hf.save_pretrained(tmp_path / "hf")
    state = load_file(tmp_path / "hf" / "model.safetensors")
    state["lm_head.weight"] = torch.randn(50257, 64)
    from safetensors.torch import save_file

    save_file(state, tmp_path / "hf" / "model.safetensors")
    with pytest.raises(BadInput, match="untied"):
        open_gpt2_checkpoint(tmp_path / "hf")
    hf.config.activation_function = "relu"
    hf.save_pretrained(tmp_path / "relu")
    with pytest.raises(BadInput, match="activation_function"):
        open_gpt2_checkpoint(tmp_path / "relu")


def test_streaming_writer_round_trips_and_model_from_tensors(tmp_path):
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=300, block_size=16, n_layer=2, n_head=2, n_embd=32)
    model = GPT(config).eval()
    state = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}
    lazy = {k: LazyTensor(tuple(v.shape), lambda v=v: v.clone()) for k, v in state.items()}
    write_safetensors(tmp_path / "w.safetensors", lazy)
    loaded = load_file(tmp_path / "w.safetensors")  # the reference reader accepts the file
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    rebuilt = model_from_tensors(config, lazy_tensors(tmp_path / "w.safetensors"))
    assert rebuilt.lm_head.weight is rebuilt.wte.weight
    ids = torch.randint(0, 300, (2, 16))
    with torch.no_grad():
        assert torch.equal(rebuilt(ids)[0], model(ids)[0])
    bad = {**lazy, "wte.weight": LazyTensor((300, 31), lambda: torch.zeros(300, 31))}
    with pytest.raises(BadInput, match="wrong shapes"):
        model_from_tensors(config, bad)
    header_len = struct.unpack("<Q", (tmp_path / "w.safetensors").read_bytes()[:8])[0]
    assert (8 + header_len) % 8 == 0


def test_vocab_and_merges_from_gpt2_ranks_match_openai_files():
    ranks = read_ranks(gpt2_ranks_path())
    vocab, merges = ranks_to_vocab_merges(ranks, {"<|endoftext|>": 50256})
    assert len(vocab) == 50257 and len(merges) == 50000
    # the first merges and a few ids of OpenAI's encoder.json / vocab.bpe
    assert merges[:3] == [("Ġ", "t"), ("Ġ", "a"), ("h", "e")]
    assert vocab["Ġthe"] == 262 and vocab["!"] == 0 and vocab["<|endoftext|>"] == 50256
    assert vocab_merges_to_ranks(vocab, {"<|endoftext|>"}) == ranks
