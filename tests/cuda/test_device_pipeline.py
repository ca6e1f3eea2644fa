"""A two-stage `dvc repro` on a device: pretraining and evaluation through the real CLI and
real DVC, in a temporary git repository, with `pretrain.device` and `evaluate.device` set.

The inputs (a BPE tokenizer and token shards of a tiny local corpus) are made by the CLI
beforehand and committed; DVC then runs the two stages that compute on the device. The CUDA
variant is marked `cuda` (skipped without a GPU); the CPU twin is slow (about 20 s of
processes) and runs under make test-all. Both skip where dvc is not installed (the GPU check
machine has no DVC unless its wheels are brought along).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from device_cases import DEVICES
from helpers.dvcrepo import new_repository, run
from helpers.tiny import corpus_text
from helpers.tinydvc import TINY, ran_stages

REPO = Path(__file__).resolve().parents[2]
CORPUS = "data/inputs/tiny_corpus.txt"
DVC_YAML = {
    "stages": {
        "pretrain": {
            "cmd": (
                "gptpipe pretrain --shards data/shards --tokenizer models/tokenizer "
                "--out models/pretrain --metrics reports/metrics/pretrain.json "
                "--plots reports/plots/pretrain --checkpoints checkpoints/pretrain "
                "--details reports/runs/pretrain.json"
            ),
            "deps": ["data/shards", "models/tokenizer"],
            "params": ["model", "pretrain"],
            "outs": ["models/pretrain", "reports/plots/pretrain", "reports/runs/pretrain.json"],
            "metrics": ["reports/metrics/pretrain.json"],
        },
        "evaluate": {
            "cmd": (
                "gptpipe evaluate --shards data/shards --model models/pretrain "
                "--out reports/metrics/evaluate.json --details reports/runs/evaluate.json"
            ),
            "deps": ["data/shards", "models/pretrain"],
            "params": ["evaluate"],
            "outs": ["reports/runs/evaluate.json"],
            "metrics": ["reports/metrics/evaluate.json"],
        },
    }
}


def _two_stage_project(root: Path, device: str) -> Path:
    """`root` as a committed git + DVC repository: tokenizer and shards made, the two stages
    to run, the tiny test params with both stages on `device`."""
    (root / CORPUS).parent.mkdir(parents=True)
    (root / CORPUS).write_text(corpus_text(sentences=2000), encoding="utf-8")
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    for section, values in TINY.items():
        params[section].update(values)
    params["pretrain"]["device"] = params["evaluate"]["device"] = device
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    run(root, "gptpipe", "tokenizer", "--corpus", CORPUS, "--out", "models/tokenizer")
    run(root, "gptpipe", "shard", "--corpus", CORPUS, "--tokenizer", "models/tokenizer")
    (root / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML, sort_keys=False), encoding="utf-8")
    new_repository(root, "two stages")
    return root


def _pipeline_cases():
    (_, cuda) = DEVICES
    return [
        pytest.param("cpu", marks=pytest.mark.slow, id="cpu"),
        pytest.param("cuda", marks=cuda.marks, id="cuda"),
    ]


@pytest.mark.parametrize("device", _pipeline_cases())
def test_two_stage_dvc_repro_on_the_device(tmp_path, device):
    """Both stages run under `dvc repro` on the device the params name (their run details
    say so), the model trains below the uniform loss, the evaluation scores it, and a second
    repro has nothing to do."""
    pytest.importorskip("dvc")
    project = _two_stage_project(tmp_path / "project", device)
    first = run(project, "dvc", "repro")
    assert ran_stages(first.stdout) == {"pretrain", "evaluate"}
    details = json.loads((project / "reports/runs/pretrain.json").read_text(encoding="utf-8"))
    assert str(details["device"]).startswith(device)
    metrics = json.loads((project / "reports/metrics/pretrain.json").read_text(encoding="utf-8"))
    vocab = TINY["tokenizer"]["vocab_size"]
    assert metrics["pretrain"]["val_loss"] < math.log(vocab) - 0.3  # below uniform: it learned
    scored = json.loads((project / "reports/runs/evaluate.json").read_text(encoding="utf-8"))
    assert scored["params"]["evaluate"]["device"] == device
    assert scored["pretrain"]["perplexity"] > 1.0
    again = run(project, "dvc", "repro")
    assert ran_stages(again.stdout) == set()
