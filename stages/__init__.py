"""The DVC stages: one module per stage in dvc.yaml, installed as `gptpipe.stages`.

Each module holds a plain `run(...)` function (the stage's work: read the typed config, call
the library, write the declared outputs) and a thin Typer `command` that parses options.
"""
