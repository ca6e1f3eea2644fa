"""Typed configuration: one dataclass per params.yaml section, validated once at start-up.

Each field's `help` metadata is the documentation of its params key; `describe()` turns a
section into the text shown by `gptpipe <stage> --help`. Every error names the dotted key.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from gptpipe.errors import BadInput, ConfigError
from gptpipe.tokenizer.special import special_token_problem


def _f(default: Any, help: str) -> Any:
    """A dataclass field with a help text (mutable defaults are copied per instance)."""
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(key, message)


def _require_device(device: str, key: str) -> None:
    _require(
        device in ("auto", "cpu") or device.startswith("cuda"),
        key,
        f"must be auto, cpu, cuda or cuda:N, not {device!r}",
    )


# --------------------------------------------------------------------------- sections


@dataclass
class DataConfig:
    """`data`: where the corpus, instruction and classification data come from."""

    corpus: str | list[str] = _f(  # noqa: RUF009 (a str default is immutable)
        "stdlib",
        "Corpus: a named set (stdlib, tinyshakespeare), a URL or a path (archive.zip#member "
        "reads one member), or a list of mirrors of one file tried in order. Plain text "
        '(<|endoftext|> separates documents), .jsonl or .json (strings or {"text": ...}).',
    )
    instruct: str | list[str] = _f(  # noqa: RUF009
        "stdlib",
        "Instructions: a named set (stdlib, alpaca-instructions), a URL or a path, or a list "
        "of mirrors. A JSON list or JSON Lines of Alpaca records.",
    )
    classify: str | list[str] = _f(  # noqa: RUF009
        "stdlib",
        "Classification data: a named set (stdlib, sms-spam), a URL or a path, or a list of "
        "mirrors. TSV (label<TAB>text), CSV (label,text) or JSON (Lines) of label/text objects.",
    )
    mirror: str | None = _f(
        None, "Local folder looked in first, by file name (else $GPTPIPE_MIRROR)."
    )
    timeout: float = _f(60.0, "Seconds to wait on a stalled connection.")
    retries: int = _f(3, "Attempts per URL on connection errors and 5xx responses.")
    max_bytes: int = _f(
        20_000_000_000,
        "Largest file accepted, downloaded or unpacked from an archive, in bytes: a guard "
        "against runaway downloads and decompression bombs.",
    )

    def __post_init__(self) -> None:
        for key in ("corpus", "instruct", "classify"):
            value = getattr(self, key)
            if isinstance(value, list):
                _require(bool(value), f"data.{key}", "must not be an empty list")
                for i, item in enumerate(value):
                    _require(bool(item.strip()), f"data.{key}[{i}]", "must not be empty")
            else:
                _require(bool(value.strip()), f"data.{key}", "must not be empty")
        _require(self.timeout > 0, "data.timeout", "must be > 0")
        _require(self.retries >= 1, "data.retries", "must be >= 1")
        _require(self.max_bytes >= 1, "data.max_bytes", "must be >= 1")

    def sources(self, kind: str) -> list[str]:
        """The sources given for `kind` (corpus, instruct or classify) as a list, stripped."""
        value = getattr(self, kind)
        return [item.strip() for item in (value if isinstance(value, list) else [value])]

    def mirror_dir(self) -> Path | None:
        """The mirror folder: the param if set, else the GPTPIPE_MIRROR environment variable."""
        value = self.mirror or os.environ.get("GPTPIPE_MIRROR")
        return Path(value) if value else None


@dataclass
class TokenizerConfig:
    """`tokenizer`: train a byte-level BPE on the corpus, or use GPT-2's."""

    kind: Literal["bpe", "gpt2"] = _f(
        "bpe", "bpe: train on the corpus; gpt2: GPT-2's ranks (n_vocab 50257)."
    )
    vocab_size: int = _f(
        4096,
        "Vocabulary size for kind=bpe: 256 bytes + merges + <|endoftext|> + special_tokens.",
    )
    pattern: Literal["gpt2", "gpt4"] = _f("gpt2", "Pre-tokenisation split pattern for kind=bpe.")
    workers: int = _f(
        0, "Processes counting pre-tokens for kind=bpe (0: one per CPU core); same result."
    )
    special_tokens: list[str] = _f(  # noqa: RUF009 (_f copies a list default per instance)
        [],
        "Extra special tokens for kind=bpe, such as <|im_start|> or <|pad|>: ids after "
        "<|endoftext|>, in this order. The corpus is still encoded as plain text.",
    )

    def __post_init__(self) -> None:
        reserved = 257 + len(self.special_tokens)
        _require(
            reserved <= self.vocab_size <= 1_000_000,
            "tokenizer.vocab_size",
            f"must be in {reserved}..1000000"
            + (
                f" (256 bytes + <|endoftext|> + {len(self.special_tokens)} special_tokens)"
                if self.special_tokens
                else ""
            ),
        )
        _require(self.workers >= 0, "tokenizer.workers", "must be >= 0 (0: one per CPU core)")
        # GPT-2's weights read exactly its 50257 ids (stages/weights.py checks the tokenizer
        # against GPT-2's byte for byte), so GPT-2's tokenizer gets no extra ids.
        _require(
            self.kind == "bpe" or not self.special_tokens,
            "tokenizer.special_tokens",
            "must be empty for tokenizer.kind: gpt2 (GPT-2's vocabulary and weights have "
            "exactly 50257 ids, <|endoftext|> the only special token); use kind: bpe",
        )
        problem = special_token_problem(self.special_tokens)
        if problem is not None:
            raise ConfigError(f"tokenizer.special_tokens[{problem[0]}]", problem[1])


@dataclass
class ShardConfig:
    """`shard`: token ids into Arrow IPC files with a train/val split."""

    val_fraction: float = _f(0.1, "Share of the token stream held out for validation.")
    shard_tokens: int = _f(10_000_000, "Tokens per shard file.")
    split_chunk_tokens: int = _f(
        4096, "The stream is cut in chunks of this many tokens, each assigned to train or val."
    )
    seed: int = _f(1337, "Seed of the train/val assignment.")
    workers: int = _f(
        0, "Threads encoding the corpus (0: one per CPU core); shards are byte-identical."
    )

    def __post_init__(self) -> None:
        _require(0 < self.val_fraction < 1, "shard.val_fraction", "must be between 0 and 1")
        _require(self.workers >= 0, "shard.workers", "must be >= 0 (0: one per CPU core)")
        _require(self.shard_tokens >= 1024, "shard.shard_tokens", "must be >= 1024")
        _require(self.split_chunk_tokens >= 16, "shard.split_chunk_tokens", "must be >= 16")


@dataclass
class ModelConfig:
    """`model`: the GPT-2 architecture of the model pretrained from scratch."""

    block_size: int = _f(128, "Context length in tokens.")
    n_layer: int = _f(4, "Transformer blocks.")
    n_head: int = _f(4, "Attention heads per block.")
    n_embd: int = _f(128, "Embedding width; must be divisible by n_head.")
    dropout: float = _f(0.0, "Dropout probability in training.")
    bias: bool = _f(True, "Biases in Linear and LayerNorm layers (GPT-2 has them).")

    def __post_init__(self) -> None:
        for key in ("block_size", "n_layer", "n_head", "n_embd"):
            _require(getattr(self, key) >= 1, f"model.{key}", "must be >= 1")
        _require(
            self.n_embd % self.n_head == 0,
            "model.n_embd",
            f"must be divisible by model.n_head ({self.n_embd} % {self.n_head} != 0)",
        )
        _require(0 <= self.dropout < 1, "model.dropout", "must be in [0, 1)")


@dataclass
class TrainingConfig:
    """Settings shared by pretraining and both fine-tunings (one training loop)."""

    max_steps: int = _f(600, "Optimizer steps.")
    batch_size: int = _f(16, "Sequences per micro-batch.")
    grad_accum: int = _f(
        1, "Micro-batches per optimizer step (effective batch = batch_size * grad_accum)."
    )
    learning_rate: float = _f(1e-3, "Peak learning rate (AdamW).")
    min_lr: float = _f(1e-4, "Learning rate at the end of the cosine decay.")
    warmup_steps: int = _f(50, "Linear warm-up steps.")
    weight_decay: float = _f(0.1, "AdamW weight decay, applied to matrices only.")
    beta1: float = _f(0.9, "AdamW beta1.")
    beta2: float = _f(0.95, "AdamW beta2.")
    grad_clip: float = _f(1.0, "Clip the global gradient norm to this (0 disables).")
    eval_interval: int = _f(100, "Validate every this many steps (and at the end).")
    eval_batches: int = _f(20, "Validation batches per evaluation.")
    seed: int = _f(1337, "Seed for initialisation, data order and dropout.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = _f(
        "float32",
        "Autocast compute dtype. auto: bfloat16 where the hardware computes it natively (CUDA "
        "with bf16, CPUs with AVX-512 BF16 or AMX), else float32; float16 (CUDA) runs with a "
        "gradient scaler.",
    )
    compile: bool = _f(False, "torch.compile the model (minutes of compilation first).")
    patience: int = _f(
        0,
        "Early stopping: stop after this many validations without a lower val_loss and keep "
        "the best weights (0: off, train all max_steps).",
    )
    device: str = _f("auto", "auto, cpu, cuda or cuda:N.")
    threads: int = _f(0, "CPU threads for torch (0: leave torch's default).")
    log_interval: int = _f(10, "Write a row of the training curve every this many steps.")
    checkpoint_interval: int = _f(
        100, "Save a resumable checkpoint every this many steps (0: only on Ctrl-C/SIGTERM)."
    )

    def __post_init__(self) -> None:
        section = self._section()
        for key in (
            "max_steps",
            "batch_size",
            "grad_accum",
            "eval_interval",
            "eval_batches",
            "log_interval",
        ):
            _require(getattr(self, key) >= 1, f"{section}.{key}", "must be >= 1")
        _require(self.learning_rate > 0, f"{section}.learning_rate", "must be > 0")
        _require(
            0 <= self.min_lr <= self.learning_rate,
            f"{section}.min_lr",
            "must be in [0, learning_rate]",
        )
        _require(self.warmup_steps >= 0, f"{section}.warmup_steps", "must be >= 0")
        _require(self.weight_decay >= 0, f"{section}.weight_decay", "must be >= 0")
        _require(0 <= self.beta1 < 1, f"{section}.beta1", "must be in [0, 1)")
        _require(0 <= self.beta2 < 1, f"{section}.beta2", "must be in [0, 1)")
        _require(self.grad_clip >= 0, f"{section}.grad_clip", "must be >= 0")
        _require(self.threads >= 0, f"{section}.threads", "must be >= 0")
        _require(self.checkpoint_interval >= 0, f"{section}.checkpoint_interval", "must be >= 0")
        _require(self.patience >= 0, f"{section}.patience", "must be >= 0")
        _require(
            self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
            f"{section}.device",
            f"must be auto, cpu, cuda or cuda:N, not {self.device!r}",
        )

    @classmethod
    def _section(cls) -> str:
        return SECTION_OF.get(cls, "training")


@dataclass
class PretrainConfig(TrainingConfig):
    """`pretrain`: next-token pretraining of the model from scratch on the shards."""

    dtype: Literal["auto", "float32", "bfloat16", "float16"] = _f(
        "auto",
        "Autocast compute dtype. auto: bfloat16 where the hardware computes it natively (CUDA "
        "with bf16, CPUs with AVX-512 BF16 or AMX), else float32; float16 (CUDA) runs with a "
        "gradient scaler.",
    )
    nproc: int = _f(
        1,
        "Processes: > 1 relaunches the stage under torchrun (DistributedDataParallel, one "
        "batch_size micro-batch per process, so the global batch is nproc * batch_size * "
        "grad_accum).",
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(self.nproc >= 1, "pretrain.nproc", "must be >= 1")


# OpenAI's released GPT-2 sizes (gptpipe.hub knows where their weights are).
GPT2_NAMES = ("gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl")


@dataclass
class BaseConfig:
    """`base`: where the base model for fine-tuning comes from."""

    source: str = _f(
        "pretrain",
        "pretrain: the model pretrained by this pipeline; gpt2, gpt2-medium, gpt2-large, "
        "gpt2-xl: OpenAI's GPT-2 weights (124M to 1558M; downloaded, or from the mirror folder "
        "base.mirror / $GPTPIPE_MIRROR); or a folder holding GPT-2 weights in the Hugging Face "
        "(model.safetensors + config.json) or OpenAI (hparams.json + model.ckpt.*) layout. "
        "GPT-2 weights need tokenizer.kind: gpt2.",
    )

    mirror: str | None = _f(
        None,
        "Local folder looked in for GPT-2 weights before downloading (else $GPTPIPE_MIRROR): "
        "MIRROR/gpt2/ (or MIRROR/124M/ ...) with model.safetensors + config.json or "
        "hparams.json + model.ckpt.index + model.ckpt.data-00000-of-00001.",
    )
    timeout: float = _f(60.0, "Seconds to wait on a stalled download connection.")
    retries: int = _f(3, "Attempts per URL on connection errors and 5xx responses.")

    def __post_init__(self) -> None:
        allowed = f"pretrain, {', '.join(GPT2_NAMES)} or a checkpoint folder"
        _require(bool(self.source.strip()), "base.source", f"must not be empty; allowed: {allowed}")
        _require(self.timeout > 0, "base.timeout", "must be > 0")
        _require(self.retries >= 1, "base.retries", "must be >= 1")
        if self.source == "pretrain" or self.source in GPT2_NAMES:
            return
        path = Path(self.source).expanduser()
        _require(
            path.is_dir(),
            "base.source",
            f"{self.source!r} is neither a known name nor an existing folder; allowed: {allowed}",
        )

    def mirror_dir(self) -> Path | None:
        """The mirror folder: the param if set, else the GPTPIPE_MIRROR environment variable."""
        value = self.mirror or os.environ.get("GPTPIPE_MIRROR")
        return Path(value) if value else None


@dataclass
class InstructConfig(TrainingConfig):
    """`instruct`: instruction fine-tuning in the Alpaca prompt format."""

    max_steps: int = _f(200, "Optimizer steps.")
    batch_size: int = _f(8, "Sequences per micro-batch.")
    learning_rate: float = _f(5e-4, "Peak learning rate (AdamW).")
    min_lr: float = _f(5e-5, "Learning rate at the end of the cosine decay.")
    warmup_steps: int = _f(20, "Linear warm-up steps.")
    eval_interval: int = _f(50, "Validate every this many steps (and at the end).")
    eval_batches: int = _f(10, "Validation batches per evaluation.")
    val_fraction: float = _f(0.1, "Share of the records held out for validation.")
    max_length: int = _f(
        0, "Model input per example in tokens; prompt+response is cut to it (0: the context)."
    )
    num_examples: int = _f(3, "Held-out instructions answered greedily in the metrics.")
    max_new_tokens: int = _f(48, "Tokens generated per example answer.")

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(0 < self.val_fraction < 1, "instruct.val_fraction", "must be between 0 and 1")
        _require(self.max_length >= 0, "instruct.max_length", "must be >= 0")
        _require(self.num_examples >= 0, "instruct.num_examples", "must be >= 0")
        _require(self.max_new_tokens >= 1, "instruct.max_new_tokens", "must be >= 1")


@dataclass
class ClassifyConfig(TrainingConfig):
    """`classify`: classification fine-tuning with a head on the last token."""

    max_steps: int = _f(200, "Optimizer steps.")
    batch_size: int = _f(16, "Sequences per micro-batch.")
    learning_rate: float = _f(5e-4, "Peak learning rate (AdamW).")
    min_lr: float = _f(5e-5, "Learning rate at the end of the cosine decay.")
    warmup_steps: int = _f(20, "Linear warm-up steps.")
    eval_interval: int = _f(50, "Validate every this many steps (and at the end).")
    eval_batches: int = _f(10, "Validation batches per evaluation.")
    val_fraction: float = _f(0.1, "Share of the records held out for validation.")
    test_fraction: float = _f(0.2, "Share of the records held out for the final test.")
    max_length: int = _f(0, "Truncate texts to this many tokens (0: the model's context).")

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(0 < self.val_fraction < 1, "classify.val_fraction", "must be between 0 and 1")
        _require(0 < self.test_fraction < 1, "classify.test_fraction", "must be between 0 and 1")
        _require(
            self.val_fraction + self.test_fraction < 1,
            "classify.test_fraction",
            "val_fraction + test_fraction must be < 1",
        )
        _require(self.max_length >= 0, "classify.max_length", "must be >= 0")


@dataclass
class EvaluateConfig:
    """`evaluate`: sliding-window perplexity."""

    stride: int = _f(
        64,
        "Tokens the window advances (1..block_size); each token is scored once, "
        "with up to block_size-1 tokens of context.",
    )
    batch_size: int = _f(8, "Windows per forward pass.")
    device: str = _f("auto", "auto, cpu, cuda or cuda:N.")

    def __post_init__(self) -> None:
        _require(self.stride >= 1, "evaluate.stride", "must be >= 1")
        _require(self.batch_size >= 1, "evaluate.batch_size", "must be >= 1")
        _require_device(self.device, "evaluate.device")


@dataclass
class SampleConfig:
    """`sample`: text sampled from the models."""

    prompts: list[str] = _f(["The ", "def ", "Return the"], "Prompts to continue.")  # noqa: RUF009
    max_new_tokens: int = _f(64, "Tokens generated per sample.")
    temperature: float = _f(0.8, "Softmax temperature; 0 is greedy.")
    top_k: int = _f(40, "Sample from the k most likely tokens (0: all).")
    num_samples: int = _f(2, "Sampled continuations per prompt (besides the greedy one).")
    seed: int = _f(1337, "Sampling seed.")
    device: str = _f("auto", "auto, cpu, cuda or cuda:N.")

    def __post_init__(self) -> None:
        _require(len(self.prompts) >= 1, "sample.prompts", "must list at least one prompt")
        _require(self.max_new_tokens >= 1, "sample.max_new_tokens", "must be >= 1")
        _require(self.temperature >= 0, "sample.temperature", "must be >= 0")
        _require(self.top_k >= 0, "sample.top_k", "must be >= 0")
        _require(self.num_samples >= 0, "sample.num_samples", "must be >= 0")
        _require_device(self.device, "sample.device")


@dataclass
class ReportConfig:
    """`report`: the Markdown report."""

    title: str = _f("gptpipe run report", "Title of reports/report.md.")


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "tokenizer": TokenizerConfig,
    "shard": ShardConfig,
    "model": ModelConfig,
    "pretrain": PretrainConfig,
    "base": BaseConfig,
    "instruct": InstructConfig,
    "classify": ClassifyConfig,
    "evaluate": EvaluateConfig,
    "sample": SampleConfig,
    "report": ReportConfig,
}
SECTION_OF: dict[type, str] = {cls: name for name, cls in SECTIONS.items()}

# --------------------------------------------------------------------------- loading


def parse_override(text: str) -> tuple[str, Any]:
    """Parse one `-S key=value` (value in YAML syntax, as `dvc exp run -S` takes it)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or "." not in key:
        raise BadInput(
            f"override {text!r}: expected SECTION.KEY=VALUE, for example pretrain.max_steps=10"
        )
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def read_params(path: Path | str, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Read params.yaml (missing file: empty) and apply `-S` overrides; check every key exists."""
    path = Path(path)
    raw: Any = {}
    if path.exists():
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise BadInput(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    elif path.name != "params.yaml" or path.parent != Path():
        raise BadInput(f"{path}: params file not found")
    if not isinstance(raw, dict):
        raise BadInput(f"{path}: expected a mapping of sections at the top level")
    params = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for text in overrides:
        key, value = parse_override(text)
        section, _, name = key.partition(".")
        _check_key(section, name)
        target = params.setdefault(section, {})
        if not isinstance(target, dict):
            raise ConfigError(section, "must be a mapping")
        target[name] = value
    return params


def _check_key(section: str, name: str) -> None:
    cls = SECTIONS.get(section)
    if cls is None:
        raise ConfigError(section, f"unknown section; allowed: {', '.join(SECTIONS)}")
    names = [f.name for f in dataclasses.fields(cls)]
    if name not in names:
        raise ConfigError(f"{section}.{name}", f"unknown key; allowed: {', '.join(names)}")


def build_section(params: dict[str, Any], section: str) -> Any:
    """Build and validate the dataclass for one section of already-read params."""
    cls = SECTIONS[section]
    values = params.get(section) or {}
    if not isinstance(values, dict):
        raise ConfigError(section, "must be a mapping")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in values.items():
        _check_key(section, str(name))
        kwargs[name] = _coerce(f"{section}.{name}", value, hints[name])
    return cls(**kwargs)


def load_section(
    section: str,
    params_file: Path | str = "params.yaml",
    overrides: list[str] | tuple[str, ...] = (),
) -> Any:
    """Read `params_file` with overrides and return the validated config of `section`."""
    return build_section(read_params(params_file, overrides), section)


def _coerce(key: str, value: Any, annotation: Any) -> Any:
    """Check `value` against a field's annotation; ints pass as floats, nothing else converts."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(key, value, option)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(key, f"expected {_type_name(annotation)}, got {value!r}")
    if origin is Literal:
        allowed = typing.get_args(annotation)
        if value not in allowed:
            raise ConfigError(key, f"must be one of {', '.join(map(str, allowed))}, not {value!r}")
        return value
    if origin is list:
        (item_type,) = typing.get_args(annotation)
        if not isinstance(value, list):
            raise ConfigError(key, f"expected a list, got {value!r}")
        return [_coerce(f"{key}[{i}]", v, item_type) for i, v in enumerate(value)]
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(key, f"expected true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(key, f"expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, str) and _YAML12_FLOAT.match(value):
            return float(value)  # PyYAML reads 3e-4 as a string; YAML 1.2 (and DVC) as a float
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(key, f"expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported annotation {annotation!r} for {key}")


_YAML12_FLOAT = re.compile(r"^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$")


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", str(annotation))


def describe(section: str) -> str:
    """The params keys of a section with their defaults and help, for `--help`."""
    cls = SECTIONS[section]
    summary = (cls.__doc__ or "").strip().removeprefix(f"`{section}`:").strip()
    lines = [f"Params section '{section}': {summary}"]
    for f in dataclasses.fields(cls):
        factory = f.default_factory
        default = f.default if factory is dataclasses.MISSING else factory()
        lines.append(f"  {section}.{f.name} = {default!r}: {f.metadata.get('help', '')}")
    return "\n\n".join(lines)


def to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as a plain dict (for metrics and config.json)."""
    return dataclasses.asdict(config)
