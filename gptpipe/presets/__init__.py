"""Presets: params for the seed systems this pipeline replaces, one YAML file each.

A preset file (`gptpipe/presets/<name>.yaml`, package data) holds a `description`, the seed it
`reproduces`, `usage` lines (commands to run after applying it) and `params`: params.yaml
sections with only the keys the preset sets. Applying a preset to a params file sets those
keys and keeps everything else, comments included (`apply_to_text`).
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from gptpipe.config import SECTIONS, build_section, check_key, parse_params
from gptpipe.errors import BadInput


@dataclass
class Preset:
    """One preset file, parsed."""

    name: str
    description: str
    reproduces: str
    params: dict[str, dict[str, Any]]
    usage: list[str] = field(default_factory=list)

    def overrides(self) -> list[str]:
        """The preset as `SECTION.KEY=VALUE` overrides (values in YAML flow syntax)."""
        return [
            f"{section}.{key}={flow(value)}"
            for section, values in self.params.items()
            for key, value in values.items()
        ]

    def dvc_command(self, current: dict[str, Any] | None = None) -> str:
        """The `dvc exp run` line that runs the pipeline with this preset's params (values in
        the override grammar dvc parses -S with: strings other than plain words quoted). Keys
        missing from `current` (the params file's content) get hydra's `++` (add or set)."""
        current = current or {}

        def prefix(section: str, key: str) -> str:
            values = current.get(section)
            return "" if isinstance(values, dict) and key in values else "++"

        overrides = [
            f"{prefix(section, key)}{section}.{key}={override_value(value)}"
            for section, values in self.params.items()
            for key, value in values.items()
        ]
        return "dvc exp run " + " ".join(f"-S {shlex.quote(o)}" for o in overrides)

    def summary(self, width: int) -> str:
        """The description in at most `width` characters, for `gptpipe preset --list`: its
        first clause (up to the first `;` or full stop), without the asides in parentheses,
        cut at a word, with "...", where that is still too long."""
        text = self.description
        while (shorter := _ASIDE.sub("", text)) != text:  # innermost first: nested asides
            text = shorter
        first = re.split(r";|\.(?:\s|$)", text, maxsplit=1)[0].strip()
        if len(first) <= width:
            return first
        return first[: width - 3].rsplit(" ", 1)[0].rstrip(" ,:;/") + "..."


_ASIDE = re.compile(r"\s*\([^()]*\)")  # an aside in parentheses, with the space before it


def preset_dir() -> Path:
    return Path(str(resources.files("gptpipe") / "presets"))


def preset_names() -> list[str]:
    """Every preset shipped with the package, sorted."""
    return sorted(p.stem for p in preset_dir().glob("*.yaml"))


def load_preset(name: str) -> Preset:
    """Read and check one preset (unknown names and malformed files are bad input)."""
    names = preset_names()
    if name not in names:
        raise BadInput(f"preset {name!r}: unknown; available: {', '.join(names)}")
    path = preset_dir() / f"{name}.yaml"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        params = raw["params"]
        if not isinstance(params, dict) or not all(isinstance(v, dict) for v in params.values()):
            raise TypeError("params must map sections to mappings")
        return Preset(
            name=name,
            description=" ".join(str(raw["description"]).split()),
            reproduces=str(raw.get("reproduces", "")),
            params={str(s): dict(v) for s, v in params.items()},
            usage=[str(line) for line in raw.get("usage", [])],
        )
    except (yaml.YAMLError, KeyError, TypeError) as exc:
        raise BadInput(f"{path}: not a preset file ({exc})") from None


def check_params(params: dict[str, Any]) -> None:
    """Every key must exist and every section must validate (ConfigError names the key)."""
    for section, values in params.items():
        if section not in SECTIONS:
            check_key(section, "")
        for key in values or {}:
            check_key(section, key)
    for section in SECTIONS:
        build_section(params, section)


def merged(base: dict[str, Any], preset: Preset) -> dict[str, Any]:
    """`base` params with the preset's keys set (sections merged key by key)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for section, values in preset.params.items():
        target = out.setdefault(section, {})
        if not isinstance(target, dict):
            target = out[section] = {}
        target.update(values)
    return out


def flow(value: Any) -> str:
    """A value in YAML flow syntax on one line, as params.yaml and `-S` take it."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 20, allow_unicode=True)
    return text.removesuffix("\n").removesuffix("\n...").strip()


_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_./-]*$")


def override_value(value: Any) -> str:
    """A value as `dvc exp run -S` reads it (hydra's grammar): JSON for everything but plain
    words, lists and mappings."""
    if isinstance(value, list):
        return "[" + ", ".join(override_value(v) for v in value) + "]"
    if isinstance(value, dict):  # hydra's dictionary syntax: bare keys
        return "{" + ", ".join(f"{k}: {override_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, str) and _PLAIN.match(value) and yaml.safe_load(value) == value:
        return value
    return json.dumps(value, ensure_ascii=False)


_TOP = re.compile(r"^[^\s#]")


def apply_to_text(text: str, preset: Preset, origin: str = "params.yaml") -> str:
    """params.yaml text with the preset's keys set, keeping the other keys, the order and the
    comments. A key already there gets its value replaced in place, its comment kept; a new
    key goes at the end of its section; a new section at the end of the file. A file this
    line-based edit cannot handle (flow-style sections, multi-line values) is rewritten whole.

    Both texts are read as every command reads params (`parse_params`: a key given twice,
    which DVC refuses, is bad input naming `origin`), and the text returned reads back as the
    merged params: the edited text where it does, else the rewritten one, else bad input."""
    expected = merged(parse_params(text, origin), preset)
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    for section, values in preset.params.items():
        for key, value in values.items():
            lines = _set_line(lines, section, key, flow(value))
    edited = "".join(lines)
    for result in (edited, yaml.safe_dump(expected, sort_keys=False, allow_unicode=True)):
        try:
            if parse_params(result, origin) == expected:
                return result
        except BadInput:
            pass
    raise BadInput(f"{origin}: the preset's params would not read back as set; left unchanged")


def _set_line(lines: list[str], section: str, key: str, value: str) -> list[str]:
    head = re.compile(rf"^{re.escape(section)}:\s*(#.*)?$")
    start = next((i for i, line in enumerate(lines) if head.match(line.rstrip("\n"))), None)
    if start is None:
        return [*lines, f"{section}:\n", f"  {key}: {value}\n"]
    end = next((i for i in range(start + 1, len(lines)) if _TOP.match(lines[i])), len(lines))
    entry = re.compile(rf"^(\s+){re.escape(key)}:(\s*)(.*?)(\s+#.*)?$")
    for i in range(start + 1, end):
        m = entry.match(lines[i].rstrip("\n"))
        if m and len(m.group(1)) == 2:
            new = f"  {key}: {value}"
            if m.group(4):
                comment = m.group(4).lstrip()
                column = len(lines[i].rstrip("\n")) - len(comment)  # where "#" was
                new = new.ljust(column) + comment if len(new) < column - 1 else f"{new}  {comment}"
            lines[i] = new + "\n"
            return lines
    last = start
    for i in range(start + 1, end):
        if lines[i].strip():
            last = i
    return [*lines[: last + 1], f"  {key}: {value}\n", *lines[last + 1 :]]
