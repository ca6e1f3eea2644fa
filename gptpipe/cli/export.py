"""`gptpipe export`: a model folder in the Hugging Face format, for the wider ecosystem.

`--format hf` writes what `transformers.GPT2LMHeadModel.from_pretrained(OUT_DIR)` loads
(model.safetensors + config.json, GPT-2's Conv1D layout) and a tokenizer that
`transformers.AutoTokenizer.from_pretrained(OUT_DIR)` loads and that encodes like ours:
`tokenizer.json` (Hugging Face tokenizers: the split pattern, byte-level BPE), plus GPT-2's
classic `vocab.json` + `merges.txt`, derived from the tiktoken ranks; every special token
(`<|endoftext|>` as bos/eos, `tokenizer.special_tokens` as additional ones) is an added
special token with our id. That holds for tokenizers with GPT-2's split pattern (kind gpt2,
or bpe with pattern gpt2); for the gpt4 pattern only the weights are exported (Hugging
Face's regex engine splits some texts differently from tiktoken's).

Classifier folders are refused: our classification head has a bias and reads the last real
token by length, while `GPT2ForSequenceClassification`'s head has no bias and finds the
last token through a padding id, so an export would not compute the same function.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Literal

import typer

from gptpipe.interop.hf_export import HF_FOLDER, export_hf
from gptpipe.outputs import Output, check_paths


def command(
    model_dir: Annotated[Path, typer.Argument(help="Model folder to export (a language model).")],
    out_dir: Annotated[
        Path,
        typer.Argument(
            help="Folder to write: new, empty or an earlier export (replaced whole); any "
            "other folder only with --force."
        ),
    ],
    format_: Annotated[
        Literal["hf"],
        typer.Option("--format", help="hf: Hugging Face transformers (GPT2LMHeadModel)."),
    ] = "hf",
    force: Annotated[
        bool,
        typer.Option("--force", help="Replace OUT_DIR even if it is not an earlier export."),
    ] = False,
) -> None:
    """Export a model folder to another format: `--format hf` writes a folder that
    transformers.GPT2LMHeadModel.from_pretrained and AutoTokenizer.from_pretrained load."""
    check_paths(
        [Output("OUT_DIR", out_dir, HF_FOLDER)],
        [("MODEL_DIR", model_dir)],
        force=force,
        force_option="--force",
    )
    result = export_hf(model_dir, out_dir)
    c = result["config"]
    print(
        f"{model_dir} -> {out_dir} (Hugging Face GPT2LMHeadModel: {c['n_layer']} layers, "
        f"width {c['n_embd']}, vocabulary {c['vocab_size']}, context {c['n_positions']})",
        file=sys.stderr,
    )
    if not result["tokenizer"]:
        print(
            "note: no tokenizer written: the model's tokenizer uses the gpt4 split pattern, "
            "which Hugging Face tokenizers do not reproduce exactly",
            file=sys.stderr,
        )
