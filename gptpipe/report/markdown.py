"""The run report as Markdown, a report card a person reads top to bottom.

It renders what `gptpipe.report.inputs` read from earlier stages' artifacts; a missing input
is shown as "not run" rather than failing, so the report also works on a partial run.
Sections, in order: summary, params, environment, data, tokenizer, training, classification,
instruction responses, attention, parameters, samples, evaluation, change against the last
committed run, wall time.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from gptpipe.model.gpt import GPT, GPTConfig
from gptpipe.model.params import PARAM_GROUPS, block_breakdown, head_is_tied
from gptpipe.report.figures import STAGE_NAMES, TITLES, confusion_counts
from gptpipe.report.history import metric_changes
from gptpipe.report.inputs import RUN_FILES, STAGES, ModelEntry, ReportInputs
from gptpipe.report.samples import samples_table
from gptpipe.report.text import NOT_RUN, fmt, table

# Params a reader needs to know what was run, as the stages recorded them (reports/runs).
KEY_PARAMS = (
    "data.corpus",
    "data.instruct",
    "data.classify",
    "tokenizer.kind",
    "tokenizer.vocab_size",
    "model.block_size",
    "model.n_layer",
    "model.n_head",
    "model.n_embd",
    "model.dropout",
    "model.vocab_size",
    "pretrain.max_steps",
    "pretrain.batch_size",
    "pretrain.grad_accum",
    "pretrain.learning_rate",
    "pretrain.dtype",
    "pretrain.device",
    "pretrain.nproc",
    "pretrain.strategy",
    "pretrain.keep",
    "base.source",
    "instruct.max_steps",
    "instruct.epochs",
    "instruct.learning_rate",
    "instruct.trainable",
    "instruct.keep",
    "instruct.nproc",
    "instruct.strategy",
    "classify.max_steps",
    "classify.epochs",
    "classify.learning_rate",
    "classify.trainable",
    "classify.keep",
    "classify.nproc",
    "classify.strategy",
    "evaluate.stride",
    "sample.temperature",
    "sample.top_k",
)
# Dense bf16 tensor-core peaks (FLOP/s) of common data-centre GPUs, by name fragment; the
# MFU column is left empty on other devices rather than guessed.
GPU_PEAK_BF16 = (
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100", 989e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
    ("A10", 125e12),
    ("V100", 125e12),
    ("T4", 65e12),
)
# Published results the default data sets can be compared with, by (data.classify, base).
PUBLISHED = {
    ("sms-spam", "gpt2"): (
        0.9567,
        "95.67% test accuracy: GPT-2 124M, balanced SMS spam (Raschka, Build a Large "
        "Language Model (From Scratch), ch. 6)",
    ),
}


# --------------------------------------------------------------------------- helpers


def _rel(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path, start)).as_posix()


def _get(params: dict[str, Any], dotted: str) -> Any:
    section, _, key = dotted.partition(".")
    values = params.get(section)
    return values.get(key) if isinstance(values, dict) else None


def _model(inputs: ReportInputs, name: str) -> ModelEntry | None:
    for entry in inputs.models:
        if entry.name == name and entry.info is not None:
            return entry
    return None


def base_source(inputs: ReportInputs) -> str:
    """Which base model the fine-tunings started from: the base folder's provenance first
    (it is what was used), else the params."""
    entry = _model(inputs, "base")
    if entry is not None and entry.info is not None:
        meta = entry.info.meta
        if meta.get("stage") == "weights" and meta.get("source"):
            return str(meta["source"])
        if meta.get("stage") == "pretrain":
            return "pretrain"
    return str(_get(inputs.params, "base.source") or NOT_RUN)


def pretrain_skipped(inputs: ReportInputs) -> bool:
    return bool(inputs.runs.get("pretrain", {}).get("skipped"))


def flops_per_token(config: GPTConfig) -> float:
    """Training FLOPs per token: 6 per parameter (forward + backward; position embeddings
    excluded, they are a lookup) plus attention's 12 * layers * context * width (PaLM, app. B)."""
    with_wte = _params_total(config) - config.block_size * config.n_embd
    return 6.0 * with_wte + 12.0 * config.n_layer * config.block_size * config.n_embd


def _params_total(config: GPTConfig) -> int:
    import torch

    with torch.device("meta"):
        model = GPT(config)
    return sum(p.numel() for p in model.parameters())


def gpu_peak(environment: dict[str, Any]) -> tuple[str, float] | None:
    gpus = environment.get("gpus") or []
    if not gpus:
        return None
    name = str(gpus[0].get("name", ""))
    for fragment, peak in GPU_PEAK_BF16:
        if fragment in name:
            return name, peak
    return None


# --------------------------------------------------------------------------- summary


NATS_PER_TOKEN = "nats/token"
FRACTION = "fraction"


def summary_rows(inputs: ReportInputs) -> list[list[str]]:
    """The headline figures: [stage, metric, value, unit, reference], from the run details
    each stage wrote (reports/runs/<stage>.json)."""
    runs = inputs.runs
    rows: list[list[str]] = []
    pre = runs.get("pretrain")
    vocab = (inputs.manifest or {}).get("vocab_size")
    if pretrain_skipped(inputs):
        rows.append(["pretrain", "skipped", f"base.source: {base_source(inputs)}", "", ""])
    elif pre is None:
        rows.append(["pretrain", "train / val loss", NOT_RUN, "", ""])
    else:
        uniform = f"uniform guess {fmt(math.log(vocab))}" if vocab else ""
        rows.append(
            ["pretrain", "train loss (last steps)", fmt(pre.get("train_loss")), NATS_PER_TOKEN, ""]
        )
        rows.append(["pretrain", "val loss", fmt(pre.get("val_loss")), NATS_PER_TOKEN, uniform])
        ref = f"uniform guess {fmt(int(vocab))}" if vocab else ""
        rows.append(
            ["pretrain", "val perplexity", fmt(pre.get("val_perplexity")), "per token", ref]
        )
    rows.append(["weights", "base model", base_source(inputs), "", ""])
    rows += _evaluate_rows(_evaluated(inputs))
    rows += _instruct_rows(runs.get("instruct"), inputs.responses)
    rows += _classify_rows(inputs, runs.get("classify"))
    return rows


def _evaluated(inputs: ReportInputs) -> dict[str, dict[str, Any]]:
    """{model: figures} of the evaluate stage's run details."""
    details = inputs.runs.get("evaluate") or {}
    return {k: v for k, v in details.items() if isinstance(v, dict) and k != "params"}


def _evaluate_rows(evaluation: dict[str, dict[str, Any]]) -> list[list[str]]:
    if not evaluation:
        return [["evaluate", "perplexity, bits per byte", NOT_RUN, "", ""]]
    rows = []
    base = evaluation.get("base")
    for model, values in evaluation.items():
        ppl_ref = bpb_ref = ""
        if model != "base" and base is not None:
            ppl_ref = f"untuned base {fmt(base.get('perplexity'))}"
            bpb_ref = f"untuned base {fmt(base.get('bits_per_byte'))}"
        ppl = fmt(values.get("perplexity"))
        rows.append(["evaluate", f"{model}: val perplexity", ppl, "per token", ppl_ref])
        bpb = fmt(values.get("bits_per_byte"))
        rows.append(["evaluate", f"{model}: bits per byte", bpb, "bits/byte", bpb_ref])
    return rows


def _instruct_rows(
    ins: dict[str, Any] | None, responses: list[dict[str, Any]] | None
) -> list[list[str]]:
    if ins is None:
        return [["instruct", "val loss", NOT_RUN, "", ""]]
    unit = "nats/response token"
    rows = [["instruct", "train loss (last steps)", fmt(ins.get("train_loss")), unit, ""]]
    for split in ("val", "test"):
        if f"{split}_loss" in ins:
            base_loss = ins.get(f"base_{split}_loss")
            ref = f"untuned base {fmt(base_loss)}" if base_loss is not None else ""
            rows.append(["instruct", f"{split} loss", fmt(ins[f"{split}_loss"]), unit, ref])
    tuned, untuned = _mean_rouge(responses)
    tuned = ins.get("test_rougeL", tuned)
    untuned = ins.get("base_test_rougeL", untuned)
    if tuned is not None:
        ref = f"untuned base {fmt(untuned)}" if untuned is not None else ""
        rows.append(["instruct", "mean ROUGE-L (test responses)", fmt(tuned), FRACTION, ref])
    if "test_exact" in ins:
        base_exact = ins.get("base_test_exact")
        ref = f"untuned base {fmt(base_exact)}" if base_exact is not None else ""
        rows.append(["instruct", "exact answers (test)", fmt(ins["test_exact"]), FRACTION, ref])
    return rows


def published_figure(inputs: ReportInputs) -> tuple[float, str] | None:
    """The published result this run can be held against: the same data set, the same base,
    and the protocol it was published under (the book's balanced one)."""
    if _get(inputs.params, "classify.protocol") != "balanced":
        return None
    return PUBLISHED.get((str(_get(inputs.params, "data.classify")), base_source(inputs)))


def _classify_rows(inputs: ReportInputs, cls: dict[str, Any] | None) -> list[list[str]]:
    if cls is None:
        return [["classify", "accuracy", NOT_RUN, "", ""]]
    rows = []
    published = published_figure(inputs)
    for split in ("train", "val", "test"):
        value = cls.get(f"{split}_accuracy")
        baseline = cls.get(f"majority_baseline_{split}", cls.get("majority_baseline"))
        refs = [f"majority baseline {fmt(baseline)}"] if baseline is not None else []
        untuned = cls.get(f"untuned_{split}_accuracy")
        refs += [f"untuned head {fmt(untuned)}"] if untuned is not None else []
        if split == "test" and published is not None:
            refs.append(f"published {fmt(published[0])}")
        rows.append(["classify", f"{split} accuracy", fmt(value), FRACTION, "; ".join(refs)])
    if "test_macro_f1" in cls:
        rows.append(["classify", "test macro F1", fmt(cls["test_macro_f1"]), FRACTION, ""])
    return rows


def _mean_rouge(responses: list[dict[str, Any]] | None) -> tuple[float | None, float | None]:
    """Mean ROUGE-L of the tuned responses and, where recorded, of the untuned base's."""
    if not responses:
        return None, None
    tuned = [float(r["rougeL"]) for r in responses if isinstance(r.get("rougeL"), int | float)]
    base = [
        float(r["base_rougeL"]) for r in responses if isinstance(r.get("base_rougeL"), int | float)
    ]
    mean = lambda xs: sum(xs) / len(xs) if xs else None  # noqa: E731
    return mean(tuned), mean(base)


def _summary_section(inputs: ReportInputs) -> list[str]:
    lines = ["## Summary", ""]
    lines += table(["stage", "metric", "value", "unit", "reference"], summary_rows(inputs))
    lines += [
        "",
        "Losses are mean cross-entropy in nats (natural-log units): per token, per response "
        "token for instruct (instruct.mask_prompt), per text for classify; perplexity is e to "
        "the loss; bits per byte divide the total loss in bits by the text's UTF-8 bytes. "
        "Val and test losses are those of the weights each stage kept (see Training). "
        "The DVC metrics (`dvc exp show`, `dvc metrics diff`) are pretrain.val_loss, "
        "base.bits_per_byte, instruct.rougeL and classify.test_accuracy; the rest is in "
        "reports/runs/<stage>.json.",
    ]
    published = published_figure(inputs)
    if published is not None and "classify" in inputs.runs:
        lines += ["", f"Published: {published[1]}."]
    return [*lines, ""]


# --------------------------------------------------------------------------- sections


def _params_section(params: dict[str, Any]) -> list[str]:
    lines = ["## Params", ""]
    if not params:
        return [*lines, f"No stage recorded its params: {NOT_RUN}.", ""]
    sections: dict[str, list[str]] = {}
    for key in KEY_PARAMS:
        value = _get(params, key)
        if value is None and not key.startswith("data."):
            continue
        section, _, name = key.partition(".")
        # as params.yaml has it (0.0005, not 5.000e-04); lists as YAML-like text
        shown = f"{value:g}" if isinstance(value, float) else fmt(value)
        shown = str(value) if isinstance(value, list) else shown
        sections.setdefault(section, []).append(f"{name} `{shown}`")
    rows = [[section, ", ".join(items)] for section, items in sections.items()]
    lines += table(["section", "key params"], rows)
    return [
        *lines,
        "",
        "As each stage ran (the `params` of reports/runs/<stage>.json): `-S` overrides "
        "included, and values the stage derived, such as max_steps from epochs and "
        "model.vocab_size from the tokenizer. Every key: `gptpipe <stage> --help`.",
        "",
    ]


def _environment_section(env: dict[str, Any]) -> list[str]:
    lines = ["## Environment", ""]
    if not env:
        return [*lines, "Not collected.", ""]
    git = env.get("git") or {}
    cpu = env.get("cpu") or {}
    commit = git.get("commit")
    dirty = " (dirty: tracked files differ)" if git.get("dirty") else " (clean)"
    state = NOT_RUN if commit is None else f"`{commit[:12]}`{dirty}"
    flags = cpu.get("flags") or {}
    has = [f for f, on in flags.items() if on]
    lacks = [f for f, on in flags.items() if not on]
    flag_text = ", ".join(has) or "none"
    if lacks:
        flag_text += f" (no {', '.join(lacks)})"
    gpus = env.get("gpus") or []
    gpu_text = (
        "; ".join(f"{g['name']} ({g['memory_bytes'] / 2**30:.0f} GiB)" for g in gpus)
        if gpus
        else "none"
    )
    memory = env.get("memory_bytes")
    rows = [
        ["git commit", "not a git checkout" if commit is None else state],
        ["CPU", str(cpu.get("model") or "unknown")],
        ["CPU flags", flag_text],
        ["cores / threads", f"{fmt(cpu.get('cores'))} / {fmt(cpu.get('threads'))}"],
        ["GPU", gpu_text + (f", CUDA {env['cuda']}" if gpus and env.get("cuda") else "")],
        ["RAM", f"{memory / 2**30:.1f} GiB" if memory else "unknown"],
        ["OS", str(env.get("os"))],
        ["Python", str(env.get("python"))],
    ]
    for name, version in (env.get("packages") or {}).items():
        rows.append([name, version or "not installed"])
    lines += table(["", "value"], rows)
    lines += [
        "",
        "Collected when the report was written: under one `dvc repro`, the machine the stages "
        "ran on.",
    ]
    return [*lines, ""]


def _data_section(inputs: ReportInputs) -> list[str]:
    lines = ["## Data", ""]
    prov = inputs.provenance
    if prov is None:
        lines += [f"Provenance: {NOT_RUN} (no data/raw/provenance.json).", ""]
    else:
        rows = []
        for kind in ("corpus", "instruct", "classify"):
            entry = prov.get(kind)
            if not isinstance(entry, dict):
                continue
            output = entry.get("output") or {}
            counts = entry.get("counts") or {}
            count_text = ", ".join(
                f"{k} {fmt(v)}" for k, v in counts.items() if not isinstance(v, dict | list)
            )
            rows.append(
                [
                    kind,
                    str(entry.get("source")),
                    str(entry.get("location") or entry.get("url") or ""),
                    str(entry.get("license") or "unknown"),
                    f"`{str(output.get('sha256', ''))[:16]}`",
                    fmt(output.get("bytes")),
                    count_text,
                ]
            )
        header = ["data", "source", "from", "license", "sha256", "bytes", "counts"]
        lines += [*table(header, rows), ""]
    manifest = inputs.manifest
    if manifest is None:
        return [*lines, f"Token shards: {NOT_RUN} (no data/shards/manifest.json).", ""]
    splits = manifest.get("splits") or {}
    rows = [[split, fmt((info or {}).get("tokens"))] for split, info in splits.items()]
    tokens, corpus_bytes = manifest.get("tokens"), manifest.get("corpus_bytes")
    rows.append(["total", fmt(tokens)])
    lines += ["Tokens per split (data/shards/manifest.json):", ""]
    lines += table(["split", "tokens"], rows)
    if tokens and corpus_bytes:
        lines += [
            "",
            f"Corpus: {fmt(corpus_bytes)} bytes, {fmt(manifest.get('documents'))} "
            f"documents, {corpus_bytes / tokens:.3f} bytes per token, stored as "
            f"{manifest.get('dtype')}.",
        ]
    return [*lines, ""]


def _tokenizer_section(inputs: ReportInputs) -> list[str]:
    lines = ["## Tokenizer", ""]
    tok = inputs.tokenizer
    if tok is None:
        return [*lines, f"{NOT_RUN} (no tokenizer.json).", ""]
    specials = tok.get("special_tokens") or {}
    rows = [
        ["kind", str(tok.get("kind"))],
        ["vocabulary", fmt(tok.get("n_vocab"))],
        ["split pattern", str(tok.get("pattern"))],
        ["special tokens", ", ".join(f"`{t}` ({i})" for t, i in specials.items()) or "none"],
    ]
    val = (inputs.runs.get("evaluate") or {}).get("base")
    if isinstance(val, dict) and val.get("tokens") and val.get("bytes"):
        rows.append(
            [
                "compression on validation text",
                f"{val['bytes'] / val['tokens']:.3f} bytes per token",
            ]
        )
    return [*lines, *table(["", "value"], rows), ""]


def _training_section(
    inputs: ReportInputs, figures: dict[str, list[str]], figures_dir: Path, report_path: Path
) -> list[str]:
    lines = ["## Training", ""]
    peak = gpu_peak(inputs.environment)
    for stage in STAGES:
        lines += [f"### {STAGE_NAMES[stage]}", ""]
        run = inputs.runs.get(stage)
        if run is not None and run.get("skipped"):
            lines += [f"Skipped: {run.get('reason', 'nothing to train')}.", ""]
            continue
        if run is None:
            lines += [f"{NOT_RUN} (no run details).", ""]
            continue
        lines += [*table(["", "value"], _training_rows(inputs, stage, run, peak)), ""]
        for name in figures.get(stage, []):
            if name.endswith("_confusion.png"):
                continue
            kind = Path(name).stem.split("_", 1)[1]
            link = _rel(figures_dir / name, report_path.parent)
            lines += [f"![{STAGE_NAMES[stage]}: {TITLES.get(kind, kind)}]({link})", ""]
    lines += [
        "Model FLOP/s count 6 FLOPs per parameter and token plus attention (PaLM's estimate) "
        "at the training tokens/s; MFU divides them by a known GPU's dense bf16 peak and is "
        "shown only there. Training validations score `eval_batches` batches of the val "
        "split; the whole-split losses of the fine-tunings score every record with the kept "
        "weights.",
        "",
    ]
    return lines


def _training_rows(
    inputs: ReportInputs, stage: str, run: dict[str, Any], peak: tuple[str, float] | None
) -> list[list[str]]:
    """The rows of one training stage: how long, how fast, where, and which weights it kept
    with their losses, each labelled with what it was measured on."""
    config = _stage_config(inputs, stage)
    tps = run.get("tokens_per_s")
    flops = mfu = ""
    if config is not None and isinstance(tps, int | float):
        achieved = flops_per_token(config) * tps
        flops = flop_rate(achieved)
        if peak is not None and str(run.get("device", "")).startswith("cuda"):
            mfu = f"{100 * achieved / peak[1]:.1f}% of {peak[0]}'s dense bf16 peak"
    params = (run.get("params") or {}).get(stage) or {}
    steps = fmt(run.get("steps"))
    epochs = params.get("epochs")
    if isinstance(epochs, int | float) and epochs > 0:
        steps += f" (from {stage}.epochs {epochs:g})"
    elif isinstance(run.get("epochs"), int | float):
        steps += f" ({run['epochs']:.2f} passes over the training data)"
    batches = params.get("eval_batches")
    sampled = f"{batches} val batches" if batches else "sampled val batches"
    whole_split = stage != "pretrain"  # the fine-tunings rescore whole splits at the end
    rows = [
        ["steps", steps],
        ["tokens", fmt(run.get("tokens"))],
        ["training time", duration(run["seconds"]) if "seconds" in run else NOT_RUN],
        ["tokens/s (whole run)", f"{tps:,.0f}" if isinstance(tps, int | float) else NOT_RUN],
        ["model FLOP/s", flops or NOT_RUN],
    ]
    rows += [["MFU", mfu]] if mfu else []
    rows += [
        ["device", _device_text(run)],
        ["weights kept", _kept_text(run, params, stage)],
        ["train loss, last steps (nats)", fmt(run.get("train_loss"))],
        [
            "val loss, kept weights (nats): " + ("whole val split" if whole_split else sampled),
            fmt(run.get("val_loss")),
        ],
        [f"lowest val loss in training ({sampled})", _best_text(run)],
    ]
    return rows


def _kept_text(run: dict[str, Any], params: dict[str, Any], stage: str) -> str:
    kept = run.get("kept", params.get("keep"))
    if kept is None:
        return "not recorded"
    step = run.get("kept_step")
    at = f"step {fmt(step)}" if step is not None else "its step not recorded"
    if kept == "best":
        text = f"best: those of the lowest val loss ({at}; {stage}.keep: best)"
    else:
        text = f"final: after the last step ({at}; {stage}.keep: final)"
    if run.get("stopped_early"):
        text += ", stopped early"
    return text


def _best_text(run: dict[str, Any]) -> str:
    best = run.get("best_val_loss")
    return fmt(best) + (f" (step {fmt(run['best_step'])})" if "best_step" in run else "")


def flop_rate(flops: float) -> str:
    """FLOP/s with an SI prefix: 3.2 GFLOP/s, 410 TFLOP/s."""
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if flops >= scale:
            return f"{flops / scale:.3g} {prefix}FLOP/s"
    return f"{flops:.3g} FLOP/s"


def _device_text(run: dict[str, Any]) -> str:
    if "device" not in run:
        return "not recorded"
    processes = int(run.get("processes", 1))
    return str(run["device"]) + (f", {processes} processes" if processes > 1 else "")


def _stage_config(inputs: ReportInputs, stage: str) -> GPTConfig | None:
    name = {"pretrain": "base", "instruct": "instruct", "classify": "classify"}[stage]
    entry = _model(inputs, name)
    return entry.info.config if entry is not None and entry.info is not None else None


def class_scores(rows: list[dict[str, Any]]) -> list[list[str]]:
    """Per class: [label, precision, recall, F1, support] from confusion rows."""
    labels, counts = confusion_counts(rows)
    out = []
    for i, label in enumerate(labels):
        tp = counts[i][i]
        predicted = sum(counts[a][i] for a in range(len(labels)))
        actual = sum(counts[i])
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out.append([label, fmt(precision), fmt(recall), fmt(f1), fmt(actual)])
    return out


def _classification_section(
    inputs: ReportInputs, figures: dict[str, list[str]], figures_dir: Path, report_path: Path
) -> list[str]:
    lines = ["## Classification", ""]
    if not inputs.confusion:
        return [*lines, f"Confusion matrix: {NOT_RUN} (no confusion.json).", ""]
    if "classify_confusion.png" in figures.get("classify", []):
        link = _rel(figures_dir / "classify_confusion.png", report_path.parent)
        lines += [f"![classification confusion matrix]({link})", ""]
    lines += table(
        ["class", "precision", "recall", "F1", "support"], class_scores(inputs.confusion)
    )
    return [*lines, "", "On the test split (rows of confusion.json).", ""]


CELL_CHARS = 240  # longer texts are cut in the responses table
RESPONSE_ROWS = 10  # the table shows the first ones; the file holds them all


def _cell(text: Any) -> str:
    text = " ".join(str(text or "").split())
    return text if len(text) <= CELL_CHARS else text[: CELL_CHARS - 1] + "…"


def _responses_section(inputs: ReportInputs) -> list[str]:
    lines = ["## Instruction responses", ""]
    records = inputs.responses if inputs.responses is not None else inputs.examples
    if records is None:
        return [*lines, f"{NOT_RUN} (no instruction responses).", ""]
    if not records:
        return [*lines, "No held-out instructions were answered.", ""]
    with_base = any(r.get("base_response") is not None for r in records)
    header = ["#", "instruction", "reference", "tuned model", "ROUGE-L"]
    header += ["untuned base", "ROUGE-L"] if with_base else []
    rows = []
    for number, r in enumerate(records[:RESPONSE_ROWS], start=1):
        instruction = _cell(r.get("instruction"))
        if r.get("input"):
            instruction += f" (input: {_cell(r['input'])})"
        row = [str(number), instruction, _cell(r.get("reference")), _cell(r.get("response"))]
        row.append(fmt(r["rougeL"]) if "rougeL" in r else "-")
        if with_base:
            row.append(_cell(r.get("base_response")))
            row.append(fmt(r["base_rougeL"]) if "base_rougeL" in r else "-")
        rows.append(row)
    lines += table(header, rows)
    source = "reports/instruct/responses.json" if inputs.responses is not None else "examples"
    shown = f"the first {RESPONSE_ROWS} of {len(records)}" if len(records) > RESPONSE_ROWS else ""
    note = f"Greedy answers to held-out instructions ({shown + ', all in ' if shown else ''}"
    return [
        *lines,
        "",
        f"{note}{source}); ROUGE-L is the F-measure of the longest common "
        "subsequence of words with the reference (0 to 1).",
        "",
    ]


def _attention_section(inputs: ReportInputs, report_path: Path) -> list[str]:
    lines = ["## Attention", ""]
    record, folder = inputs.attention, inputs.attention_dir
    if record is None or folder is None:
        return [*lines, f"{NOT_RUN} (no attention maps: the sample stage draws them).", ""]
    layers = [str(name) for name in record.get("layers") or [] if (folder / str(name)).is_file()]
    if not layers:
        return [*lines, f"{NOT_RUN} (attention.json names no layer figure).", ""]
    shown = layers[-1]  # the last layer, nearest the output
    prompt = " ".join(str(record.get("prompt", "")).split())
    lines += [
        f"How each head of model `{record.get('model')}` (the most trained language model) "
        f"spreads its attention over the {fmt(record.get('tokens'))} tokens of the prompt "
        f"“{prompt}”, in its last layer ({len(layers)} layers, "
        f"{fmt(record.get('heads'))} heads each). Row: the token attending; column: the "
        "token it attends to (a causal model looks only backwards); each row sums to 1.",
        "",
        f"![attention of model {record.get('model')}, {Path(shown).stem}]"
        f"({_rel(folder / shown, report_path.parent)})",
        "",
    ]
    if len(layers) > 1:
        others = ", ".join(
            f"[layer {int(Path(name).stem.rsplit('_', 1)[-1])}]"
            f"({_rel(folder / name, report_path.parent)})"
            for name in layers[:-1]
        )
        lines += [f"The other layers: {others}.", ""]
    return lines


def block_rows(config: GPTConfig) -> list[list[str]]:
    """Parameters per block: embeddings, each block's attention, MLP and norms, the final
    norm and the head (tied to the embeddings for language models), and the total."""
    groups = block_breakdown(config)
    total = sum(groups.values())
    rows = [[key, fmt(n), f"{100 * n / total:.1f}%"] for key, n in groups.items()]
    if head_is_tied(config):
        rows.append(["head", "tied to wte", ""])
    return [*rows, ["total", fmt(total), "100%"]]


def _parameters_section(models: list[ModelEntry]) -> list[str]:
    lines = ["## Parameters", ""]
    if not models:
        return [*lines, f"No model folders given: {NOT_RUN}.", ""]
    header = ["model", "context", "layers", "heads", "width", "vocab", "classes"]
    header += [*PARAM_GROUPS.values(), "total"]
    rows = []
    for entry in models:
        if entry.info is None or entry.params is None:
            rows.append([entry.name, NOT_RUN] + [""] * (len(header) - 2))
            continue
        c = entry.info.config
        head = fmt(entry.params["head"]) if not head_is_tied(c) else "tied to embeddings"
        rows.append(
            [entry.name, fmt(c.block_size), fmt(c.n_layer), fmt(c.n_head), fmt(c.n_embd)]
            + [fmt(c.vocab_size), ", ".join(entry.info.labels) or "-"]
            + [fmt(entry.params[g]) for g in PARAM_GROUPS if g != "head"]
            + [head, fmt(entry.params["total"])]
        )
    lines += ["Per model:", "", *table(header, rows), ""]
    first = next((e for e in models if e.info is not None), None)
    if first is not None and first.info is not None:
        lines += [f"Per block of `{first.name}`:", ""]
        lines += [*table(["part", "parameters", "share"], block_rows(first.info.config)), ""]
    return lines


def _samples_section(inputs: ReportInputs) -> list[str]:
    lines = ["## Samples", ""]
    if inputs.samples is None:
        return [*lines, f"{NOT_RUN} (no samples)", ""]
    note = (
        "Continuations of each prompt (reports/samples: samples.md has them as code blocks, "
        "samples.json with seeds and token counts); ⏎ is a line break."
    )
    same = (inputs.runs.get("sample") or {}).get("same_weights") or {}
    if same:
        twins = "; ".join(f"`{a}` has the same weights as `{b}`" for a, b in same.items())
        note += f" Shown once: {twins}, so its samples are those of `{next(iter(same.values()))}`."
    return [*lines, note, "", *samples_table(inputs.samples, level=3)]


def _evaluation_section(inputs: ReportInputs) -> list[str]:
    lines = ["## Evaluation", ""]
    evaluation = _evaluated(inputs)
    if not evaluation:
        return [*lines, f"{NOT_RUN} (no evaluate run details).", ""]
    rows = []
    for model, d in evaluation.items():
        rows.append(
            [
                model,
                fmt(d.get("perplexity")),
                fmt(d.get("bits_per_byte")),
                fmt(d.get("tokens")),
                fmt(d.get("stride")),
                fmt(d.get("block_size")),
            ]
        )
    header = ["model", "perplexity (per token)", "bits per byte", "tokens scored", "stride"]
    lines += table([*header, "context (tokens)"], rows)
    lines += [
        "",
        "On the validation split, with a sliding window as long as the model's context that "
        "advances by `stride` tokens: each token is scored once, with up to context - 1 tokens "
        "before it. Bits per byte divide the total loss (in bits) by the text's UTF-8 bytes, "
        "so they compare across tokenizers; perplexity does not.",
        "",
    ]
    return lines


def _changes_section(inputs: ReportInputs) -> list[str]:
    lines = ["## Change against the last committed run", ""]
    if inputs.previous is None:
        return [
            *lines,
            "No committed run to compare with (HEAD has no dvc.lock). To keep this run as the "
            "baseline of later runs and experiments: `git add dvc.lock && git commit -m "
            "'Baseline run'`.",
            "",
        ]
    rows, same = [], 0
    for name, key, old, new, change in metric_changes(inputs.metrics, inputs.previous):
        if change == 0:
            same += 1
            continue
        shown = [fmt(v) if v is not None else "-" for v in (old, new)]
        rows.append([name, key, *shown, f"{change:+.4g}" if change is not None else "-"])
    note = "As `dvc metrics diff` computes it (HEAD's dvc.lock against this run)"
    if not rows:
        return [*lines, f"No metric changed ({same} compared). {note}.", ""]
    lines += table(["file", "metric", "committed", "this run", "change"], rows)
    return [*lines, "", f"{note}; {same} unchanged metrics not shown.", ""]


# DVC stage names of the run files (reports/runs/<name>.json), in pipeline order.
DVC_STAGES = {"instruct": "finetune-instruct", "classify": "finetune-classify"}


def duration(seconds: float) -> str:
    """Seconds for a reader: 40 ms, 1.25 s, 12.3 s, 754.2 s (12 min 34 s), 7,384.0 s
    (2 h 03 min)."""
    if seconds < 0.1:
        return f"{seconds * 1000:.0f} ms"
    text = f"{seconds:.2f} s" if seconds < 10 else f"{seconds:,.1f} s"
    if seconds >= 3600:
        hours, rest = divmod(round(seconds), 3600)
        return f"{text} ({hours} h {rest // 60:02d} min)"
    if seconds >= 60:
        minutes, rest = divmod(round(seconds), 60)
        return f"{text} ({minutes} min {rest:02d} s)"
    return text


def _wall_time_section(runs: dict[str, dict[str, Any]]) -> list[str]:
    lines = ["## Wall time", ""]
    rows, total, missing, partial = [], 0.0, [], False
    for name in RUN_FILES:
        stage = DVC_STAGES.get(name, name)
        run = runs.get(name)
        if run is None:
            rows.append([stage, NOT_RUN, ""])
            missing.append(stage)
            continue
        note = "skipped: nothing trained" if run.get("skipped") else ""
        seconds = run.get("wall_seconds")
        if not isinstance(seconds, int | float) and isinstance(run.get("seconds"), int | float):
            seconds, partial = run["seconds"], True  # a run file without the stage's wall time
            note = "training loop only"
        if isinstance(seconds, int | float):
            rows.append([stage, duration(seconds), note])
            total += seconds
        else:
            rows.append([stage, "not recorded", note])
            missing.append(stage)
    rows.append(
        ["**total**", f"**{duration(total)}**", f"without {', '.join(missing)}" if missing else ""]
    )
    lines += table(["stage", "wall time", "note"], rows)
    note = (
        "Each stage's `wall_seconds` in reports/runs/<stage>.json: from the start of its work "
        "to its outputs written (Python and library start-up not counted); the report stage "
        "itself is not counted."
    )
    if partial:
        note += " Where a stage recorded only its training loop's seconds, those are shown."
    return [*lines, "", note, ""]


def render_report(
    inputs: ReportInputs, figures: dict[str, list[str]], figures_dir: Path, report_path: Path
) -> str:
    """The report's Markdown text; image links are relative to the report's folder."""
    lines = [f"# {inputs.title}", ""]
    lines += _summary_section(inputs)
    lines += _params_section(inputs.params)
    lines += _environment_section(inputs.environment)
    lines += _data_section(inputs)
    lines += _tokenizer_section(inputs)
    lines += _training_section(inputs, figures, figures_dir, report_path)
    lines += _classification_section(inputs, figures, figures_dir, report_path)
    lines += _responses_section(inputs)
    lines += _attention_section(inputs, report_path)
    lines += _parameters_section(inputs.models)
    lines += _samples_section(inputs)
    lines += _evaluation_section(inputs)
    lines += _changes_section(inputs)
    lines += _wall_time_section(inputs.runs)
    return "\n".join(lines).rstrip() + "\n"
