"""OpenAI's GPT-2 weights by name: where they live and how they get to this machine.

A named size (`gpt2`, `gpt2-medium`, `gpt2-large`, `gpt2-xl`) resolves to a local folder
in either format `gptpipe.interop.gpt2_formats` reads, found in this order:

1. the download cache (`$GPTPIPE_CACHE/weights/NAME/FORMAT`, default
   `~/.cache/gptpipe/weights/...`), when a previous download completed;
2. the local mirror folder (`base.mirror`, else `$GPTPIPE_MIRROR`), by file name, in a
   subfolder named after the size: `MIRROR/gpt2/` (or OpenAI's own name, `MIRROR/124M/`)
   holding either `model.safetensors` + `config.json` or `hparams.json` + `model.ckpt.index`
   + `model.ckpt.data-00000-of-00001`;
3. a download from each source in turn: OpenAI's own storage (the canonical location), its
   mirror used by the "LLMs from scratch" book, Hugging Face, then a Hugging Face mirror.

No checksum of these files is published by their hosts (OpenAI's storage serves no
digests; Hugging Face's are not pinned here because they could not be verified on this
machine), so the sha256 of every file used is recorded in the base model's provenance
(`meta.files` in config.json) instead; `NamedSize.sha256` pins a file when one is known.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gptpipe.config import GPT2_NAMES
from gptpipe.errors import BadInput
from gptpipe.fsutil import atomic_dir, read_json, write_json
from gptpipe.interop.gpt2_formats import HF_CONFIG, HF_WEIGHTS, TF_DATA, TF_HPARAMS, TF_INDEX
from gptpipe.interop.gpt2_vocab import GPT2_VOCAB
from gptpipe.runtime import user_cache_dir
from gptpipe.sources.fetch import FetchOptions, download, sha256_and_size

OPENAI_FILES = (TF_HPARAMS, TF_INDEX, TF_DATA)
HF_FILES = (HF_CONFIG, HF_WEIGHTS)
FORMAT_FILES = {"openai-tf": OPENAI_FILES, "hf": HF_FILES}
COMPLETE = "download.json"  # written last into a cache folder: the download is whole


@dataclass(frozen=True)
class Source:
    """One place that serves a size's files: `base_url/FILE` for each file of its format."""

    label: str
    format: str  # "openai-tf" or "hf"
    base_url: str

    def url(self, file_name: str) -> str:
        return f"{self.base_url.rstrip('/')}/{file_name}"


@dataclass(frozen=True)
class NamedSize:
    """A released GPT-2 size: its names, architecture and sources."""

    name: str  # gpt2, gpt2-medium, ...
    openai_name: str  # 124M, 355M, ... (OpenAI's folder name)
    n_layer: int
    n_head: int
    n_embd: int
    vocab_size: int = GPT2_VOCAB
    block_size: int = 1024
    sources: tuple[Source, ...] = ()
    sha256: dict[str, str] = field(default_factory=dict)  # file name -> pinned sha256

    @property
    def parameters(self) -> int:
        C = self.n_embd
        return (
            (self.vocab_size + self.block_size) * C + self.n_layer * (12 * C * C + 13 * C) + 2 * C
        )


def _sources(name: str, openai_name: str) -> tuple[Source, ...]:
    return (
        Source(
            "OpenAI",
            "openai-tf",
            f"https://openaipublic.blob.core.windows.net/gpt-2/models/{openai_name}",
        ),
        Source(
            "OpenAI (LLMs-from-scratch mirror)",
            "openai-tf",
            f"https://f001.backblazeb2.com/file/LLMs-from-scratch/gpt2/{openai_name}",
        ),
        Source(
            "Hugging Face",
            "hf",
            f"https://huggingface.co/openai-community/{name}/resolve/main",
        ),
        Source(
            "hf-mirror.com", "hf", f"https://hf-mirror.com/openai-community/{name}/resolve/main"
        ),
    )


def _size(name: str, openai_name: str, n_layer: int, n_head: int, n_embd: int) -> NamedSize:
    return NamedSize(
        name, openai_name, n_layer, n_head, n_embd, sources=_sources(name, openai_name)
    )


SIZES: dict[str, NamedSize] = {
    s.name: s
    for s in (
        _size("gpt2", "124M", 12, 12, 768),
        _size("gpt2-medium", "355M", 24, 16, 1024),
        _size("gpt2-large", "774M", 36, 20, 1280),
        _size("gpt2-xl", "1558M", 48, 25, 1600),
    )
}
NAMES = tuple(SIZES)
assert NAMES == GPT2_NAMES, (NAMES, GPT2_NAMES)


def cache_root() -> Path:
    """Where downloaded weights are kept: the `weights` folder of the per-user cache."""
    return user_cache_dir() / "weights"


def _format_of(folder: Path) -> str | None:
    for format_, files in FORMAT_FILES.items():
        if all((folder / f).is_file() for f in files):
            return format_
    return None


def mirror_folders(size: NamedSize, mirror: Path) -> list[Path]:
    """The subfolders of a mirror folder that may hold a size's files."""
    return [mirror / size.name, mirror / size.openai_name, mirror / "gpt2" / size.openai_name]


@dataclass(frozen=True)
class Resolved:
    """A local folder holding a size's checkpoint, and where its files came from."""

    folder: Path
    format: str
    origin: str  # "cache", "mirror" or the source label
    files: dict[str, dict[str, object]]  # file name -> sha256, bytes, location


def _describe(folder: Path, format_: str, size: NamedSize, origin: str) -> Resolved:
    files = {}
    for name in FORMAT_FILES[format_]:
        sha, n = sha256_and_size(folder / name)
        pinned = size.sha256.get(name)
        if pinned and pinned != sha:
            raise BadInput(f"{folder / name}: sha256 mismatch (expected {pinned}, got {sha})")
        files[name] = {"sha256": sha, "bytes": n, "location": str((folder / name).resolve())}
    return Resolved(folder=folder, format=format_, origin=origin, files=files)


DEFAULT_FETCH = FetchOptions(timeout=60.0, retries=3)  # base.timeout, base.retries


def resolve(
    size: NamedSize,
    *,
    mirror: Path | None,
    cache: Path | None = None,
    options: FetchOptions = DEFAULT_FETCH,
    sources: Sequence[Source] | None = None,
) -> Resolved:
    """A local folder with `size`'s checkpoint: cache, then mirror folder, then downloads."""
    cache = cache if cache is not None else cache_root()
    for format_ in FORMAT_FILES:
        folder = cache / size.name / format_
        if (folder / COMPLETE).is_file():
            record = read_json(folder / COMPLETE)
            return Resolved(folder, format_, "cache", record.get("files", {}))
    if mirror is not None:
        for folder in mirror_folders(size, mirror):
            found = _format_of(folder)
            if found is not None:
                return _describe(folder, found, size, "mirror")
    errors = []
    for source in sources if sources is not None else size.sources:
        target = cache / size.name / source.format
        try:
            files = {}
            with atomic_dir(target) as tmp:
                for name in FORMAT_FILES[source.format]:
                    got = download(source.url(name), tmp / name, options)
                    pinned = size.sha256.get(name)
                    if pinned and pinned != got.sha256:
                        raise BadInput(
                            f"{got.location}: sha256 mismatch (expected {pinned}, got {got.sha256})"
                        )
                    files[name] = {
                        "sha256": got.sha256,
                        "bytes": got.bytes,
                        "location": got.location,
                    }
                write_json(tmp / COMPLETE, {"source": source.label, "files": files})
        except BadInput as exc:
            errors.append(f"{source.label}: {exc}")
            continue
        return Resolved(target, source.format, source.label, files)
    where = (
        ", ".join(str(f) for f in mirror_folders(size, mirror))
        if mirror is not None
        else "MIRROR/" + size.name + " (set base.mirror or GPTPIPE_MIRROR)"
    )
    raise BadInput(
        f"params key 'base.source': cannot get {size.name} ({size.openai_name}) weights: "
        + "; ".join(errors)
        + f". Offline, put {' + '.join(HF_FILES)} (Hugging Face) or {' + '.join(OPENAI_FILES)} "
        f"(OpenAI) in {where}"
    )
