"""The seed presets against their references, side by side in one run on this machine.

(a) seed003 shape: nanoGPT's README CPU run of character-level Shakespeare (4 layers, 4 heads,
    128 wide, context 64, batch 12, 2,000 iterations, no dropout), run by nanoGPT itself (commit
    3adf61e: --nanogpt DIR, a checkout of it, or extracted from a git mirror of nanoGPT named by
    the GPTPIPE_NANOGPT_GIT environment variable), against `gptpipe pretrain` with the seed003
    preset. Target: validation loss <= 1.886 in at most half nanoGPT's time.
(b) seed001 shape: GPT-2 BPE, 4/4/128, context 256. Reference: `transformers`'
    GPT2LMHeadModel under a plain PyTorch loop with nanoGPT's settings (AdamW betas 0.9/0.95,
    weight decay 0.1 on matrices, clip 1.0, fp32, batch 8, lr 1e-3 cosine to 1e-4 over 560
    iterations after 50 warm-up, no dropout, random windows of the train text). Ours: the
    seed001 preset (its schedule, dropout and early stopping on a val split of the train
    text). Target: held-out loss <= 4.75 within the reference's wall time: the median over
    --repeats seeds (pretrain.seed + repeat), with their range and the margin 4.75 - median;
    the reference (minutes) runs once, in the middle repeat.
(s) seed001's settings chosen without the held-out text: each candidate (--candidates or
    --candidates-file: the preset with overrides) trains on the first 90% of the training text
    and is scored on its last 10%, the validation cut; the lowest validation loss is chosen,
    and part b (in the same run, or with --reuse of this part's record) trains the chosen
    settings on the whole training text and records what was chosen on what. In both, the
    preset's early stopping watches the shard stage's val split (shard.val_fraction), a split
    of the text that stage is given: the training text (b) or the cut's first 90% (s).
(c) seed 001's own figure (training loss 3.5 after 2-3 hours at ~1,000 tokens/s): the training
    loss the seed001 run of part b reaches (it stops at its best held-out loss, above 3.5),
    and, in part d, the seed001 preset trained on past that point (early stopping off, its
    schedule stretched to --figure-steps): the training time it took to first log a loss
    <= 3.5 per GPT-2 token, and the loss it ends at.
(d) seed000 (part c): the seed000 preset on the offline document corpus (the seed's support
    tickets are not public); its figure, perplexity 1.21, is on its training set: reported
    beside ours on the training batches (the last logged training loss) and on the held-out
    documents (the shard stage's validation split, scored with the evaluate stage's method).

(e) seed003's training step alone: one optimizer step of the seed003 preset's model through
    the pipeline's own step function (`optimizer_step`: its fused AdamW, clipping, the run's
    autocast) against one of nanoGPT's model.py under nanoGPT's loop (its AdamW groups,
    clipping), at nanoGPT's batch (12) and at half of it, both in one process on the same
    batches, in alternating rounds (milliseconds a step, medians). It shows what part a's wall
    times are made of: the same step on both sides means the same time.
    Beside them, the step's floor on this machine: the matrix products of its Linear layers
    alone (forward, input gradient and weight gradient of each, in the dtype the run computes
    in), each shape timed on its own (the median of its calls). Where the floor at batch 12 is
    already half of nanoGPT's whole step or more, no step of nanoGPT's shape can take half its
    time here, whatever the code around the products does.

Both sides train on the first 90% of Tiny Shakespeare and are scored on the last 10%, every
held-out token once (consecutive windows of the context length, each token predicted from the
window's earlier tokens), by the same function. Part b's losses are nats per GPT-2 token
of the held-out text: ours is the total NLL of our tokenizer's encoding of that text divided
by the reference's token count, so a preset that cuts GPT-2's vocabulary down
(tokenizer.min_count, the dropped tokens spelled with the kept ones) is scored on the same
text by the same measure (its tokenizer is trained on the training text only). Times are wall
times of each side's training process (start-up, validation and saving included). Each side
runs in its own subprocess; with --repeats N the sides take turns at running first (part a's
variants included) and the figures are medians; in parts a and b our sides train under a new
seed in each repeat (pretrain.seed + repeat), so their median loss is over N seeds (each one's
loss is recorded too). Part a's --a-variants runs several variants of the preset beside it,
each in every repeat (the table shows the fastest that meets the target).

    flock /tmp/gptpipe-bench.lock .venv/bin/python benchmarks/bench_seeds.py
    .venv/bin/python benchmarks/bench_seeds.py --quick           # smoke run (seconds)
    .venv/bin/python benchmarks/bench_seeds.py --parts a --repeats 3
    .venv/bin/python benchmarks/bench_seeds.py --parts a --repeats 3 \
        --a-variants 'pretrain.max_steps=1800;pretrain.batch_size=10'
    .venv/bin/python benchmarks/bench_seeds.py --parts s --json select.json \
        --candidates 'preset;pretrain.learning_rate=0.003,pretrain.weight_decay=0.5'
    .venv/bin/python benchmarks/bench_seeds.py --parts b --repeats 3 --reuse select.json
    .venv/bin/python benchmarks/bench_seeds.py --parts c --reuse earlier.json   # see --reuse
    .venv/bin/python benchmarks/bench_seeds.py --parts d --figure-steps 4000  # seed 001's 3.5
    .venv/bin/python benchmarks/bench_seeds.py --parts e          # seed003's step alone

Each part is its own side-by-side comparison and records its own date and machine, so parts
measured in separate runs (part b alone, one seed, took 35 minutes on a 2-core AVX2 EPYC) can
be kept together: with --reuse FILE, the parts not run now are copied from FILE, an earlier
--json of this script (or run_all's record of it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

REPO = Path(__file__).resolve().parents[1]
Overrides = dict[str, dict[str, Any]]  # section: {key: value}, over a preset's params
# A git mirror of nanoGPT (a bare repository) to extract commit NANOGPT_COMMIT from: the
# GPTPIPE_NANOGPT_GIT environment variable, else --nanogpt names a checkout of it.
NANOGPT_GIT = os.environ.get("GPTPIPE_NANOGPT_GIT")
NANOGPT_COMMIT = "3adf61e1"
PYTHON = sys.executable
FIGURE = "seed001_figure"  # part d's record
STEP = "seed003_step"  # part e's record
SELECT = "seed001_select"  # part s's record
# part: record
PARTS = {"a": "seed003", "s": SELECT, "b": "seed001", "c": "seed000", "d": FIGURE, "e": STEP}
GPTPIPE = [PYTHON, "-m", "gptpipe"]

# (a) nanoGPT README's CPU command line, and the iterations of a quick run.
NANO_ARGS = [
    "--device=cpu",
    "--compile=False",
    "--eval_iters=20",
    "--log_interval=1",
    "--block_size=64",
    "--batch_size=12",
    "--n_layer=4",
    "--n_head=4",
    "--n_embd=128",
    "--dropout=0.0",
    "--always_save_checkpoint=True",
]
# (b) the reference recipe.
REF_B = {
    "iters": 560,
    "warmup": 50,
    "lr": 1e-3,
    "min_lr": 1e-4,
    "batch": 8,
    "block": 256,
    "n_layer": 4,
    "n_head": 4,
    "n_embd": 128,
}
# The environment of every measured process (--threads sets OMP_NUM_THREADS for both sides).
CHILD_ENV = dict(os.environ)
TARGETS = {"seed003_val_loss": 1.886, "seed003_time_ratio": 0.5, "seed001_loss": 4.75}


# --------------------------------------------------------------------------- data


def corpus_text(work: Path, corpus: str = "tinyshakespeare") -> str:
    """A named corpus (Tiny Shakespeare by default) through the pipeline's download stage (the
    mirror folder first)."""
    out = work / ("raw" if corpus == "tinyshakespeare" else f"raw-{corpus}")
    if not (out / "corpus.txt").is_file():
        params = work / f"download-{corpus}.yaml"
        default = REPO.parent / "shared" / "mirror"  # beside the checkout, as the Makefile's
        mirror = os.environ.get("GPTPIPE_MIRROR") or (str(default) if default.is_dir() else None)
        data = {"corpus": corpus, "instruct": "stdlib", "classify": "stdlib"}
        if mirror:
            data |= {"mirror": mirror, "instruct": "alpaca-instructions", "classify": "sms-spam"}
        params.write_text(json.dumps({"data": data}))
        run([*GPTPIPE, "download", "--params", str(params), "--out", str(out)])
    return (out / "corpus.txt").read_text(encoding="utf-8")


TRAIN_SHARE = 0.9  # of the corpus for training (the rest held out); of the training text to fit


def split(text: str, work: Path, quick: bool) -> tuple[Path, Path]:
    """The first 90% of the characters (training) and the last 10% (held out), as files."""
    if quick:
        text = text[:60_000]
    cut = int(len(text) * TRAIN_SHARE)
    train, held = work / "train.txt", work / "heldout.txt"
    train.write_text(text[:cut], encoding="utf-8")
    held.write_text(text[cut:], encoding="utf-8")
    return train, held


def validation_cut(train: Path, work: Path) -> tuple[Path, Path]:
    """The training text split again for choosing settings: its first 90% (what candidates
    train on) and its last 10% (the validation cut they are scored on), as files. Both lie
    inside the training text, so the held-out text after it plays no part in the choice."""
    text = train.read_text(encoding="utf-8")
    cut = int(len(text) * TRAIN_SHARE)
    fit, val = work / "select-train.txt", work / "select-val.txt"
    fit.write_text(text[:cut], encoding="utf-8")
    val.write_text(text[cut:], encoding="utf-8")
    return fit, val


# --------------------------------------------------------------------------- subprocesses


def run(cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """Run a command; its stdout (an error with the tail of stderr if it fails)."""
    done = subprocess.run(
        cmd, cwd=cwd, env=env or CHILD_ENV, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(cmd[:4])}... exited {done.returncode}:\n{done.stderr[-3000:]}"
        )
    return done.stdout


def timed(
    cmd: list[str], cwd: Path | None = None, env: dict[str, str] | None = None
) -> tuple[float, str]:
    started = time.perf_counter()
    output = run(cmd, cwd=cwd, env=env)
    return time.perf_counter() - started, output


def worker(name: str, *args: object) -> list[str]:
    """`python -m benchmarks.workers.NAME ARGS`: one of this benchmark's measurements in a
    fresh interpreter (run it with `worker_env()`); it prints its JSON result last."""
    return [PYTHON, "-m", f"benchmarks.workers.{name}", *map(str, args)]


def worker_env() -> dict[str, str]:
    """CHILD_ENV with the repository first on PYTHONPATH, so the workers are found however
    this script was started (`python benchmarks/bench_seeds.py` from anywhere, or -m)."""
    path = os.pathsep.join(filter(None, [str(REPO), CHILD_ENV.get("PYTHONPATH")]))
    return CHILD_ENV | {"PYTHONPATH": path}


# --------------------------------------------------------------------------- scoring


def score(kind: str, model: Path, tokens: Any, work: Path, path: Path | None = None) -> float:
    """Held-out loss (nats per token) of a model on `tokens`, in a fresh interpreter."""
    nats, scored = score_total(kind, model, tokens, work, path)
    return nats / scored


def score_total(
    kind: str, model: Path, tokens: Any, work: Path, path: Path | None = None
) -> tuple[float, int]:
    """(Total NLL in nats, tokens scored) of a model on `tokens`, in a fresh interpreter."""
    import numpy as np

    file = work / f"heldout-{kind}.npy"
    np.save(file, np.asarray(tokens, dtype=np.int64))
    out = run(worker("seeds_score", kind, model, file, *([path] if path else [])), env=worker_env())
    result = json.loads(out.strip().splitlines()[-1])
    return float(result["loss"]) * int(result["tokens"]), int(result["tokens"])


# --------------------------------------------------------------------------- ours


PIPELINE_SECTIONS = ("tokenizer", "shard", "model", "pretrain", "evaluate")


def resolved_params(name: str, overrides: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A preset's params with `overrides` over them, the sections its stages read here (keys
    of sibling features, LoRA or nucleus sampling, play no part in pretraining)."""
    from gptpipe.presets import load_preset

    params = {s: dict(v) for s, v in load_preset(name).params.items()}
    for section, values in overrides.items():
        params.setdefault(section, {}).update(values)
    return {k: v for k, v in params.items() if k in PIPELINE_SECTIONS}


def preset_params(name: str, work: Path, overrides: dict[str, dict[str, Any]]) -> Path:
    path = work / f"{name}.yaml"
    path.write_text(json.dumps(resolved_params(name, overrides)))
    return path


def ours(name: str, train: Path, work: Path, overrides: dict[str, dict[str, Any]]) -> dict:
    """tokenizer + shard + pretrain with a preset on the training text; pretrain timed."""
    root = work / f"ours-{name}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    params = preset_params(name, root, overrides)
    p = ["--params", str(params)]
    run([*GPTPIPE, "tokenizer", *p, "--corpus", str(train), "--out", str(root / "tok")])
    shards = ["--tokenizer", str(root / "tok"), "--out", str(root / "shards")]
    run([*GPTPIPE, "shard", *p, "--corpus", str(train), *shards])
    seconds, _ = timed(
        [
            *GPTPIPE, "pretrain", *p, "--shards", str(root / "shards"),
            "--tokenizer", str(root / "tok"), "--out", str(root / "model"),
            "--metrics", str(root / "metrics.json"), "--plots", str(root / "plots"),
            "--checkpoints", str(root / "ckpt"), "--details", str(root / "run.json"),
        ]
    )  # fmt: skip
    # headline metrics and the run's details (steps, best step, seconds) side by side
    metrics = json.loads((root / "metrics.json").read_text())
    metrics |= json.loads((root / "run.json").read_text())
    return {"seconds": seconds, "model": root / "model", "metrics": metrics, "root": root}


def encode_with_model(model: Path, text: Path) -> list[int]:
    """A text file's ids under a model folder's tokenizer (or a tokenizer folder's own)."""
    from gptpipe.tokenizer.folder import load_tokenizer

    return load_tokenizer(model).encode_ordinary(text.read_text(encoding="utf-8"))


def train_curve(root: Path, per_gpt2_token: float = 1.0) -> dict[str, Any]:
    """Final training loss, and training seconds until the first logged loss <= 3.5 (from
    the curve's throughput: each row covers log_interval steps of batch x context tokens).

    `per_gpt2_token`: our tokens per GPT-2 token of the training text, which turns a loss per
    our token into one per GPT-2 token (seed 001's figure is per GPT-2 token; a preset that
    cuts GPT-2's vocabulary down spells the dropped tokens with several of ours)."""
    import csv

    rows = list(csv.DictReader((root / "plots" / "train.csv").open()))
    params = json.loads(next(root.glob("seed*.yaml")).read_text())
    pretrain, model = params["pretrain"], params["model"]
    step_tokens = pretrain["batch_size"] * model["block_size"]
    elapsed, previous, reached = 0.0, 0, None
    for row in rows:
        step, tps = int(row["step"]), float(row["tokens_per_s"])
        if tps > 0:
            elapsed += (step - previous) * step_tokens / tps
        previous = step
        if reached is None and float(row["train_loss"]) * per_gpt2_token <= 3.5:
            reached = {"step": step, "train_seconds": round(elapsed, 1)}
    final = float(rows[-1]["train_loss"]) * per_gpt2_token
    return {"final_train_loss": final, "reached_3_5": reached, "per_gpt2_token": per_gpt2_token}


# --------------------------------------------------------------------------- references


def nanogpt_checkout(work: Path, given: Path | None) -> Path:
    """nanoGPT at commit 3adf61e: a given folder, or extracted from the git mirror."""
    if given is not None:
        return given
    target = work / "nanogpt"
    if not (target / "train.py").is_file():
        if NANOGPT_GIT is None or not Path(NANOGPT_GIT).is_dir():
            raise SystemExit(
                "nanoGPT not found: give --nanogpt DIR (a checkout of commit "
                f"{NANOGPT_COMMIT}), or GPTPIPE_NANOGPT_GIT=DIR (a git mirror of it)"
            )
        target.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "--git-dir", NANOGPT_GIT, "archive", NANOGPT_COMMIT],
            capture_output=True,
            check=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def nanogpt(nano: Path, text_path: Path, work: Path, iters: int) -> dict[str, Any]:
    """nanoGPT's README CPU run (its own prepare.py and train.py); train.py timed."""
    data = nano / "data" / "shakespeare_char"
    shutil.copy(text_path, data / "input.txt")
    run([PYTHON, "prepare.py"], cwd=data)
    out = work / "nano-out"
    shutil.rmtree(out, ignore_errors=True)
    args = [*NANO_ARGS, f"--max_iters={iters}", f"--lr_decay_iters={iters}", f"--out_dir={out}"]
    if iters < 250:
        args.append(f"--eval_interval={iters}")
    seconds, output = timed(
        [PYTHON, "train.py", "config/train_shakespeare_char.py", *args], cwd=nano
    )
    evals = re.findall(r"step (\d+): train loss ([\d.]+), val loss ([\d.]+)", output)
    import numpy as np

    held = np.fromfile(data / "val.bin", dtype=np.uint16)
    return {
        "seconds": seconds,
        "own_val_loss": float(evals[-1][2]),
        "heldout_loss": score("nanogpt", out / "ckpt.pt", held, work, path=nano),
    }


def reference_b(train_ids: list[int], work: Path, iters: int) -> dict[str, Any]:
    """The transformers GPT-2 under nanoGPT's loop and settings; the process timed."""
    import numpy as np

    file = work / "ref-train.npy"
    np.save(file, np.asarray(train_ids, dtype=np.int64))
    out = work / "ref-b"
    shutil.rmtree(out, ignore_errors=True)
    cfg = REF_B | {"iters": iters}
    seconds, output = timed(worker("seeds_ref_loop", json.dumps(cfg), file, out), env=worker_env())
    return {
        "seconds": seconds,
        "train_loss": json.loads(output.strip().splitlines()[-1])["train_loss"],
        "model": out,
    }


# --------------------------------------------------------------------------- the parts


def part_a(text: Path, train: Path, held: Path, work: Path, args: argparse.Namespace) -> dict:
    iters = 20 if args.quick else 2000
    nano = nanogpt_checkout(work, args.nanogpt)
    # nanoGPT runs its 2,000 iterations; ours the preset as it stands (its own max_steps: the
    # preset is chosen to reach the loss in fewer, cheaper steps), a smoke run a few steps
    over: dict[str, dict[str, Any]] = {}
    if args.quick:
        over["pretrain"] = {"max_steps": iters, "eval_interval": iters}
    # --a-variant / --a-variants: the preset with these overrides, each run beside the preset
    # in every repeat
    # (a smoke run keeps its few steps whatever a variant sets)
    quick = over if args.quick else {}
    variants = [_merged(_merged(over, v), quick) for v in seed003_variants(args)]
    params = {"ours": over} | {f"variant{i}": v for i, v in enumerate(variants)}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in ["ref", *params]}
    names = ["ref", *params]
    for repeat in range(args.repeats):
        for side in run_order(names, repeat):
            if side == "ref":
                runs["ref"].append(nanogpt(nano, text, work, iters))
                continue
            seeded = reseeded(params[side], repeat)
            got = ours("seed003", train, work, seeded) | {"seed": seeded["pretrain"]["seed"]}
            got["heldout_loss"] = score(
                "ours", got["model"], encode_with_model(got["model"], held), work
            )
            runs[side].append(got)
    refs, mine = runs["ref"], runs["ours"]
    ref_s = statistics.median(r["seconds"] for r in refs)
    preset = _seed003_side(mine, ref_s)
    result: dict[str, Any] = {
        "iterations": iters,
        "repeats": args.repeats,
        "nanogpt": {
            "seconds": ref_s,
            "val_loss_own_estimate": statistics.median(r["own_val_loss"] for r in refs),
            "heldout_loss": statistics.median(r["heldout_loss"] for r in refs),
        },
        "ours": {k: v for k, v in preset.items() if k not in ("time_ratio", "meets_target")},
        "time_ratio": preset["time_ratio"],
        "meets_target": preset["meets_target"],
    }
    if variants:
        sides = [
            _seed003_side(runs[f"variant{i}"], ref_s) | {"overrides": v}
            for i, v in enumerate(variants)
        ]
        result["variants"] = sides
        result["variant"] = sides[best_variant(sides)]  # the one the table shows
    return result


def seed003_variants(args: argparse.Namespace) -> list[dict[str, dict[str, Any]]]:
    """Part a's variants of the preset: --a-variant's items as one, then --a-variants' (parsed
    by main into args.a_variants)."""
    one = [_overrides(args.a_variant)] if args.a_variant else []
    return one + list(getattr(args, "a_variants", None) or [])


def best_variant(sides: list[dict[str, Any]]) -> int:
    """The variant to show: of those that meet the target, the fastest; else, of those within
    the loss target, the fastest; else the one with the lowest loss."""
    for fits in (
        lambda v: v["meets_target"],
        lambda v: v["heldout_loss"] <= TARGETS["seed003_val_loss"],
    ):
        within = [i for i, v in enumerate(sides) if fits(v)]
        if within:
            return min(within, key=lambda i: sides[i]["time_ratio"])
    return min(range(len(sides)), key=lambda i: sides[i]["heldout_loss"])


def reseeded(
    over: dict[str, dict[str, Any]], repeat: int, preset: str = "seed003"
) -> dict[str, dict[str, Any]]:
    """`over` with the preset's training seed moved on by `repeat`: a run on the CPU repeats its
    seed's loss exactly, so repeats of one seed measure only the time; over seeds the median
    loss is the recipe's, not one lucky (or unlucky) initialisation's. nanoGPT's train.py fixes
    its own seed (1337), so its side repeats its one loss."""
    from gptpipe.config import build_section
    from gptpipe.presets import load_preset

    preset_seed = build_section(load_preset(preset).params, "pretrain").seed
    base = over.get("pretrain", {}).get("seed", preset_seed)
    return {**over, "pretrain": {**over.get("pretrain", {}), "seed": base + repeat}}


def run_order(names: list[str], repeat: int) -> list[str]:
    """The sides of one repeat, rotated by the repeat's number: over len(names) repeats each
    side runs once in every position, so none always runs first or last (this machine's speed
    drifts over minutes, and a side always run last after the others' load would pay it)."""
    turn = repeat % len(names)
    return names[turn:] + names[:turn]


def _seed003_side(runs: list[dict[str, Any]], ref_s: float) -> dict[str, Any]:
    """Median seconds and held-out loss of one side of part a, its time ratio to nanoGPT's
    and whether that meets the target."""
    our_s = statistics.median(r["seconds"] for r in runs)
    our_loss = statistics.median(r["heldout_loss"] for r in runs)
    return {
        "seconds": our_s,
        "heldout_loss": our_loss,
        # one per repeat, each under its own training seed (see reseeded)
        "heldout_losses": [r["heldout_loss"] for r in runs],
        "seeds": [r["seed"] for r in runs],
        "val_loss": runs[-1]["metrics"]["val_loss"],
        "steps": runs[-1]["metrics"]["steps"],
        "time_ratio": our_s / ref_s,
        "meets_target": our_loss <= TARGETS["seed003_val_loss"]
        and our_s <= TARGETS["seed003_time_ratio"] * ref_s,
    }


def _overrides(
    items: list[str], base: dict[str, dict[str, Any]] | None = None
) -> dict[str, dict[str, Any]]:
    """SECTION.KEY=VALUE items (params.yaml values) over a copy of `base`."""
    from gptpipe.config import parse_override

    over = {section: dict(values) for section, values in (base or {}).items()}
    for item in items:
        key, value = parse_override(item)
        section, _, name = key.partition(".")
        over.setdefault(section, {})[name] = value
    return over


def _merged(
    base: dict[str, dict[str, Any]], over: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """`over`'s keys over a copy of `base`'s, section by section."""
    merged = {section: dict(values) for section, values in base.items()}
    for section, values in over.items():
        merged.setdefault(section, {}).update(values)
    return merged


def parse_candidates(text: str) -> list[dict[str, dict[str, Any]]]:
    """Candidate settings written `SECTION.KEY=VALUE,SECTION.KEY=VALUE;...`: one candidate per
    `;`, its overrides (params.yaml values) split at `,`; `preset` alone is the preset as it
    is. A value holding `,` or `;` (a list) goes in a --candidates-file instead."""
    from gptpipe.errors import BadInput

    candidates: list[Overrides] = []
    for item in text.split(";"):
        items = [part.strip() for part in item.split(",") if part.strip()]
        if not items:
            raise BadInput(f"{text!r}: an empty candidate (write preset for the preset as it is)")
        candidates.append({} if items == ["preset"] else _overrides(items))
    return candidates


def read_candidates(path: Path) -> list[dict[str, dict[str, Any]]]:
    """Candidate settings from a YAML file: a list, each item a mapping of `SECTION.KEY: VALUE`
    (or `SECTION: {KEY: VALUE}`), or `preset` for the preset as it is."""
    from gptpipe.config import parse_params, read_params_text
    from gptpipe.errors import BadInput

    doc = parse_params(read_params_text(path), str(path))
    if not isinstance(doc, list) or not doc:
        raise BadInput(f"{path}: expected a list of candidates (mappings of SECTION.KEY: VALUE)")
    candidates: list[Overrides] = []
    for number, item in enumerate(doc, 1):
        if item == "preset":
            candidates.append({})
            continue
        if not isinstance(item, dict):
            raise BadInput(f"{path}: candidate {number} is not a mapping (or preset)")
        over: dict[str, dict[str, Any]] = {}
        for key, value in item.items():
            section, dot, name = str(key).partition(".")
            if dot and name:
                over.setdefault(section, {})[name] = value
            elif isinstance(value, dict):
                over.setdefault(section, {}).update({str(k): v for k, v in value.items()})
            else:
                raise BadInput(f"{path}: candidate {number}: {key!r} is not SECTION.KEY")
        candidates.append(over)
    return candidates


def check_candidates(name: str, candidates: list[dict[str, dict[str, Any]]]) -> None:
    """Every candidate's params valid for the preset `name` (unknown keys, wrong types or
    values are bad input naming the key), before minutes of training find out."""
    from gptpipe.config import build_section

    for over in candidates:
        params = resolved_params(name, over)
        for section in over:
            build_section(params, section)


def summary(losses: list[float]) -> dict[str, Any]:
    """The median of losses over seeds and their range (min, max)."""
    return {
        "median": statistics.median(losses),
        "min": min(losses),
        "max": max(losses),
        "n": len(losses),
    }


def _quick_b() -> dict[str, dict[str, Any]]:
    """Part b's (and its selection's) overrides in a smoke run: a few steps."""
    return {
        "pretrain": {"max_steps": 10, "eval_interval": 5, "eval_batches": 2},
        "shard": {"val_fraction": 0.2},
    }


def _scored_ours(got: dict[str, Any], text: Path, gpt2_tokens: int, work: Path) -> float:
    """A seed001 model's loss on `text`, nats per GPT-2 token of it: the total NLL of our
    tokenizer's encoding of the text over the GPT-2 token count (the reference's), also where
    the preset cuts GPT-2's vocabulary down (tokenizer.min_count) and spells the tokens it
    dropped with the others."""
    nats, scored = score_total("ours", got["model"], encode_with_model(got["model"], text), work)
    got["scored_tokens"] = scored
    return nats / (gpt2_tokens - 1)


def part_select(train: Path, held: Path, work: Path, args: argparse.Namespace) -> dict:
    """seed001's settings chosen on a validation cut of the training text: each candidate
    (the preset with its overrides) trains on the training text's first 90% (its tokenizer,
    shards and early-stopping split all from that text) and is scored on the training text's
    last 10%; the held-out text is neither read nor scored. The lowest validation loss (the
    median over --select-repeats seeds) is chosen."""
    from gptpipe.tokenizer.folder import save_gpt2

    save_gpt2(work / "gpt2-tok")
    fit, val = validation_cut(train, work)
    val_tokens = len(encode_with_model(work / "gpt2-tok", val))
    base = _overrides(args.set or [], _quick_b() if args.quick else {})
    rows = []
    for over in args.candidates:
        # (a smoke run keeps its few steps whatever a candidate sets)
        params = _merged(_merged(base, over), _quick_b() if args.quick else {})
        runs = []
        for repeat in range(args.select_repeats):
            seeded = reseeded(params, repeat, "seed001")
            got = ours("seed001", fit, work, seeded)
            runs.append(
                {
                    "seed": seeded["pretrain"]["seed"],
                    "val_loss": _scored_ours(got, val, val_tokens, work),
                    "seconds": got["seconds"],
                    "steps": got["metrics"]["steps"],
                    "best_step": got["metrics"].get("best_step"),
                }
            )
        losses = [r["val_loss"] for r in runs]
        rows.append(
            {
                "overrides": over,
                "validation_loss": statistics.median(losses),
                "validation_losses": losses,
                "seeds": [r["seed"] for r in runs],
                "seconds": statistics.median(r["seconds"] for r in runs),
                "steps": [r["steps"] for r in runs],
                "best_steps": [r["best_step"] for r in runs],
                "params": resolved_params("seed001", params),
            }
        )
    chosen = min(range(len(rows)), key=lambda i: rows[i]["validation_loss"])
    corpus = len(train.read_text(encoding="utf-8")) + len(held.read_text(encoding="utf-8"))
    fit_chars, val_chars = (len(f.read_text(encoding="utf-8")) for f in (fit, val))
    return {
        "chosen_on": "validation cut of the training text (the held-out text not read)",
        "candidates": rows,
        "chosen": chosen,
        "chosen_overrides": rows[chosen]["overrides"],
        "base_overrides": base,
        # character ranges [start, end) in the corpus: the cut ends where the held-out begins
        "cut": {
            "corpus_chars": corpus,
            "fit_chars": [0, fit_chars],
            "validation_chars": [fit_chars, fit_chars + val_chars],
            "heldout_chars": [fit_chars + val_chars, corpus],
            "validation_gpt2_tokens": val_tokens,
        },
    }


def _same_settings(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Two resolved params alike but for the training seed (part b trains several)."""

    def unseeded(params: dict[str, Any]) -> dict[str, Any]:
        pretrain = {k: v for k, v in params.get("pretrain", {}).items() if k != "seed"}
        return params | {"pretrain": pretrain}

    return unseeded(a) == unseeded(b)


def part_b(
    train: Path, held: Path, work: Path, args: argparse.Namespace, chosen: dict | None = None
) -> dict:
    """The final run: the seed001 preset (with the settings `chosen` on the validation cut,
    a part_select record, where given) trained on the whole training text under --repeats
    seeds, each scored once on the held-out text; the transformers reference once."""
    from gptpipe.tokenizer.folder import load_tokenizer, save_gpt2

    save_gpt2(work / "gpt2-tok")
    train_ids = encode_with_model(work / "gpt2-tok", train)
    held_ids = encode_with_model(work / "gpt2-tok", held)
    iters = 10 if args.quick else REF_B["iters"]
    over = _overrides(args.set or [], _quick_b() if args.quick else {})
    if chosen is not None:
        over = _merged(_merged(over, chosen["chosen_overrides"]), _quick_b() if args.quick else {})
    refs, mine = [], []
    # the reference (minutes) once, in the middle repeat: our seeds' runs lie on both sides
    ref_repeat = args.repeats // 2
    for repeat in range(args.repeats):
        sides = run_order(["ref", "ours"], repeat) if repeat == ref_repeat else ["ours"]
        for side in sides:
            if side == "ref":
                got = reference_b(train_ids, work, iters)  # type: ignore[arg-type]
                got["heldout_loss"] = score("hf", got["model"], held_ids, work)
                refs.append(got)
            else:
                seeded = reseeded(over, repeat, "seed001")
                got = ours("seed001", train, work, seeded) | {"seed": seeded["pretrain"]["seed"]}
                got["heldout_loss"] = _scored_ours(got, held, len(held_ids), work)
                ratio = len(encode_with_model(got["model"], train)) / len(train_ids)
                got["curve"] = train_curve(got["root"], ratio)
                mine.append(got)
    shard = resolved_params("seed001", over).get("shard", {})
    ref_s = statistics.median(r["seconds"] for r in refs)
    our_s = statistics.median(r["seconds"] for r in mine)
    losses = [r["heldout_loss"] for r in mine]
    spread = summary(losses)
    last = mine[-1]
    selection: dict[str, Any] | None = None
    if chosen is not None:
        picked = chosen["candidates"][chosen["chosen"]]
        selection = {
            "chosen_on": chosen["chosen_on"],
            "candidates": [
                {"overrides": c["overrides"], "validation_loss": c["validation_loss"]}
                for c in chosen["candidates"]
            ],
            "chosen": chosen["chosen"],
            "cut": chosen["cut"],
            # the final run trained what was chosen (the preset may since have taken it in)
            "matches_selection": _same_settings(resolved_params("seed001", over), picked["params"]),
        }
    return {
        "reference": {
            "seconds": ref_s,
            "iterations": iters,
            "heldout_loss": statistics.median(r["heldout_loss"] for r in refs),
            "runs": len(refs),
        },
        "ours": {
            "seconds": our_s,
            "heldout_loss": spread["median"],
            # one per repeat, each under its own training seed (see reseeded)
            "heldout_losses": losses,
            "heldout_range": [spread["min"], spread["max"]],
            "seeds": [r["seed"] for r in mine],
            "seconds_each": [r["seconds"] for r in mine],
            "steps": last["metrics"]["steps"],
            "steps_each": [r["metrics"]["steps"] for r in mine],
            "best_step": last["metrics"]["best_step"],
            "stopped_early": last["metrics"].get("stopped_early"),
            "tokens_per_s": last["metrics"]["tokens_per_s"],
            "n_vocab": load_tokenizer(last["model"]).n_vocab,
            "scored_tokens": last["scored_tokens"],
            "overrides": over,
            # the shard stage was given the training text only (see ours): its val split, and
            # so early stopping, never saw the held-out text
            "early_stopping_on": f"shard.val_fraction {shard.get('val_fraction', 0.1)} of the "
            "training text",
        },
        # 4.75 less the median: above 0 the target's loss is met, by this much
        "margin": TARGETS["seed001_loss"] - spread["median"],
        "worst_seed_margin": TARGETS["seed001_loss"] - spread["max"],
        "settings_chosen_on": selection["chosen_on"] if selection else "not recorded",
        "selection": selection,
        "time_ratio": our_s / ref_s,
        "meets_target": spread["median"] <= TARGETS["seed001_loss"] and our_s <= ref_s,
        # (c) seed 001's own figure
        "seed001_own_figure": last["curve"] | {"tokens_per_s": last["metrics"]["tokens_per_s"]},
    }


def linear_products(shape: dict[str, Any], vocab: int, tokens: int) -> list[tuple[int, int, int]]:
    """(m, k, n) of each Linear's three matrix products in one training step over `tokens`
    tokens: forward, input gradient and weight gradient, for every block's four Linears and the
    head (tied to wte, but a product all the same). Together they are the 6 x parameters x
    tokens of a step, attention's own products aside."""
    width = shape["n_embd"]
    layers = [(width, 3 * width), (width, width), (width, 4 * width), (4 * width, width)]
    return [
        product
        for fan_in, fan_out in layers * shape["n_layer"] + [(width, vocab)]
        for product in (
            (tokens, fan_in, fan_out),
            (tokens, fan_out, fan_in),
            (fan_out, tokens, fan_in),
        )
    ]


def part_e(work: Path, args: argparse.Namespace) -> dict:
    """seed003's training step alone, ours against nanoGPT's, in one process (see
    benchmarks/workers/seeds_step.py)."""
    from gptpipe.presets import load_preset

    nano = nanogpt_checkout(work, args.nanogpt)
    params = {k: v for k, v in load_preset("seed003").params.items() if k in ("model", "pretrain")}
    vocab = 67  # Tiny Shakespeare's 65 characters + <|endoftext|> + <|unk|>
    batches = [12, 6]
    context = params["model"]["block_size"]
    cfg = {
        "repo": str(Path(__file__).resolve().parents[1]),
        "nanogpt": str(nano),
        "params": params,
        "vocab": vocab,
        "batches": batches,
        "products": {str(b): linear_products(params["model"], vocab, b * context) for b in batches},
        "warmup": 2 if args.quick else 10,
        "rounds": 2 if args.quick else 8,
        "steps": 2 if args.quick else 25,
    }
    out = run(worker("seeds_step", json.dumps(cfg)), env=worker_env())
    times = json.loads(out.strip().splitlines()[-1])
    for row in times.values():
        row["ratio"] = row["ours_ms"] / row["nanogpt_ms"]
        row["floor_ratio"] = row["floor_ms"] / row["nanogpt_ms"]
    return {"batches": times, "rounds": cfg["rounds"], "steps_per_round": cfg["steps"]}


def part_d(train: Path, work: Path, args: argparse.Namespace) -> dict:
    """Seed 001's own figure: the seed001 preset with early stopping off and its schedule
    stretched to --figure-steps, trained on past its best held-out point until its training
    loss (per GPT-2 token of the training text) falls to 3.5."""
    from gptpipe.tokenizer.folder import save_gpt2

    save_gpt2(work / "gpt2-tok")
    gpt2_tokens = len(encode_with_model(work / "gpt2-tok", train))
    steps = 10 if args.quick else args.figure_steps
    pretrain: dict[str, Any] = {"max_steps": steps, "patience": 0}
    if args.quick:
        pretrain |= {"eval_interval": 5, "eval_batches": 2}
    over = {"pretrain": pretrain} | ({"shard": {"val_fraction": 0.2}} if args.quick else {})
    got = ours("seed001", train, work, over)
    ratio = len(encode_with_model(got["model"], train)) / gpt2_tokens
    return train_curve(got["root"], ratio) | {
        "steps": got["metrics"]["steps"],
        "seconds": got["seconds"],
        "tokens_per_s": got["metrics"]["tokens_per_s"],
        "overrides": over,
    }


def part_c(work: Path, args: argparse.Namespace) -> dict:
    """seed000 on the offline document corpus: train and held-out perplexity."""
    import math

    corpus = work / "stdlib.txt"
    corpus.write_text(corpus_text(work, "stdlib"), encoding="utf-8")
    over: dict[str, dict[str, Any]] = {}
    if args.quick:
        over = {"pretrain": {"max_steps": 10, "eval_interval": 5, "eval_batches": 2}}
    got = ours("seed000", corpus, work, over)
    root = got["root"]
    run(
        [
            *GPTPIPE, "evaluate", "--params", str(root / "seed000.yaml"),
            "--model", str(root / "model"), "--shards", str(root / "shards"),
            "--out", str(root / "evaluate.json"), "--details", str(root / "evaluate-run.json"),
        ]
    )  # fmt: skip
    # the metrics file holds the headline (bits per byte) only; the run details have it all,
    # keyed by the model's folder name
    held = json.loads((root / "evaluate-run.json").read_text())["model"]
    metrics = got["metrics"]
    return {
        "seconds": got["seconds"],
        "steps": metrics["steps"],
        "best_step": metrics.get("best_step"),
        "train_loss": metrics["train_loss"],
        "train_perplexity": math.exp(metrics["train_loss"]),
        "val_loss": metrics["val_loss"],
        "heldout_perplexity": held["perplexity"],
        "heldout_bits_per_byte": held["bits_per_byte"],
        "seed_figure": 1.21,
    }


def machine() -> str:
    try:
        info = Path("/proc/cpuinfo").read_text()
        name = re.search(r"model name\s*:\s*(.*)", info)
        flags = re.search(r"flags\s*:\s*(.*)", info)
        feats = [
            f
            for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
            if flags and f in flags.group(1).split()
        ]
        cpu = f"{name.group(1) if name else platform.processor()} ({', '.join(feats)})"
    except OSError:
        cpu = platform.processor()
    return f"{cpu}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start"


def reused(files: list[Path], parts: list[str]) -> dict[str, Any]:
    """The records of the parts not run now, from earlier --json files of this script (or
    run_all's records of it, which hold one under "results"), each stamped with its file and,
    where it has none, its machine and date."""
    results: dict[str, Any] = {}
    for earlier in files:
        try:
            kept = json.loads(earlier.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            _bad_input(f"--reuse: {earlier}: {exc}")
        if not isinstance(kept, dict):
            _bad_input(f"--reuse: {earlier}: not a record of this script (a JSON object)")
        if isinstance(kept.get("results"), dict):  # run_all's record: the script's is inside
            kept = kept["results"]
        for part, key in PARTS.items():
            if part not in parts and key in kept:
                entry = kept[key]
                entry.setdefault("machine", kept.get("machine"))
                written = time.gmtime(earlier.stat().st_mtime)  # records without a date
                entry.setdefault("date", time.strftime("%Y-%m-%d %H:%M UTC", written))
                entry["reused_from"] = str(earlier)
                results[key] = entry
    return results


def _bad_input(message: str) -> NoReturn:
    """Bad command-line input: one line naming the option, exit status 2."""
    print(f"bench_seeds: {message}", file=sys.stderr)
    raise SystemExit(2)


def _check_args(args: argparse.Namespace) -> None:
    """The options checked (and the candidate lists parsed) before any corpus or training."""
    from gptpipe.errors import BadInput

    parts = args.parts.split(",")
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        _bad_input(f"--parts: unknown part {unknown[0]!r}; known: {', '.join(PARTS)}")
    for option in ("repeats", "select_repeats"):
        if getattr(args, option) < 1:
            _bad_input(f"--{option.replace('_', '-')}: must be >= 1")
    if args.candidates is not None and args.candidates_file is not None:
        _bad_input("--candidates, --candidates-file: give one of them")

    def checked(option: str, preset: str, read: Callable[[], list[Overrides]]) -> list[Overrides]:
        try:
            candidates = read()
            check_candidates(preset, candidates)
        except BadInput as exc:
            _bad_input(f"{option}: {exc}")
        return candidates

    if args.candidates_file is not None:
        args.candidates = checked(
            "--candidates-file", "seed001", lambda: read_candidates(args.candidates_file)
        )
    elif args.candidates is not None:
        text = args.candidates
        args.candidates = checked("--candidates", "seed001", lambda: parse_candidates(text))
    else:
        args.candidates = [{}]  # the preset as it is
    if args.a_variants is not None:
        text = args.a_variants
        args.a_variants = checked("--a-variants", "seed003", lambda: parse_candidates(text))
    checked("--a-variant", "seed003", lambda: [_overrides(args.a_variant)])
    checked("--set", "seed001", lambda: [_overrides(args.set or [])])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: a few iterations")
    parser.add_argument(
        "--parts",
        default="a,b,c,d,e",
        help="a (seed003), s (seed001's settings chosen on a validation cut of the training "
        "text), b (seed001), c (seed000), d (seed 001's training loss 3.5), e (seed003's step "
        "alone)",
    )
    parser.add_argument(
        "--figure-steps",
        type=int,
        default=4000,
        help="part d: the seed001 preset's schedule stretched to this many steps",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="parts a and b: repeats, ours under a new seed in each (part b's reference once)",
    )
    parser.add_argument(
        "--candidates",
        default=None,
        help="part s: candidate settings for seed001, SECTION.KEY=VALUE items joined by ',' "
        "within a candidate and ';' between them; 'preset' is the preset as it is (default)",
    )
    parser.add_argument(
        "--candidates-file",
        type=Path,
        default=None,
        help="part s: candidates from a YAML list of mappings of SECTION.KEY: VALUE",
    )
    parser.add_argument(
        "--select-repeats",
        type=int,
        default=1,
        help="part s: seeds per candidate (its validation loss is their median)",
    )
    parser.add_argument("--nanogpt", type=Path, default=None, help="a nanoGPT checkout")
    parser.add_argument("--work", type=Path, default=None, help="working folder (default: temp)")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument(
        "--set", action="append", help="SECTION.KEY=VALUE for ours in part b (tuning runs)"
    )
    parser.add_argument(
        "--a-variant",
        action="append",
        default=[],
        help="SECTION.KEY=VALUE: part a also runs the seed003 preset with these overrides beside "
        "the preset and nanoGPT (repeatable: one variant with all of them)",
    )
    parser.add_argument(
        "--a-variants",
        default=None,
        help="part a: more variants of the seed003 preset, each run beside it: SECTION.KEY=VALUE "
        "items joined by ',' within a variant and ';' between them",
    )
    parser.add_argument(
        "--threads", type=int, default=0, help="OMP_NUM_THREADS for both sides (0: unset)"
    )
    parser.add_argument(
        "--reuse",
        type=Path,
        action="append",
        default=[],
        help="an earlier --json (or run_all's record of this script, as in benchmarks/results/"
        "seeds.json): the parts not run now are copied from it (repeatable)",
    )
    args = parser.parse_args(argv)
    _check_args(args)
    kept = reused(args.reuse, args.parts.split(","))  # read (and checked) before any work
    if args.threads:
        CHILD_ENV["OMP_NUM_THREADS"] = str(args.threads)
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-seeds-"))
    work.mkdir(parents=True, exist_ok=True)
    text = corpus_text(work)
    train, held = split(text, work, args.quick)
    full = work / "input.txt"
    full.write_text(
        train.read_text(encoding="utf-8") + held.read_text(encoding="utf-8"), encoding="utf-8"
    )
    results: dict[str, Any] = {
        "machine": machine(),
        "quick": args.quick,
        "repeats": args.repeats,
        "threads": args.threads or "torch default",
    }
    parts = args.parts.split(",")
    stamp = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": machine()}
    results |= kept
    if "a" in parts:
        results["seed003"] = part_a(full, train, held, work, args) | stamp
        r = results["seed003"]
        print(
            f"seed003 ({r['iterations']} it): nanoGPT {r['nanogpt']['seconds']:.1f} s, held-out "
            f"{r['nanogpt']['heldout_loss']:.4f} "
            f"(own estimate {r['nanogpt']['val_loss_own_estimate']:.4f}); "
            f"ours {r['ours']['seconds']:.1f} s, held-out {r['ours']['heldout_loss']:.4f}; "
            f"time ratio {r['time_ratio']:.2f}; target met: {r['meets_target']}"
        )
        for v in r.get("variants", []):
            print(
                f"seed003 variant {json.dumps(v['overrides'])}: {v['seconds']:.1f} s, held-out "
                f"{v['heldout_loss']:.4f}; time ratio {v['time_ratio']:.2f}; "
                f"target met: {v['meets_target']}"
            )
    if "s" in parts:
        results[SELECT] = part_select(train, held, work, args) | stamp
        r = results[SELECT]
        for number, row in enumerate(r["candidates"]):
            mark = " (chosen)" if number == r["chosen"] else ""
            print(
                f"seed001 candidate {json.dumps(row['overrides'])}: validation-cut loss "
                f"{row['validation_loss']:.4f}{mark}"
            )
    if "b" in parts:
        results["seed001"] = part_b(train, held, work, args, results.get(SELECT)) | stamp
        r = results["seed001"]
        print(
            f"seed001: reference {r['reference']['seconds']:.1f} s, held-out "
            f"{r['reference']['heldout_loss']:.4f}; ours {r['ours']['seconds']:.1f} s "
            f"({r['ours']['steps']} steps), held-out {r['ours']['heldout_loss']:.4f}; time ratio "
            f"{r['time_ratio']:.2f}; margin against 4.75 {r['margin']:+.4f} (median of "
            f"{len(r['ours']['seeds'])}, {r['ours']['heldout_range'][0]:.4f}-"
            f"{r['ours']['heldout_range'][1]:.4f}); settings chosen on: "
            f"{r['settings_chosen_on']}; target met: {r['meets_target']}; own figure: "
            f"{json.dumps(r['seed001_own_figure'])}"
        )
    if "c" in parts:
        results["seed000"] = part_c(work, args) | stamp
        r = results["seed000"]
        print(
            f"seed000: {r['steps']} steps in {r['seconds']:.1f} s; train perplexity "
            f"{r['train_perplexity']:.2f}, held-out perplexity {r['heldout_perplexity']:.2f} "
            f"(the seed: 1.21 on its training set)"
        )
    if "d" in parts:
        results[FIGURE] = part_d(train, work, args) | stamp
        r = results[FIGURE]
        print(
            f"seed 001's figure: {r['steps']} steps in {r['seconds']:.1f} s, final training loss "
            f"{r['final_train_loss']:.3f} per GPT-2 token; 3.5 reached: {r['reached_3_5']}"
        )
    if "e" in parts:
        results[STEP] = part_e(work, args) | stamp
        for batch, row in results[STEP]["batches"].items():
            print(
                f"seed003 step, batch {batch}: ours {row['ours_ms']:.1f} ms, nanoGPT "
                f"{row['nanogpt_ms']:.1f} ms ({row['ratio']:.2f}x)"
            )
    print(f"machine: {results['machine']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return results


if __name__ == "__main__":
    main()
