"""DVC stage `weights`: provide the base model that both fine-tunings start from.

`base.source` picks it: `pretrain` copies the model this pipeline pretrained; `gpt2` ...
`gpt2-xl` converts OpenAI's released weights (see gptpipe.hub for where they come from);
a folder path converts a GPT-2 checkpoint in the Hugging Face or OpenAI layout. Converted
weights are streamed tensor by tensor into `models/base` (no double copy, so GPT-2 XL fits
in about its own size of memory), and the folder gets the tokenizer that matches them.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated, Any

import typer

from gptpipe import layout
from gptpipe.checkpoint import copy_model, read_info, save_tensors
from gptpipe.cliutil import ParamsOption, SetOption, section
from gptpipe.config import BaseConfig
from gptpipe.convert import GPT2_VOCAB, Checkpoint, open_checkpoint, vocab_merges_to_ranks
from gptpipe.errors import BadInput
from gptpipe.hub import SIZES, NamedSize, resolve
from gptpipe.tokenizer import (
    EOT,
    META_FILE,
    RANKS_FILE,
    gpt2_ranks_path,
    load_tokenizer,
    read_ranks,
    save_gpt2,
    tokenizer_hash,
)


def run(
    cfg: BaseConfig,
    pretrained: Path,
    out: Path,
    tokenizer: Path | None = None,
) -> dict[str, Any]:
    """Write the base model folder from `cfg.source`; returns a short description of it.

    `tokenizer` is the pipeline's tokenizer folder: converted weights must read the ids it
    writes (None skips that check).
    """
    if cfg.source == "pretrain":
        copy_model(pretrained, out)
        info = read_info(out)
        return {"source": cfg.source, "model": info.config.to_dict(), "meta": info.meta}
    size = SIZES.get(cfg.source)
    if size is not None:
        found = resolve(size, mirror=cfg.mirror_dir(), timeout=cfg.timeout, retries=cfg.retries)
        folder, provenance = found.folder, {"origin": found.origin, "files": found.files}
    else:
        folder = Path(cfg.source).expanduser()
        provenance = {"origin": str(folder.resolve())}
    checkpoint = open_checkpoint(folder)
    if size is not None:
        _check_size(checkpoint, size)
    meta = {"stage": "weights", "source": cfg.source, "layout": checkpoint.layout, **provenance}
    with tempfile.TemporaryDirectory(prefix="gptpipe-weights-") as tmp:
        tok_dir = _matching_tokenizer(checkpoint, cfg.source, tokenizer, Path(tmp))
        save_tensors(out, checkpoint.config, checkpoint.tensors, tok_dir, meta=meta)
    return {"source": cfg.source, "model": checkpoint.config.to_dict(), "meta": meta}


def _check_size(checkpoint: Checkpoint, size: NamedSize) -> None:
    c = checkpoint.config
    got = (c.n_layer, c.n_head, c.n_embd, c.vocab_size, c.block_size)
    want = (size.n_layer, size.n_head, size.n_embd, size.vocab_size, size.block_size)
    if got != want:
        raise BadInput(
            f"{checkpoint.folder}: holds a model of (layers, heads, width, vocab, context) "
            f"{got}, not {size.name}'s {want}"
        )


def _folder_vocab(folder: Path) -> dict[str, int] | None:
    """The vocabulary a checkpoint folder ships (vocab.json or OpenAI's encoder.json), if any."""
    for name in ("vocab.json", "encoder.json"):
        path = folder / name
        if path.is_file():
            try:
                vocab = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise BadInput(f"{path}: not valid JSON ({exc})") from None
            if not isinstance(vocab, dict):
                raise BadInput(f"{path}: expected a JSON object of token -> id")
            return vocab
    return None


def _tokenizer_kind(tokenizer: Path) -> tuple[str, int]:
    path = tokenizer / META_FILE
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        return str(meta.get("kind", "?")), int(meta["n_vocab"])
    except FileNotFoundError:
        raise BadInput(f"{path}: not found (is {tokenizer} a tokenizer folder?)") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise BadInput(f"{path}: not a tokenizer description ({exc})") from None


def _matching_tokenizer(
    checkpoint: Checkpoint, source: str, tokenizer: Path | None, tmp: Path
) -> Path:
    """The tokenizer folder to ship with the converted weights, checked against `tokenizer`.

    GPT-2's vocabulary (50257 ids; or a folder whose vocab.json is GPT-2's) gets GPT-2's
    tokenizer, and the pipeline's tokenizer must be GPT-2's too (tokenizer.kind: gpt2). Any
    other vocabulary must come with a vocab.json equal to the pipeline's tokenizer.
    """
    vocab = _folder_vocab(checkpoint.folder)
    # vocab.json lists special tokens among the others: these are not byte-level tokens.
    special = {EOT} | (load_tokenizer(tokenizer).special_tokens_set if tokenizer else set())
    ranks = vocab_merges_to_ranks(vocab, special) if vocab is not None else None
    vocab_size = checkpoint.config.vocab_size
    is_gpt2 = vocab_size == GPT2_VOCAB and (ranks is None or ranks == read_ranks(gpt2_ranks_path()))
    if is_gpt2:
        save_gpt2(tmp / "gpt2")
        if tokenizer is not None and tokenizer_hash(tokenizer) != tokenizer_hash(tmp / "gpt2"):
            kind, n_vocab = _tokenizer_kind(tokenizer)
            raise BadInput(
                f"params key 'base.source': {source} has GPT-2's vocabulary ({GPT2_VOCAB} ids) "
                f"but the pipeline's tokenizer {tokenizer} is not GPT-2's (kind {kind}, "
                f"{n_vocab} ids): the ids would not match; set tokenizer.kind: gpt2"
            )
        return tmp / "gpt2"
    if tokenizer is None:
        raise BadInput(
            f"{checkpoint.folder}: a vocabulary of {vocab_size} ids is not GPT-2's; "
            "give the matching tokenizer folder (--tokenizer)"
        )
    _, n_vocab = _tokenizer_kind(tokenizer)
    if ranks is None or n_vocab != vocab_size or ranks != read_ranks(tokenizer / RANKS_FILE):
        raise BadInput(
            f"params key 'base.source': {source} has a vocabulary of {vocab_size} ids that is "
            f"not the one of the pipeline's tokenizer {tokenizer} ({n_vocab} ids)"
            + ("" if ranks is not None else "; the folder has no vocab.json to compare")
        )
    return tokenizer


def command(
    params: ParamsOption = Path("params.yaml"),
    set_: SetOption = None,
    pretrained: Annotated[
        Path, typer.Option(help="The pretrained model folder (gptpipe pretrain).")
    ] = layout.PRETRAIN,
    tokenizer: Annotated[
        Path,
        typer.Option(
            help="The pipeline's tokenizer folder: converted GPT-2 weights need GPT-2's "
            "(tokenizer.kind: gpt2)."
        ),
    ] = layout.TOKENIZER,
    out: Annotated[Path, typer.Option(help="Base model folder to write.")] = layout.BASE,
) -> None:
    """Provide the base model for fine-tuning: the pretrained one (base.source: pretrain), or
    OpenAI's GPT-2 weights converted (gpt2 ... gpt2-xl, or a checkpoint folder)."""
    cfg: BaseConfig = section("base", params, set_)
    if cfg.source == "pretrain":
        run(cfg, pretrained, out)
        return
    result = run(cfg, pretrained, out, tokenizer=tokenizer)
    c = result["model"]
    print(
        f"{cfg.source} -> {out}: {c['n_layer']} layers, {c['n_head']} heads, width "
        f"{c['n_embd']}, context {c['block_size']}, vocabulary {c['vocab_size']}"
    )
