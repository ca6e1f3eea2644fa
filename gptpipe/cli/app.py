"""The `gptpipe` command line: one command per DVC stage, plus generate, info and export.

Each command is defined next to its stage (stages/*.py, installed as gptpipe.stages) as a
thin function that parses options and calls the stage's plain `run` function.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import typer
from typer._click import exceptions as click  # the click that Typer vendors
from typer.core import TyperGroup

from gptpipe.cli import attention, chat, classify, export, generate, info, preset, serve
from gptpipe.config import describe
from gptpipe.options import guarded
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


class OneLineErrors(TyperGroup):
    """The top-level command group: a usage error (an unknown option, a missing argument, a
    value of the wrong type) is one line on stderr and exit status 2, not a multi-line box."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.NoArgsIsHelpError as exc:
            assert exc.ctx is not None
            click.echo(exc.ctx.get_help(), err=True)
            result = 2
        except click.ClickException as exc:
            print(f"gptpipe: error: {usage_line(exc)}", file=sys.stderr)
            result = exc.exit_code
        except typer.Abort:  # end of input at a prompt
            print("gptpipe: aborted", file=sys.stderr)
            result = 1
        code = result if isinstance(result, int) else 0
        if standalone_mode:
            sys.exit(code)
        return code


def usage_line(exc: click.ClickException) -> str:
    """A click error on one line, with where to read the usage."""
    message = " ".join(exc.format_message().split())
    ctx = getattr(exc, "ctx", None)
    if isinstance(exc, click.UsageError) and ctx is not None:
        message += f" (see '{ctx.command_path} --help')"
    return message


app = typer.Typer(
    cls=OneLineErrors,
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
_register(app, "classify", classify.command, ())
_register(app, "chat", chat.command, ())
_register(app, "attention", attention.command, ())
_register(app, "info", info.command, ())
_register(app, "export", export.command, ())
_register(app, "preset", preset.command, ())
_register(app, "serve", serve.command, ())


def main(argv: Sequence[str] | None = None) -> None:
    """The `gptpipe` console script (exits with the command's status)."""
    app(args=argv)
