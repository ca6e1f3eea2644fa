"""`gptpipe generate`: continue a prompt with a model folder, streamed to stdout as produced."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, TextIO

import torch
import typer

from gptpipe import default_paths
from gptpipe.decoding import FIELDS, GENERATE, Decoding, SettingError, check
from gptpipe.errors import BadInput
from gptpipe.generate.decode import for_decoding, require_decoding_fits
from gptpipe.generate.text import context_ids, stream
from gptpipe.model.folder import is_instruct, load_language_model, read_info
from gptpipe.prompts import format_prompt


def _option(setting: str, more: str = "", *names: str) -> Any:
    """The option of a decoding setting: its help is the setting's own (gptpipe.decoding),
    then `more`."""
    return typer.Option(*names, help=f"{FIELDS[setting].help} {more}".strip())


# The options of the decoding settings, every decoding command's (generate, chat); each
# command takes its defaults from gptpipe.decoding's default sets.
MaxNewTokens = Annotated[int, _option("max_new_tokens")]
Temperature = Annotated[float, _option("temperature")]
TopK = Annotated[int, _option("top_k")]
TopP = Annotated[float, _option("top_p")]
RepetitionPenalty = Annotated[float, _option("repetition_penalty")]
Seed = Annotated[int, _option("seed")]
NumSamples = Annotated[int, _option("num_samples")]
NumBeams = Annotated[int, _option("num_beams")]
LengthPenalty = Annotated[float, _option("length_penalty")]
Stop = Annotated[
    list[str] | None,
    _option(
        "stop",
        'Repeatable; not printed. Taken as typed, no escapes read: "\\n" is a backslash and '
        "an n; in bash give newlines as $'\\n\\n'.",
        "--stop",
    ),
]
Slide = Annotated[int, _option("slide", "The cache is then rebuilt.")]
Device = Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")]
DType = Annotated[
    str,
    typer.Option(
        "--dtype",
        help="Weights and cache while decoding: auto (bfloat16 where the device computes it "
        "natively, else float32), float32 or bfloat16.",
    ),
]


def option_name(setting: str) -> str:
    """The command-line option of a decoding setting: max_new_tokens -> --max-new-tokens."""
    return "--" + setting.replace("_", "-")


def checked(values: Mapping[str, Any]) -> Decoding:
    """The Decoding of a command's decoding options, after checking every one of them (the
    seed and the sample count too): BadInput naming the option of the first out of range."""
    check(values, option_name)
    return Decoding.of(values)


def write_stream(pieces: Iterator[str], out: TextIO) -> str:
    """Print each piece as it comes (flushed); returns the whole text."""
    text = ""
    for piece in pieces:
        out.write(piece)
        out.flush()
        text += piece
    return text


def repl(
    lines: Iterable[str],
    respond: Callable[[str], None],
    show_prompt: bool = False,
) -> int:
    """Answer each non-empty line read from `lines` until EOF; returns how many were answered."""
    answered = 0
    if show_prompt:
        print("> ", end="", file=sys.stderr, flush=True)
    for line in lines:
        prompt = line.rstrip("\n")
        if prompt.strip():
            respond(prompt)
            answered += 1
        if show_prompt:
            print("> ", end="", file=sys.stderr, flush=True)
    return answered


def command(
    model: Annotated[
        Path, typer.Option(help="Model folder (language model).")
    ] = default_paths.BASE,
    prompt: Annotated[
        str | None,
        typer.Option(help="Text to continue ('' starts a new document). Without it: stdin."),
    ] = None,
    max_new_tokens: MaxNewTokens = GENERATE["max_new_tokens"],
    temperature: Temperature = GENERATE["temperature"],
    top_k: TopK = GENERATE["top_k"],
    top_p: TopP = GENERATE["top_p"],
    repetition_penalty: RepetitionPenalty = GENERATE["repetition_penalty"],
    seed: Seed = GENERATE["seed"],
    num_samples: NumSamples = GENERATE["num_samples"],
    num_beams: NumBeams = GENERATE["num_beams"],
    length_penalty: LengthPenalty = GENERATE["length_penalty"],
    stop: Stop = None,
    slide: Slide = GENERATE["slide"],
    instruct: Annotated[
        bool | None,
        typer.Option(
            "--instruct/--raw",
            help="Wrap the prompt as an Alpaca instruction, or not. Default: wrap when the "
            "folder is instruction-tuned.",
            show_default=False,
        ),
    ] = None,
    input: Annotated[
        str, typer.Option("--input", help="With an instruction: the instruction's input text.")
    ] = "",
    interactive: Annotated[
        bool, typer.Option(help="Read one prompt per line from stdin until EOF.")
    ] = False,
    device: Device = "auto",
    dtype: DType = "auto",
) -> None:
    """Continue a prompt and stream only the new text to stdout. Each sample ends at
    <|endoftext|>, at a --stop string or after --max-new-tokens tokens, whichever comes first."""
    decoding = checked(
        {
            "max_new_tokens": max_new_tokens,
            "temperature": temperature,
            "top_k": top_k,
            "top_p": top_p,
            "repetition_penalty": repetition_penalty,
            "num_beams": num_beams,
            "length_penalty": length_penalty,
            "stop": tuple(stop or ()),
            "slide": slide,
            "num_samples": num_samples,
            "seed": seed,
        }
    )
    # The samples are decoded one after another (one row each), so --num-samples needs no
    # memory bound; beam search decodes its --num-beams beams together: a count that cannot
    # fit is refused before loading (for any prompt), then for each prompt before decoding.
    beams = decoding.num_beams > 1
    if beams and model.is_dir():
        require_decoding_fits(option_name, read_info(model).config, decoding, 1, 1, SettingError)
    lm, encoding = load_language_model(model, device)
    lm = for_decoding(lm, dtype)
    wrap = is_instruct(model, read_info(model)) if instruct is None else instruct
    if input and not wrap:
        raise BadInput("--input is part of an instruction: use it with --instruct")
    generator = torch.Generator(device="cpu").manual_seed(seed)

    def respond(text: str) -> None:
        ids = context_ids(lm, encoding, format_prompt(text, input) if wrap else text)
        if beams:
            require_decoding_fits(option_name, lm, decoding, 1, len(ids), SettingError)
        for number in range(num_samples):
            if number:
                print(f"--- sample {number + 1}", file=sys.stderr, flush=True)
            write_stream(stream(lm, encoding, ids, decoding, generator), sys.stdout)
            print(flush=True)

    if interactive or (prompt is None and sys.stdin.isatty()):
        if prompt is not None:
            respond(prompt)
        tty = sys.stdin.isatty()
        if tty:
            print("Type a prompt per line; Ctrl-D ends.", file=sys.stderr)
        repl(sys.stdin, respond, show_prompt=tty)
        return
    respond(prompt if prompt is not None else sys.stdin.read())
