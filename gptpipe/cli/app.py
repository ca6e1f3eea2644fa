"""The `gptpipe` command line: one command per DVC stage, plus generate, info and export.

Each command is defined next to its stage (stages/*.py, installed as gptpipe.stages) as a
thin function that parses options and calls the stage's plain `run` function.
"""

from __future__ import annotations

import typer

from gptpipe.cli import export, generate, info, preset
from gptpipe.cli.options import guarded
from gptpipe.config import describe
from gptpipe.stages import (
    download,
    evaluate,
    finetune_classify,
    finetune_instruct,
    pretrain,
    report,
    sample,
    shard,
    tokenizer,
    weights,
)

app = typer.Typer(
    name="gptpipe",
    help="A reproducible GPT pipeline: corpus, tokenizer, shards, pretrain, fine-tune, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
finetune_app = typer.Typer(
    help="Fine-tune the base model (instruction following or classification).", no_args_is_help=True
)
app.add_typer(finetune_app, name="finetune")


def _register(target: typer.Typer, name: str, fn, sections: tuple[str, ...]) -> None:
    epilog = "\n\n".join(describe(s) for s in sections) if sections else None
    target.command(name, epilog=epilog)(guarded(fn))


_register(app, "download", download.command, ("data",))
_register(app, "tokenizer", tokenizer.command, ("tokenizer",))
_register(app, "shard", shard.command, ("shard",))
_register(app, "pretrain", pretrain.command, ("model", "pretrain"))
_register(app, "weights", weights.command, ("base",))
_register(finetune_app, "instruct", finetune_instruct.command, ("instruct",))
_register(finetune_app, "classify", finetune_classify.command, ("classify",))
_register(app, "evaluate", evaluate.command, ("evaluate",))
_register(app, "sample", sample.command, ("sample",))
_register(app, "report", report.command, ("report",))
_register(app, "generate", generate.command, ())
_register(app, "info", info.command, ())
_register(app, "export", export.command, ())
_register(app, "preset", preset.command, ())


def main() -> None:
    app()
