"""Default paths of the project: where each stage reads and writes when run alone outside DVC.

dvc.yaml names every path once in its `vars` and passes them to the commands; a test
checks that those values equal these defaults, so both ways of running agree.
"""

from pathlib import Path

RAW = Path("data/raw")
CORPUS = RAW / "corpus.txt"
INSTRUCT_DATA = RAW / "instruct.json"
CLASSIFY_DATA = RAW / "classify.tsv"
PROVENANCE = RAW / "provenance.json"
TOKENIZER = Path("models/tokenizer")
SHARDS = Path("data/shards")
PRETRAIN = Path("models/pretrain")
BASE = Path("models/base")
INSTRUCT_MODEL = Path("models/instruct")
CLASSIFY_MODEL = Path("models/classify")
METRICS = Path("reports/metrics")
RUNS = Path("reports/runs")  # run details: seconds, device, steps (not DVC metrics)
PLOTS = Path("reports/plots")
SAMPLES = Path("reports/samples")
ATTENTION = Path("reports/attention")  # attention maps of one prompt (the sample stage)
ATTENTION_JSON = "attention.json"  # in it, beside layer_NN.png: which model read which text
REPORT = Path("reports/report.md")
FIGURES = Path("reports/figures")
CHECKPOINTS = Path("checkpoints")
