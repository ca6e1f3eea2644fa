"""`gptpipe preset`: print, list or apply the params of a seed system's preset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from gptpipe.config import parse_params, read_params_text
from gptpipe.errors import BadInput
from gptpipe.fsutil import write_text
from gptpipe.presets import apply_to_text, check_params, load_preset, merged, preset_names
from gptpipe.progress import console

_LIST_WIDTH = 100  # `--list`: one line per preset, name and summary, in this many columns


def read_current(params: Path) -> tuple[str, dict[str, Any]]:
    """The params file's text and content (a missing file: empty), read as every command
    reads params (`gptpipe.config.parse_params`: a key given twice is refused)."""
    text = read_params_text(params) if params.exists() else ""
    current = parse_params(text, str(params))
    if not isinstance(current, dict):
        raise BadInput(f"{params}: expected a mapping of sections at the top level")
    return text, current


def write_preset(name: str, params: Path) -> Path:
    """Set the preset's keys in `params` (created if missing), keeping every other key and
    comment; the result must validate and read back as the params meant (`apply_to_text`
    checks), else nothing is written."""
    preset = load_preset(name)
    text, current = read_current(params)
    check_params(merged(current, preset))
    write_text(params, apply_to_text(text, preset, str(params)))
    return params


def command(
    name: Annotated[
        str | None, typer.Argument(help="Preset name (seed000 ... seed004; see --list).")
    ] = None,
    list_: Annotated[bool, typer.Option("--list", help="List the presets and exit.")] = False,
    write: Annotated[
        bool, typer.Option("--write", help="Set the preset's keys in --params (keeps the rest).")
    ] = False,
    dvc: Annotated[
        bool, typer.Option("--dvc", help="Print the equivalent `dvc exp run -S ...` line.")
    ] = False,
    params: Annotated[Path, typer.Option(help="Params file that --write updates.")] = Path(
        "params.yaml"
    ),
) -> None:
    """Params of the seed systems this pipeline replaces, one preset each.

    `gptpipe preset seed001` prints the preset's params (only the keys it sets) as YAML on
    stdout; `--write` sets them in params.yaml, keeping every other key and comment, then run
    `dvc repro`; `--dvc` prints the one-line `dvc exp run -S ...` equivalent (an experiment,
    params.yaml untouched); `--list` names every preset with a one-line summary.
    """
    if list_:
        for preset in map(load_preset, preset_names()):
            head = f"{preset.name}  "
            typer.echo(head + preset.summary(_LIST_WIDTH - len(head)))
        return
    if name is None:
        raise BadInput(f"give a preset name ({', '.join(preset_names())}) or --list")
    preset = load_preset(name)
    if dvc:
        typer.echo(preset.dvc_command(read_current(params)[1]))
    elif write:
        write_preset(name, params)
        console.print(f"preset {name}: {len(preset.overrides())} params set in {params}")
        for line in preset.usage:
            console.print(f"  next: {line}", soft_wrap=True, markup=False)
    else:
        typer.echo(f"# preset {name}: {preset.description}")
        typer.echo(yaml.safe_dump(preset.params, sort_keys=False, allow_unicode=True), nl=False)
        if preset.usage:
            typer.echo("# then:\n" + "".join(f"#   {line}\n" for line in preset.usage), nl=False)
