"""Typed configuration: one dataclass per params.yaml section, validated once at start-up.

Each field's `help` metadata is the documentation of its params key; `describe()` turns a
section into the text shown by `gptpipe <stage> --help`. Every error names the dotted key.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from gptpipe.decoding import FIELDS, LIBRARY, MAX_SEED, SAMPLE, check
from gptpipe.errors import BadInput, ConfigError, os_message
from gptpipe.tokenizer.special import special_token_problem


def _f(default: Any, help: str) -> Any:
    """A dataclass field with a help text (mutable defaults are copied per instance)."""
    if isinstance(default, list | dict):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


def _require(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(key, message)


# What torch.device accepts among the devices the pipeline runs on (checked here, so a string
# torch would reject is bad input naming the key, not a RuntimeError from deep in a stage).
_DEVICE = re.compile(r"^(auto|cpu|cuda(:[0-9]+)?)$")


def _require_device(device: str, key: str) -> None:
    _require(bool(_DEVICE.match(device)), key, f"must be auto, cpu, cuda or cuda:N, not {device!r}")


def _require_seed(seed: int, key: str) -> None:
    _require(0 <= seed <= MAX_SEED, key, f"must be in 0..{MAX_SEED} (2**63 - 1), not {seed}")


# --------------------------------------------------------------------------- sizes
# Upper bounds: sizes that cannot fit are refused before anything is allocated, with how much
# they would need. Hard limits catch the absurd at once; the memory estimate the rest.

MODEL_LIMITS = {"block_size": 1 << 20, "n_layer": 10_000, "n_head": 10_000, "n_embd": 1 << 17}
TRAINING_LIMITS = {"max_steps": 10**12, "batch_size": 1 << 20, "grad_accum": 1 << 20}


def gpt_params(model: Any, vocab_size: int) -> int:
    """Parameters of a GPT-2 model with these sizes (tied head; `model` has the model keys)."""
    C, L, T = model.n_embd, model.n_layer, model.block_size
    per_block = 12 * C * C + 13 * C  # c_attn, c_proj, c_fc, c_proj (+ biases) and 2 LayerNorms
    return vocab_size * C + T * C + L * per_block + 2 * C


def training_bytes(model: Any, vocab_size: int, batch_size: int) -> int:
    """Rough peak memory of float32 AdamW training: weights, gradients and two moments (16
    bytes a parameter), activations kept for the backward pass (about 2 * (34 C + 5 H T)
    bytes per token and layer, Korthikanti et al. 2022, in float32) and the logits."""
    tokens = batch_size * model.block_size
    activations = (
        2 * tokens * model.n_layer * (34 * model.n_embd + 5 * model.n_head * model.block_size)
    )
    return 16 * gpt_params(model, vocab_size) + activations + 8 * tokens * vocab_size


def memory_bytes() -> int:
    """This machine's memory for the process: physical memory, or a smaller cgroup limit."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 1 << 62  # unknown: do not refuse on a guess
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text(encoding="ascii").strip()
        if limit.isdigit():
            total = min(total, int(limit))
    except OSError:
        pass
    return total


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} EiB"  # pragma: no cover (PiB returns above)


def require_fits(
    key: str,
    need: int,
    what: str,
    available: int | None = None,
    error: Callable[[str, str], Exception] = ConfigError,
) -> None:
    """Refuse (naming `key`) a size whose estimated memory exceeds what the machine has:
    raises `error(key, why)`, a ConfigError for a params key (a command's option passes
    `gptpipe.decoding.SettingError`, which names it as it is)."""
    have = memory_bytes() if available is None else available
    if need > have:
        raise error(
            key,
            f"{what} needs about {human_bytes(need)} of memory, more than the "
            f"{human_bytes(have)} this machine has",
        )


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True)
class CorpusFiles:
    """`data.corpus: {files: [...]}`: a corpus made of every file listed, read in this order
    (a plain list is mirrors of one file)."""

    files: list[str] = _f([], "URLs or paths (a local entry may be a folder or a glob).")  # noqa: RUF009


@dataclass(frozen=True)
class DataColumns:
    """`data.columns`: the names your instruction and classification files (Parquet
    columns, JSON keys) use for the fields the pipeline reads."""

    instruction: str = _f("instruction", "Instruction records: the instruction.")
    input: str = _f("input", 'Instruction records: the input ("": none, every input empty).')
    output: str = _f("output", "Instruction records: the response.")
    label: str = _f("label", "Classification: the label (strings, or integers).")
    text: str = _f("text", "Classification: the text to classify.")


@dataclass
class DataConfig:
    """`data`: where the corpus, instruction and classification data come from."""

    corpus: str | list[str] | CorpusFiles = _f(  # noqa: RUF009 (a str default is immutable)
        "stdlib",
        "Corpus: a named set (stdlib, tinyshakespeare), a URL or a path (archive.zip#member "
        "reads one member; .gz and .zst are decompressed), a local folder or glob "
        "(data/inputs/fineweb/*.parquet: every file, sorted), {files: [url, ...]} (a corpus "
        "of many files, in that order), or a plain list of mirrors of one file tried in "
        "order. Each file by its name: .parquet (the text_column), .jsonl or .json (strings "
        'or {"text": ...}), else plain text (<|endoftext|> separates documents).',
    )
    text_column: str = _f(
        "text",
        "The corpus's text: the Parquet column, or the key of JSON (Lines) objects. Null "
        "rows are skipped and counted (null_rows in provenance.json).",
    )
    columns: DataColumns = _f(  # noqa: RUF009 (frozen, so immutable)
        DataColumns(),
        "Field names of instruct and classify records (Parquet or JSON), where they differ: "
        "{instruction: prompt, input: context, output: response, label: category, text: sms}. "
        "Rows with a null field are skipped and counted; a null input is empty.",
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
    inputs: str = _f(
        "data/inputs",
        "Folder of your own data files: dvc.yaml makes it a dependency of the download stage, "
        "so editing, adding or removing a file in it reruns download (and what its changed "
        "outputs feed). Under DVC a local path in corpus, instruct or classify must lie inside "
        "it; point it at a folder elsewhere (data.inputs=/data/corpora) rather than copying "
        "large files. Files DVC tracks (dvc add, dvc import-url) may live in it.",
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
            if isinstance(value, CorpusFiles):
                key, value = "corpus.files", value.files
            if isinstance(value, list):
                _require(bool(value), f"data.{key}", "must not be an empty list")
                for i, item in enumerate(value):
                    _require(bool(item.strip()), f"data.{key}[{i}]", "must not be empty")
            else:
                _require(bool(value.strip()), f"data.{key}", "must not be empty")
        _require(bool(self.inputs.strip()), "data.inputs", "must not be empty")
        _require(bool(self.text_column.strip()), "data.text_column", "must not be empty")
        for name in ("instruction", "output", "label", "text"):
            _require(
                bool(getattr(self.columns, name).strip()),
                f"data.columns.{name}",
                "must not be empty",
            )
        _require(self.timeout > 0, "data.timeout", "must be > 0")
        _require(self.retries >= 1, "data.retries", "must be >= 1")
        _require(self.max_bytes >= 1, "data.max_bytes", "must be >= 1")

    def sources(self, kind: str) -> list[str]:
        """The sources given for `kind` (corpus, instruct or classify) as a list, stripped
        (the files of a `{files: [...]}` corpus)."""
        value = getattr(self, kind)
        if isinstance(value, CorpusFiles):
            value = value.files
        return [item.strip() for item in (value if isinstance(value, list) else [value])]

    def mirror_dir(self) -> Path | None:
        """The mirror folder: the param if set, else the GPTPIPE_MIRROR environment variable."""
        value = self.mirror or os.environ.get("GPTPIPE_MIRROR")
        return Path(value) if value else None


@dataclass
class TokenizerConfig:
    """`tokenizer`: train a byte-level BPE on the corpus, use GPT-2's, or a fixed vocabulary
    of bytes, characters or words."""

    kind: Literal["bpe", "gpt2", "byte", "char", "word"] = _f(
        "bpe",
        "bpe: a byte-level BPE trained on the corpus; gpt2: GPT-2's ranks (n_vocab 50257); "
        "byte: the 256 byte values + <|endoftext|> (257 ids, lossless); char: the corpus's "
        "characters + <|endoftext|> + <|unk|> (for characters it never had); word: the "
        "vocab_size - 2 most frequent lower-cased words and punctuation marks of the corpus "
        "+ <|endoftext|> + <|unk|> (whitespace and case are not kept).",
    )
    vocab_size: int = _f(
        4096,
        "Vocabulary size for kind=bpe (256 bytes + merges + <|endoftext|> + special_tokens) "
        "and kind=word (at most this many ids, <|endoftext|> and <|unk|> included); the other "
        "kinds' size follows from the kind.",
    )
    min_count: int = _f(
        0,
        "kind=gpt2 only. 0: GPT-2's 50257 ids. n >= 1: keep the 256 bytes and the GPT-2 tokens "
        "the corpus has at least n times, and spell every other token with those (lossless; the "
        "model's head shrinks to the corpus's tokens, and GPT-2's weights no longer fit).",
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
    sample_bytes: int = _f(
        100_000_000,
        "Bytes of the corpus the vocabulary is learned from (kinds bpe, char, word, and gpt2 "
        "with min_count >= 1), so training time stops growing with the corpus. A larger corpus "
        "is sampled: about 1 MiB windows of whole documents spaced evenly over the whole file, "
        "the same windows for the same corpus (deterministic); a corpus of at most this size is "
        "read whole. 0: always the whole corpus. The shard stage encodes the whole corpus.",
    )

    def __post_init__(self) -> None:
        if self.kind == "word":
            _require(
                3 <= self.vocab_size <= 1_000_000,
                "tokenizer.vocab_size",
                "must be in 3..1000000 for kind=word (words + <|endoftext|> + <|unk|>)",
            )
        else:
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
        _require(
            self.sample_bytes >= 0, "tokenizer.sample_bytes", "must be >= 0 (0: the whole corpus)"
        )
        _require(self.min_count >= 0, "tokenizer.min_count", "must be >= 0 (0: all of GPT-2's ids)")
        _require(
            self.kind == "gpt2" or self.min_count == 0,
            "tokenizer.min_count",
            f"must be 0 for tokenizer.kind: {self.kind} (it cuts GPT-2's vocabulary: kind gpt2)",
        )
        # GPT-2's weights read exactly its 50257 ids (stages/weights.py checks the tokenizer
        # against GPT-2's byte for byte), so GPT-2's tokenizer gets no extra ids; the fixed
        # vocabularies have <|endoftext|> (and <|unk|>) only.
        _require(
            self.kind == "bpe" or not self.special_tokens,
            "tokenizer.special_tokens",
            f"must be empty for tokenizer.kind: {self.kind} (only kind: bpe reserves extra "
            "special tokens; GPT-2's vocabulary and weights have exactly 50257 ids)",
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
        _require(
            self.split_chunk_tokens <= self.shard_tokens,
            "shard.split_chunk_tokens",
            f"must be <= shard.shard_tokens ({self.shard_tokens})",
        )
        _require_seed(self.seed, "shard.seed")
        # The writer holds one shard's ids (4 bytes each at most) per split while filling it.
        require_fits(
            "shard.shard_tokens", 2 * 4 * self.shard_tokens, f"{self.shard_tokens:,} tokens"
        )


@dataclass
class ModelConfig:
    """`model`: the GPT-2 architecture of the model pretrained from scratch."""

    block_size: int = _f(128, "Context length in tokens.")
    n_layer: int = _f(4, "Transformer blocks.")
    n_head: int = _f(4, "Attention heads per block.")
    n_embd: int = _f(128, "Embedding width; must be divisible by n_head.")
    dropout: float = _f(0.0, "Dropout probability in training.")
    bias: bool = _f(True, "Biases in Linear and LayerNorm layers (GPT-2 has them).")
    gelu: Literal["tanh", "exact"] = _f(
        "tanh",
        "The MLP's GELU: tanh, GPT-2's approximation; exact, the erf form (half the cost on "
        "the CPU; exported to Hugging Face as activation_function gelu).",
    )

    def __post_init__(self) -> None:
        _require(
            self.gelu in ("tanh", "exact"),
            "model.gelu",
            f"must be tanh or exact, not {self.gelu!r}",
        )
        for key in ("block_size", "n_layer", "n_head", "n_embd"):
            _require(getattr(self, key) >= 1, f"model.{key}", "must be >= 1")
        _require(
            self.n_embd % self.n_head == 0,
            "model.n_embd",
            f"must be divisible by model.n_head ({self.n_embd} % {self.n_head} != 0)",
        )
        _require(0 <= self.dropout < 1, "model.dropout", "must be in [0, 1)")
        for key, limit in MODEL_LIMITS.items():
            value = getattr(self, key)
            _require(value <= limit, f"model.{key}", f"must be <= {limit:,}, not {value:,}")
        # The smallest vocabulary (bytes + <|endoftext|>) already says whether it can fit.
        # The model is built in host memory first; with the smallest vocabulary (bytes +
        # <|endoftext|>) its float32 weights alone must fit (the stage checks training).
        weights = 4 * gpt_params(self, vocab_size=257)
        require_fits("model", weights, f"the weights of {self.n_layer} layers x {self.n_embd} wide")


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
    eps: float = _f(
        1e-8,
        "AdamW epsilon: gradients much smaller than it move a weight less than the full "
        "learning rate. With tied embeddings the rows of tokens the training text never shows "
        "get only the softmax's push-down, which AdamW turns into full-size steps until their "
        "gradient falls under eps; a larger eps (1e-6) stops them sooner, so text holding such "
        "tokens scores better.",
    )
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
    keep: Literal["final", "best"] = _f(
        "final",
        "Which weights the model folder gets: final (after the last step) or best (those of "
        "the validation with the lowest val_loss; a copy of the weights is held meanwhile). A "
        "classifier's val_loss can rise while its accuracy still climbs (it grows confident). "
        "The report and the run details say which step they are from.",
    )
    patience: int = _f(
        0,
        "Early stopping: stop after this many validations without a lower val_loss (0: off, "
        "train all max_steps); needs keep: best.",
    )
    device: str = _f("auto", "auto, cpu, cuda or cuda:N.")
    threads: int = _f(
        0,
        "CPU threads for torch. 0: $GPTPIPE_THREADS when set; else, in an experiment a DVC "
        "queue runs, torch's default shared among the queue's workers; else torch's default.",
    )
    log_interval: int = _f(10, "Write a row of the training curve every this many steps.")
    checkpoint_interval: int = _f(
        100, "Save a resumable checkpoint every this many steps (0: only on Ctrl-C/SIGTERM)."
    )
    nproc: int = _f(
        1,
        "Processes: > 1 relaunches the stage under torchrun (data parallel as strategy says, "
        "one batch_size micro-batch per process, so the global batch is nproc * batch_size * "
        "grad_accum; its loss is the mean of the micro-batches' mean losses, as grad_accum's).",
    )
    strategy: Literal["ddp", "fsdp"] = _f(
        "ddp",
        "How several processes share the training: ddp (DistributedDataParallel: every process "
        "holds the whole weights, gradients and AdamW states) or fsdp (fully sharded, PyTorch's "
        "FSDP2: each holds 1/nproc of them and gathers one block's weights at a time, for "
        "models whose training state does not fit one device). The same results and "
        "checkpoints either way; one process (nproc 1) trains alone under both. `gptpipe info "
        "--params params.yaml` shows the memory per process each needs.",
    )

    def __post_init__(self) -> None:
        section = self._section()
        for key in ("batch_size", "grad_accum", "eval_interval", "eval_batches", "log_interval"):
            _require(getattr(self, key) >= 1, f"{section}.{key}", "must be >= 1")
        self._check_length(section)
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
        _require(0 < self.eps < 1, f"{section}.eps", f"must be in (0, 1), not {self.eps}")
        _require(self.grad_clip >= 0, f"{section}.grad_clip", "must be >= 0")
        _require(self.threads >= 0, f"{section}.threads", "must be >= 0")
        _require(self.checkpoint_interval >= 0, f"{section}.checkpoint_interval", "must be >= 0")
        _require(self.patience >= 0, f"{section}.patience", "must be >= 0")
        _require(self.nproc >= 1, f"{section}.nproc", "must be >= 1")
        _require(
            self.strategy in ("ddp", "fsdp"),
            f"{section}.strategy",
            f"must be ddp or fsdp, not {self.strategy!r}",
        )
        _require(
            self.patience == 0 or self.keep == "best",
            f"{section}.keep",
            f"must be best with early stopping ({section}.patience {self.patience}): a run "
            "that stops after validations without improvement keeps the weights of its best one",
        )
        _require_device(self.device, f"{section}.device")
        _require_seed(self.seed, f"{section}.seed")
        for key in ("max_steps", "batch_size", "grad_accum"):
            limit = TRAINING_LIMITS[key]
            value = getattr(self, key)
            _require(value <= limit, f"{section}.{key}", f"must be <= {limit:,}, not {value:,}")

    def _check_length(self, section: str) -> None:
        """How long training runs: max_steps (the fine-tunings may give epochs instead)."""
        _require(self.max_steps >= 1, f"{section}.max_steps", "must be >= 1")

    @classmethod
    def _section(cls) -> str:
        return SECTION_OF.get(cls, "training")


@dataclass
class PretrainConfig(TrainingConfig):
    """`pretrain`: next-token pretraining of the model from scratch on the shards."""

    max_steps: int = _f(1200, "Optimizer steps.")

    dtype: Literal["auto", "float32", "bfloat16", "float16"] = _f(
        "auto",
        "Autocast compute dtype. auto: bfloat16 where the hardware computes it natively (CUDA "
        "with bf16, CPUs with AVX-512 BF16 or AMX), else float32; float16 (CUDA) runs with a "
        "gradient scaler.",
    )


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
        "(model.safetensors + config.json) or OpenAI (hparams.json + model.ckpt.*) format. "
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


LORA_TARGETS = ("c_attn", "c_proj", "c_fc", "head")  # module names LoRA can adapt


@dataclass
class FinetuneConfig(TrainingConfig):
    """What both fine-tunings share: epochs, which weights train, and LoRA's settings."""

    epochs: float = _f(
        0.0,
        "Passes over the training split. One of max_steps and epochs sets how long training "
        "runs, the other is 0: epochs > 0 trains ceil(epochs * training examples / (nproc * "
        "batch_size * grad_accum)) steps (the run details and the report give the number).",
    )
    trainable: Literal["all", "last_blocks", "lora"] = _f(
        "all",
        "What trains: all (every weight); last_blocks (the head, the last trainable_blocks "
        "blocks and the final LayerNorm); lora (low-rank adapters on lora_targets, plus a new "
        "classifier head; merged into the weights when saved).",
    )
    trainable_blocks: int = _f(1, "Blocks that train with trainable: last_blocks (from the top).")
    lora_rank: int = _f(16, "LoRA rank r of the adapters (trainable: lora).")
    lora_alpha: float = _f(16.0, "LoRA alpha: adapters are scaled by alpha / rank.")
    lora_dropout: float = _f(0.0, "Dropout on the adapters' input (trainable: lora).")
    lora_targets: list[str] = _f(  # noqa: RUF009
        ["c_attn", "c_proj", "c_fc"],
        "Modules LoRA adapts: c_attn (query/key/value, one adapter each), c_proj (attention "
        "and MLP output projections; attn.c_proj or mlp.c_proj for one of them), c_fc (MLP "
        "input), head (the classifier head).",
    )

    def _check_length(self, section: str) -> None:
        """Exactly one of max_steps and epochs is set (> 0), so no value is silently ignored."""
        _require(self.max_steps >= 0, f"{section}.max_steps", "must be >= 0 (0: use epochs)")
        _require(self.epochs >= 0, f"{section}.epochs", "must be >= 0 (0: use max_steps)")
        if self.max_steps > 0 and self.epochs > 0:
            raise ConfigError(
                f"{section}.max_steps",
                f"{self.max_steps} and {section}.epochs {self.epochs:g} both set how long "
                f"training runs: set {section}.epochs=0 to train {self.max_steps} steps, or "
                f"{section}.max_steps=0 to train {self.epochs:g} epochs",
            )
        _require(
            self.max_steps > 0 or self.epochs > 0,
            f"{section}.max_steps",
            f"0 needs {section}.epochs > 0 (one of them sets how long training runs)",
        )

    def __post_init__(self) -> None:
        super().__post_init__()
        section = self._section()
        _require(self.trainable_blocks >= 1, f"{section}.trainable_blocks", "must be >= 1")
        _require(self.lora_rank >= 1, f"{section}.lora_rank", "must be >= 1")
        _require(self.lora_alpha > 0, f"{section}.lora_alpha", "must be > 0")
        _require(0 <= self.lora_dropout < 1, f"{section}.lora_dropout", "must be in [0, 1)")
        _require(bool(self.lora_targets), f"{section}.lora_targets", "must name a module")
        allowed = {*LORA_TARGETS, "attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"}
        for target in self.lora_targets:
            _require(
                target in allowed,
                f"{section}.lora_targets",
                f"unknown module {target!r}; allowed: {', '.join(sorted(allowed))}",
            )


@dataclass
class InstructConfig(FinetuneConfig):
    """`instruct`: instruction fine-tuning in the Alpaca prompt format."""

    max_steps: int = _f(400, "Optimizer steps (0: set by epochs).")
    batch_size: int = _f(8, "Sequences per micro-batch.")
    learning_rate: float = _f(5e-4, "Peak learning rate (AdamW).")
    min_lr: float = _f(5e-5, "Learning rate at the end of the cosine decay.")
    warmup_steps: int = _f(20, "Linear warm-up steps.")
    eval_interval: int = _f(50, "Validate every this many steps (and at the end).")
    eval_batches: int = _f(10, "Validation batches per evaluation.")
    split: list[float] = _f(  # noqa: RUF009
        [0.85, 0.10, 0.05],
        "Train, test and validation shares of the records, in file order (the book's "
        "85/10/5: 935/110/55 of 1,100); the last split takes the rest.",
    )
    shuffle: bool = _f(False, "Shuffle the records (with seed) before splitting.")
    mask_prompt: bool = _f(True, "Leave the prompt tokens out of the loss (train on responses).")
    max_length: int = _f(
        0, "Model input per example in tokens; prompt+response is cut to it (0: the context)."
    )
    max_new_tokens: int = _f(48, "Tokens generated per test response (greedy).")
    judge_url: str | None = _f(
        None,
        "Optional judge: an Ollama-compatible endpoint (http://HOST:11434/api/chat or "
        "/api/generate) scoring each test response 0-100; null: no judge.",
    )
    judge_model: str = _f("llama3", "Model name the judge endpoint runs.")
    judge_timeout: float = _f(120.0, "Seconds to wait for each judge reply.")

    def __post_init__(self) -> None:
        super().__post_init__()
        _require(
            len(self.split) == 3 and all(0 < f < 1 for f in self.split),
            "instruct.split",
            "must be three shares in (0, 1): train, test, validation",
        )
        _require(abs(sum(self.split) - 1) < 1e-6, "instruct.split", "shares must sum to 1")
        _require(self.max_length >= 0, "instruct.max_length", "must be >= 0")
        _check_settings({"max_new_tokens": self.max_new_tokens}, "instruct")  # as decoding does
        _require(self.judge_timeout > 0, "instruct.judge_timeout", "must be > 0")
        if self.judge_url is not None:
            _require(
                self.judge_url.startswith(("http://", "https://")),
                "instruct.judge_url",
                f"must be an http(s) URL, not {self.judge_url!r}",
            )


@dataclass
class ClassifyConfig(FinetuneConfig):
    """`classify`: classification fine-tuning with a head on the last token."""

    max_steps: int = _f(0, "Optimizer steps (0: set by epochs).")
    batch_size: int = _f(16, "Sequences per micro-batch.")
    learning_rate: float = _f(5e-4, "Peak learning rate (AdamW).")
    min_lr: float = _f(5e-5, "Learning rate at the end of the cosine decay.")
    warmup_steps: int = _f(20, "Linear warm-up steps.")
    eval_interval: int = _f(50, "Validate every this many steps (and at the end).")
    eval_batches: int = _f(10, "Validation batches per evaluation.")
    epochs: float = _f(
        5.0,
        "Passes over the training split. One of max_steps and epochs sets how long training "
        "runs, the other is 0: epochs > 0 trains ceil(epochs * training examples / (nproc * "
        "batch_size * grad_accum)) steps. 5 (the book's) with batch 16 and lr 5e-4 reaches "
        "96.3% on the balanced SMS-spam protocol (bench_classify).",
    )
    protocol: Literal["stratified", "balanced"] = _f(
        "stratified",
        "stratified: every class split in the same proportions (the class balance kept); "
        "balanced: the book's protocol (every class undersampled to the smallest one's count, "
        "seeded, shuffled, then cut train / val / test in order).",
    )
    val_fraction: float = _f(0.1, "Share of the records held out for validation.")
    test_fraction: float = _f(0.2, "Share of the records held out for the final test.")
    max_length: int = _f(
        0,
        "Truncate texts to this many tokens (0: the longest training text, at most the "
        "model's context).",
    )
    lora_targets: list[str] = _f(  # noqa: RUF009
        ["c_attn", "c_proj", "c_fc", "head"],
        "Modules LoRA adapts: c_attn (query/key/value, one adapter each), c_proj (attention "
        "and MLP output projections; attn.c_proj or mlp.c_proj for one of them), c_fc (MLP "
        "input), head (the classifier head: frozen at its initialisation plus an adapter; "
        "without it the head trains whole).",
    )

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
        _require(
            self.batch_size <= TRAINING_LIMITS["batch_size"],
            "evaluate.batch_size",
            f"must be <= {TRAINING_LIMITS['batch_size']:,}",
        )
        _require_device(self.device, "evaluate.device")


def _setting(name: str, defaults: Mapping[str, Any] | None = LIBRARY, note: str = "") -> Any:
    """A field for the decoding setting `name`: its default from `defaults`
    (`gptpipe.decoding`'s default sets; None: unset), its help from the setting's own."""
    default = None if defaults is None else defaults[name]
    default = list(default) if isinstance(default, tuple) else default
    return _f(default, f"{FIELDS[name].help} {note}".strip())


def _settings_of(config: Any) -> dict[str, Any]:
    """The decoding settings among a config's fields (setting -> value)."""
    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if f.name in FIELDS}


def _check_settings(values: Mapping[str, Any], key: str) -> None:
    """`gptpipe.decoding.check` for params: the first setting out of its range is a
    ConfigError naming `key.setting`."""
    check(values, lambda setting: f"{key}.{setting}", ConfigError)


@dataclass
class DecodingConfig:
    """One entry of `sample.decoding`: a named way of decoding. Unset (null) fields take the
    section's keys: temperature <- sample.temperature, top_k <- sample.top_k,
    max_new_tokens <- sample.max_new_tokens, num_samples <- sample.num_samples."""

    name: str = _f("sample", "Label of the setting in samples.json and the report.")
    temperature: float | None = _setting("temperature", None, "Unset: sample.temperature.")
    top_k: int | None = _setting("top_k", None, "Unset: sample.top_k.")
    top_p: float = _setting("top_p")
    repetition_penalty: float = _setting("repetition_penalty")
    num_beams: int = _setting("num_beams")
    length_penalty: float = _setting("length_penalty")
    max_new_tokens: int | None = _setting("max_new_tokens", None, "Unset: sample.max_new_tokens.")
    num_samples: int | None = _setting(
        "num_samples", None, "Unset: sample.num_samples; deterministic settings give one."
    )
    stop: list[str] = _setting("stop")  # noqa: RUF009 (a list default: copied per entry)
    slide: int = _setting("slide")


def _check_decoding(key: str, d: DecodingConfig) -> None:
    """An entry's name, and its settings by `gptpipe.decoding.check` (naming `key.field`)."""
    _require(bool(d.name.strip()), f"{key}.name", "must not be empty")
    _check_settings(_settings_of(d), key)


def default_decoding() -> list[DecodingConfig]:
    """sample.decoding's default (params.yaml lists the same)."""
    return [
        DecodingConfig("greedy", temperature=0.0),
        DecodingConfig("sample"),
        DecodingConfig("nucleus", top_k=0, top_p=0.9, repetition_penalty=1.2),
        DecodingConfig("beam", temperature=0.0, num_beams=4),
    ]


@dataclass
class SampleConfig:
    """`sample`: text sampled from the models."""

    prompts: list[str] = _f(["The ", "def ", "Return the"], "Prompts to continue.")  # noqa: RUF009
    max_new_tokens: int = _setting("max_new_tokens", SAMPLE)
    temperature: float = _setting("temperature", SAMPLE)
    top_k: int = _setting("top_k", SAMPLE)
    num_samples: int = _setting(
        "num_samples",
        SAMPLE,
        "Here: per prompt and sampled setting (deterministic settings give one); 0 is also "
        "taken, and leaves the sampled settings out.",
    )
    seed: int = _setting("seed", SAMPLE)
    device: str = _f("auto", "auto, cpu, cuda or cuda:N.")
    attention_prompt: str = _f(
        "Return a new list containing all items from the iterable in ascending order.",
        "Text whose attention maps (every head of every layer) are drawn, read by the most "
        "trained language model given (the instruction-tuned one if any, else the last); "
        "empty: the first of sample.prompts.",
    )
    decoding: list[DecodingConfig] = field(
        default_factory=default_decoding,
        metadata={
            "help": "Decoding settings, each sampled from every model: a list of {name, "
            "temperature, top_k, top_p, repetition_penalty, num_beams, length_penalty, "
            "max_new_tokens, num_samples, stop, slide}; unset keys take temperature, top_k, "
            "max_new_tokens and num_samples from this section."
        },
    )

    def __post_init__(self) -> None:
        _require(len(self.prompts) >= 1, "sample.prompts", "must list at least one prompt")
        # num_samples 0 is this section's own switch (no sampled continuations: only the
        # deterministic settings run); any other count is checked as every num_samples is.
        _check_settings(_settings_of(self) | {"num_samples": self.num_samples or None}, "sample")
        _require_device(self.device, "sample.device")
        _require(len(self.decoding) >= 1, "sample.decoding", "must list at least one setting")
        names = [d.name for d in self.decoding]
        _require(len(set(names)) == len(names), "sample.decoding", f"names repeat: {names}")
        for i, d in enumerate(self.decoding):
            _check_decoding(f"sample.decoding[{i}]", d)


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


class DuplicateKey(yaml.YAMLError):
    """A mapping that holds one key twice. PyYAML would keep the last value without a word,
    while DVC's YAML reader refuses the whole file (so `dvc repro` and `dvc exp run` stop):
    params are read as DVC reads them."""


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a key given twice in one mapping (`DuplicateKey`,
    naming the key with the dotted path from `root`: `pretrain.seed`, `sample.decoding[0]`)."""

    root = ""

    def construct_document(self, node: yaml.Node) -> Any:
        _refuse_duplicates(self, node, self.root)
        return super().construct_document(node)


_MERGE = "tag:yaml.org,2002:merge"  # `<<: *anchor`: its keys may be set again beside it


def _refuse_duplicates(loader: yaml.SafeLoader, root: yaml.Node, path: str) -> None:
    """Raise DuplicateKey, naming the dotted key (`root` being at `path`) and its lines, where
    a mapping under `root` holds one key twice (walked without recursion: a document may be
    as deep as the parser allows)."""
    stack: list[tuple[yaml.Node, str]] = [(root, path)]
    visited: set[int] = set()  # an alias is the node it names: walk each once
    while stack:
        node, where = stack.pop()
        if id(node) in visited:
            continue
        visited.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend((item, f"{where}[{i}]") for i, item in enumerate(node.value))
        elif isinstance(node, yaml.MappingNode):
            lines: dict[Any, int] = {}
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE:
                    stack.append((value_node, where))
                    continue
                key = loader.construct_object(key_node, deep=True)
                name = f"{where}.{key}" if where else str(key)
                line = key_node.start_mark.line + 1
                try:
                    first = lines.get(key)
                except TypeError:  # an unhashable key: the constructor refuses it
                    continue
                if first is not None:
                    at = f"line {line}" if first == line else f"lines {first} and {line}"
                    raise DuplicateKey(f"key {name!r} given twice ({at})")
                lines[key] = line
                stack.append((value_node, name))


def _strict_load(text: str, path: str = "") -> Any:
    """The YAML document in `text` (the value of the params key `path`, or a whole file),
    read by `_StrictLoader`."""
    loader = _StrictLoader(text)
    loader.root = path
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def parse_override(text: str) -> tuple[str, Any]:
    """Parse one `-S key=value` (value in YAML syntax, as `dvc exp run -S` takes it; a value
    that is not YAML is a string, as there)."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or "." not in key:
        raise BadInput(
            f"override {text!r}: expected SECTION.KEY=VALUE, for example pretrain.max_steps=10"
        )
    try:
        value = _strict_load(raw, key) if raw.strip() else ""
    except DuplicateKey as exc:
        raise BadInput(f"override {key!r}: {exc}") from None
    except yaml.YAMLError:
        value = raw
    except RecursionError:
        raise BadInput(f"override {key!r}: value nested too deeply") from None
    except ValueError as exc:  # an integer of more digits than Python converts
        raise BadInput(f"override {key!r}: not a usable value ({exc})") from None
    return key, value


def read_params(path: Path | str, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Read params.yaml (missing file: empty) and apply `-S` overrides; check every key exists."""
    path = Path(path)
    raw: Any = {}
    if path.exists():
        raw = _load_yaml(path)
    elif path.name != "params.yaml" or path.parent != Path():
        raise BadInput(f"{path}: params file not found")
    if not isinstance(raw, dict):
        raise BadInput(f"{path}: expected a mapping of sections at the top level")
    unknown = [str(k) for k in raw if k not in SECTIONS]
    if unknown:
        raise BadInput(f"{path}: unknown section {unknown[0]!r}; allowed: {', '.join(SECTIONS)}")
    params = {k: (dict(v) if isinstance(v, dict) else v) for k, v in raw.items()}
    for text in overrides:
        key, value = parse_override(text)
        section, _, name = key.partition(".")
        check_key(section, name)
        target = params.setdefault(section, {})
        if not isinstance(target, dict):
            raise ConfigError(section, "must be a mapping")
        target[name] = value
    return params


def read_params_text(path: Path) -> str:
    """The text of a params file; unreadable or non-UTF-8 bytes are bad input naming it."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except OSError as exc:
        raise BadInput(os_message(exc, path)) from None


def parse_params(text: str, origin: str) -> Any:
    """The YAML document of a params file's text ({} when empty), read as DVC reads it (a
    key twice in one mapping is refused); malformed, absurdly nested or unusable text is bad
    input naming `origin`. Every params file is read through here: the stages' `read_params`
    and `gptpipe preset`, which also checks what it writes with it."""
    try:
        return _strict_load(text) or {}
    except DuplicateKey as exc:
        raise BadInput(f"{origin}: {exc}; DVC cannot read such a file") from None
    except yaml.YAMLError as exc:
        raise BadInput(f"{origin}: not valid YAML ({str(exc).splitlines()[0]})") from None
    except RecursionError:
        raise BadInput(f"{origin}: nested too deeply to be a params file") from None
    except ValueError as exc:  # an integer of more digits than Python converts
        raise BadInput(f"{origin}: not a usable params file ({exc})") from None


def _load_yaml(path: Path) -> Any:
    """The YAML document in `path` (see `read_params_text` and `parse_params`)."""
    return parse_params(read_params_text(path), str(path))


def check_key(section: str, name: str) -> None:
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
        check_key(section, str(name))
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
        mappings = [o for o in options if dataclasses.is_dataclass(o)]
        if isinstance(value, dict) and len(mappings) == 1:  # its own errors name the key
            return _coerce(key, value, mappings[0])
        for option in options:
            if option is type(None):
                continue
            with contextlib.suppress(ConfigError):  # the next option may take it
                return _coerce(key, value, option)
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
    if dataclasses.is_dataclass(annotation) and isinstance(annotation, type):
        return _coerce_dataclass(key, value, annotation)
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
            value = float(value)  # PyYAML reads 3e-4 as a string; YAML 1.2 (and DVC) as a float
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(key, f"expected a number, got {value!r}")
        if isinstance(value, int) and abs(value) > 2**1000:
            raise ConfigError(
                key, f"must be a finite number, not an integer of {value.bit_length()} bits"
            )
        if not math.isfinite(value):
            raise ConfigError(key, f"must be a finite number, not {value}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(key, f"expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported annotation {annotation!r} for {key}")


def _coerce_dataclass(key: str, value: Any, cls: type) -> Any:
    """A mapping of a nested dataclass's fields (an entry of a list such as sample.decoding)."""
    if isinstance(value, cls):
        return value
    if not isinstance(value, dict):
        raise ConfigError(key, f"expected a mapping, got {value!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for name, item in value.items():
        if name not in names:
            raise ConfigError(f"{key}.{name}", f"unknown key; allowed: {', '.join(names)}")
        kwargs[name] = _coerce(f"{key}.{name}", item, hints[name])
    return cls(**kwargs)


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
        if dataclasses.is_dataclass(default):  # a nested mapping, as params.yaml writes it
            default = dataclasses.asdict(default)  # type: ignore[arg-type]
        lines.append(f"  {section}.{f.name} = {default!r}: {f.metadata.get('help', '')}")
    return "\n\n".join(lines)


def to_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as a plain dict (for metrics and config.json)."""
    return dataclasses.asdict(config)
