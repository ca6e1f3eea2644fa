"""Text: whole characters when streaming, stop strings across tokens, the notebook call."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import tiktoken
import torch

from gptpipe.errors import BadInput
from gptpipe.generate import generate_text
from gptpipe.generate.beam import beam_search
from gptpipe.generate.decode import Decoding, generate_ids
from gptpipe.generate.text import TextStream, context_ids, continuations, cut_at_stop, stream
from gptpipe.model.folder import load_model, save_model
from gptpipe.model.gpt import GPT, GPTConfig
from gptpipe.prompts import format_prompt
from gptpipe.tokenizer.folder import eot_id, load_tokenizer, save_gpt2


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("text")
    save_gpt2(root / "tok")
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50257, block_size=32, n_layer=1, n_head=2, n_embd=32))
    save_model(root / "instruct", model, root / "tok", meta={"stage": "instruct"})
    return root / "instruct"


@pytest.fixture(scope="module")
def enc(folder: Path) -> tiktoken.Encoding:
    return load_tokenizer(folder)


def test_multibyte_characters_are_released_whole(enc: tiktoken.Encoding) -> None:
    text = "naïve café 日本語 🎉👍 end"
    ids = enc.encode_ordinary(text)
    assert any(
        len(enc.decode_single_token_bytes(i).decode("utf-8", "replace")) == 1
        and "\ufffd" in enc.decode_single_token_bytes(i).decode("utf-8", "replace")
        for i in ids
    )  # some token holds part of a character
    s = TextStream(enc)
    pieces = [s.push(i) for i in ids]
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) + s.finish() == text


def test_a_stop_string_split_across_tokens_stops_and_is_never_printed(
    enc: tiktoken.Encoding,
) -> None:
    ids = enc.encode_ordinary("alpha beta gamma delta")
    assert len(ids) == 4
    s = TextStream(enc, stops=("a be",))  # spans the first two tokens
    pieces = [s.push(i) for i in ids]
    assert "".join(pieces) == "alph" and s.stopped
    assert s.finish() == ""
    s = TextStream(enc, stops=("mma", "zzz"))
    printed = ""
    for i in ids:
        printed += s.push(i)
        assert "mm" not in printed  # a possible start of a stop string is held back
    assert printed == "alpha beta ga" and s.stopped


def test_held_back_text_is_released_when_no_stop_follows(enc: tiktoken.Encoding) -> None:
    s = TextStream(enc, stops=("beta!",))
    out = "".join(s.push(i) for i in enc.encode_ordinary("alpha beta gamma")) + s.finish()
    assert out == "alpha beta gamma"


def test_generate_text_on_a_folder_wraps_instruct_models(folder: Path) -> None:
    model, _ = load_model(folder)
    enc = load_tokenizer(folder)
    ids = enc.encode_ordinary(format_prompt("Name a colour."))
    expected = enc.decode(generate_ids(model, [ids], Decoding(6), stop_ids=[eot_id(enc)])[0])
    assert generate_text(folder, "Name a colour.", max_new_tokens=6) == expected
    raw = generate_text(folder, "Name a colour.", max_new_tokens=6, instruct=False)
    assert raw == generate_text(model, "Name a colour.", encoding=enc, max_new_tokens=6)
    samples = generate_text(
        folder, ["a", "bcd"], max_new_tokens=5, temperature=1.0, seed=3, num_samples=2
    )
    assert len(samples) == 2 and all(len(s) == 2 for s in samples)
    assert samples == generate_text(
        folder, ["a", "bcd"], max_new_tokens=5, temperature=1.0, seed=3, num_samples=2
    )
    with pytest.raises(BadInput, match="top_p"):
        generate_text(folder, "x", top_p=0.0)


def test_stream_concatenates_to_the_full_continuation(folder: Path) -> None:
    model, _ = load_model(folder)
    enc = load_tokenizer(folder)
    ids = context_ids(model, enc, "")  # empty: the start of a document
    assert ids == [eot_id(enc)]
    d = Decoding(10, temperature=1.0)
    pieces = list(stream(model, enc, ids, d, torch.Generator().manual_seed(1)))
    new = generate_ids(model, [ids], d, torch.Generator().manual_seed(1), [eot_id(enc)])[0]
    assert "".join(pieces) == enc.decode(new)


def test_a_prompt_longer_than_the_context_is_cut_with_a_warning(
    folder: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model, _ = load_model(folder)
    enc = load_tokenizer(folder)
    ids = context_ids(model, enc, "word " * 100)
    assert len(ids) == 32 and ids == enc.encode_ordinary("word " * 100)[-32:]
    assert "context of 32" in capsys.readouterr().err


def test_beam_search_ends_hypotheses_at_stop_strings_inside_the_search(folder: Path) -> None:
    model, _ = load_model(folder)
    enc = load_tokenizer(folder)
    ids = enc.encode_ordinary("The")
    free = Decoding(12, num_beams=3)
    text = enc.decode(beam_search(model, ids, free, eot_id(enc)))
    stop_at = next(i for i in range(3, len(text)) if not text[i].isspace())
    stop = text[stop_at : stop_at + 2]  # two characters from the middle of the best text
    d = Decoding(12, num_beams=3, stop=(stop,))

    def whole_text_holds_stop(new: Sequence[int]) -> bool:  # the plain rule, no tail window
        return stop in enc.decode(list(new))

    expected = cut_at_stop(
        enc.decode(beam_search(model, ids, d, eot_id(enc), whole_text_holds_stop)), [stop]
    )
    streamed = "".join(stream(model, enc, ids, d))
    assert streamed == expected == continuations(model, enc, [ids], d)[0][0].text
    assert stop not in streamed


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"num_samples": 10**9, "temperature": 1.0}, "num_samples"),
        ({"num_beams": 10**9}, "num_beams"),
    ],
)
def test_generate_text_refuses_a_count_that_cannot_fit_before_decoding(
    folder: Path, enc: tiktoken.Encoding, settings: dict[str, int | float], named: str
) -> None:
    model, _ = load_model(folder)
    for source in (folder, model):  # before loading a folder; with a loaded model
        started = time.perf_counter()
        with pytest.raises(BadInput) as refused:
            generate_text(source, ["Hi", "Hello"], encoding=enc, **settings)
        assert time.perf_counter() - started < 5  # nothing of 10**9 rows was allocated
        assert str(refused.value).startswith(f"{named}: ") and "memory" in str(refused.value)
