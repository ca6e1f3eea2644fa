"""`gptpipe classify`: the label of a text (and its probability) from a classifier folder."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, BinaryIO, TextIO

import tiktoken
import typer

from gptpipe import default_paths
from gptpipe.errors import BadInput
from gptpipe.finetune.classify import Prediction, classify_texts
from gptpipe.model.folder import load_model
from gptpipe.model.gpt import GPT
from gptpipe.runtime import resolve_device
from gptpipe.tokenizer.folder import eot_id, load_tokenizer


@dataclass
class Classifier:
    """A classifier model folder, loaded: the model, its tokenizer, labels and input length."""

    model: GPT
    enc: tiktoken.Encoding
    labels: list[str]
    max_length: int

    def __call__(self, texts: list[str]) -> list[Prediction]:
        eot = eot_id(self.enc)
        return classify_texts(self.model, self.enc, self.labels, texts, self.max_length, eot)


def load_classifier(model_dir: Path, device: str = "cpu") -> Classifier:
    """A classifier from its model folder; a language model is bad input naming the folder."""
    if not model_dir.is_dir():
        raise BadInput(f"{model_dir}: model folder not found")
    model, info = load_model(model_dir, resolve_device(device, "--device"))
    n = info.config.n_classes
    if n == 0:
        raise BadInput(f"{model_dir}: is a language model, not a classifier (no labels)")
    if len(info.labels) != n:
        raise BadInput(f"{model_dir}/config.json: {len(info.labels)} labels for {n} classes")
    block_size = info.config.block_size
    max_length = min(int(info.meta.get("max_length") or block_size), block_size)
    return Classifier(model, load_tokenizer(model_dir), info.labels, max_length)


def write_predictions(
    texts: list[str], predictions: list[Prediction], out: TextIO, as_json: bool
) -> None:
    """One line per text: `label<TAB>probability`, or a JSON object with --json.

    The JSON is ASCII (other characters escaped): valid whatever the output's encoding, and
    one object per line even for a line splitter that also breaks at U+2028 or U+0085."""
    for text, p in zip(texts, predictions, strict=True):
        if as_json:
            record = {"text": text, "label": p.label, "probability": p.probability}
            record["probabilities"] = p.probabilities
            print(json.dumps(record), file=out)
        else:
            print(f"{p.label}\t{p.probability:.4f}", file=out)


_SURROGATE = re.compile("[\ud800-\udfff]")


def valid_text(text: str) -> str:
    """`text` with each lone surrogate (how Python smuggles bytes that are not UTF-8 into a
    command-line argument) as U+FFFD, so that it classifies and prints like stdin's text."""
    return _SURROGATE.sub("\ufffd", text)


def stdin_texts(stream: BinaryIO) -> list[str]:
    """One text per line of raw bytes (line breaks removed; an empty line is an empty text;
    a leading byte-order mark dropped). Bytes that are not UTF-8 become U+FFFD: any input,
    NULs and control characters included, gives texts that print as valid JSON."""
    texts = [line.rstrip(b"\r\n").decode("utf-8", errors="replace") for line in stream]
    if texts:
        texts[0] = texts[0].removeprefix("\ufeff")
    return texts


def command(
    texts: Annotated[
        list[str] | None,
        typer.Argument(help="Texts to classify (default: one per line from stdin)."),
    ] = None,
    model: Annotated[
        Path, typer.Option(help="Classifier model folder (gptpipe finetune classify).")
    ] = default_paths.CLASSIFY_MODEL,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print a JSON object per text: text, label, probability, probabilities."
        ),
    ] = False,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "cpu",
) -> None:
    """Print the label of each text and its probability (`label<TAB>probability` per line)."""
    classifier = load_classifier(model, device)
    items = [valid_text(t) for t in texts] if texts else stdin_texts(sys.stdin.buffer)
    if not items:
        raise BadInput("no text to classify: give TEXT arguments or lines on stdin")
    write_predictions(items, classifier(items), sys.stdout, as_json)
