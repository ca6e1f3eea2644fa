"""The `download` stage on corpora as they are published: Parquet shards listed by URL (the
form of Hugging Face's download URLs) from a server on 127.0.0.1, globs and folders, mapped
column names, and DVC's watched folder with globs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import said
from helpers.dvcrepo import new_repository, run
from helpers.http import serve_folder
from typer.testing import CliRunner

from gptpipe.cli.app import app
from gptpipe.tokenizer.special import EOT

runner = CliRunner()
ENV: dict[str, str | None] = {"GPTPIPE_MIRROR": None, "DVC_STAGE": None}


def invoke(args: list[str], env: dict[str, str | None] | None = None):
    return runner.invoke(app, ["download", "--out", "raw", *args], env=ENV | (env or {}))


def shard(path: Path, texts: list[str | None], column: str = "text") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": range(len(texts)), column: texts}), path, row_group_size=2)
    return path


@pytest.fixture
def here(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def hub(tmp_path) -> Iterator[str]:
    """Parquet shards served as Hugging Face serves a dataset's files (plain HTTPS there):
    BASE/datasets/ORG/NAME/resolve/main/sample/10BT/000_0000N.parquet."""
    root = tmp_path / "www"
    folder = root / "datasets" / "HuggingFaceFW" / "fineweb-edu" / "resolve" / "main" / "sample"
    for n in range(3):
        shard(folder / "10BT" / f"000_0000{n}.parquet", [f"shard {n} doc {i}" for i in range(5)])
    with serve_folder(root) as server:
        yield f"{server.base}/datasets/HuggingFaceFW/fineweb-edu/resolve/main/sample/10BT"


def corpus(*documents: str) -> str:
    return f"\n{EOT}\n".join(documents) + "\n"


def test_a_list_of_files_by_url_is_one_corpus_in_the_order_given(here, hub):
    urls = [f"{hub}/000_00002.parquet", f"{hub}/000_00000.parquet"]
    result = invoke(["-S", f"data.corpus={{files: [{urls[0]}, {urls[1]}]}}"])
    assert result.exit_code == 0, result.output
    text = (here / "raw" / "corpus.txt").read_text()
    assert text == corpus(*[f"shard {n} doc {i}" for n in (2, 0) for i in range(5)])
    entry = json.loads((here / "raw" / "provenance.json").read_text())["corpus"]
    assert entry["source"] == {"files": urls} and entry["type"] == "files"
    assert [f["location"] for f in entry["upstream"]["files"]] == urls
    assert [f["rows"] for f in entry["upstream"]["files"]] == [5, 5]
    assert entry["counts"]["documents"] == 10 and entry["counts"]["files"] == 2
    assert "corpus 2 files (documents 10" in said.lines(result.stderr)[-1]


def test_a_plain_list_still_means_mirrors_of_one_file(here, hub):
    urls = [f"{hub}/000_00001.parquet", f"{hub}/000_00000.parquet"]
    result = invoke(["-S", f"data.corpus=[{urls[0]}, {urls[1]}]"])
    assert result.exit_code == 0, result.output
    assert (here / "raw" / "corpus.txt").read_text() == corpus(
        *[f"shard 1 doc {i}" for i in range(5)]
    )
    entry = json.loads((here / "raw" / "provenance.json").read_text())["corpus"]
    assert entry["type"] == "mirrors" and entry["counts"]["rows"] == 5


def test_a_failing_entry_of_a_file_list_is_exit_2_and_nothing_is_written(here, hub):
    missing = f"{hub}/000_00009.parquet"
    result = invoke(
        ["-S", f"data.corpus={{files: [{hub}/000_00000.parquet, {missing}]}}"],
    )
    assert result.exit_code == 2
    assert said.lines(result.stderr)[-1] == f"gptpipe: error: {missing}: HTTP 404 File not found"
    assert not (here / "raw").exists()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("{file: [a.parquet]}", "params key 'data.corpus.file': unknown key; allowed: files"),
        ("{files: []}", "params key 'data.corpus.files': must not be an empty list"),
        ("{files: a.parquet}", "params key 'data.corpus.files': expected a list"),
        ("{files: [stdlib]}", "params key 'data.corpus.files[0]': 'stdlib' is a named data set"),
    ],
)
def test_a_malformed_file_list_names_its_key(here, value, message):
    result = invoke(["-S", f"data.corpus={value}"])
    assert result.exit_code == 2
    assert message in said.lines(result.stderr)[-1]


def test_a_glob_of_local_shards_with_a_mapped_text_column(here):
    for n in (1, 0):
        shard(here / "data" / "inputs" / "fw" / f"{n}.parquet", [f"doc {n}", None], "content")
    args = ["-S", "data.corpus=data/inputs/fw/*.parquet", "-S", "data.text_column=content"]
    result = invoke(args)
    assert result.exit_code == 0, result.output
    assert (here / "raw" / "corpus.txt").read_text() == corpus("doc 0", "doc 1")
    counts = json.loads((here / "raw" / "provenance.json").read_text())["corpus"]["counts"]
    assert counts["null_rows"] == 2
    # The default column name is not there: exit 2 naming the file, the column and the key.
    result = invoke(["-S", "data.corpus=data/inputs/fw/*.parquet"])
    assert result.exit_code == 2
    line = said.lines(result.stderr)[-1]
    assert "fw/0.parquet: no column 'text'" in line and "data.text_column" in line


def test_instruct_and_classify_parquet_with_mapped_columns(here):
    shard(here / "alpaca.parquet", ["Say hi.", "Count."], "prompt")
    table = pa.table({"prompt": ["Say hi.", "Count."], "response": ["Hi!", "1 2 3"]})
    pq.write_table(table, here / "alpaca.parquet")
    table = pa.table({"category": ["ham", "spam", "ham"], "sms": ["hello", "WIN", "ok"]})
    pq.write_table(table, here / "sms.parquet")
    args = ["-S", "data.instruct=alpaca.parquet", "-S", "data.classify=sms.parquet"]
    args += ["-S", "data.columns={instruction: prompt, input: '', output: response, "
             "label: category, text: sms}"]  # fmt: skip
    result = invoke(args)
    assert result.exit_code == 0, result.output
    assert json.loads((here / "raw" / "instruct.json").read_text()) == [
        {"instruction": "Say hi.", "input": "", "output": "Hi!"},
        {"instruction": "Count.", "input": "", "output": "1 2 3"},
    ]
    assert (here / "raw" / "classify.tsv").read_text() == "ham\thello\nspam\tWIN\nham\tok\n"
    # JSON Lines records take the same mapping.
    (here / "sms.jsonl").write_text(
        '{"category": "a", "sms": "x"}\n{"category": "b", "sms": "y"}\n'
    )
    result = invoke([*args[:2], "-S", "data.classify=sms.jsonl", *args[4:]])
    assert result.exit_code == 0, result.output
    assert (here / "raw" / "classify.tsv").read_text() == "a\tx\nb\ty\n"


def test_only_the_corpus_reads_many_files(here):
    (here / "set").mkdir()
    (here / "set" / "a.jsonl").write_text('{"instruction": "a", "input": "", "output": "b"}\n')
    result = invoke(["-S", "data.instruct=set"])
    assert result.exit_code == 2
    assert said.lines(result.stderr)[-1] == (
        "gptpipe: error: params key 'data.instruct': set is a folder; only data.corpus reads "
        "many files, give one file"
    )


def test_under_dvc_a_glob_must_lie_inside_data_inputs(here):
    shard(here / "data" / "inputs" / "fw" / "0.parquet", ["inside"])
    shard(here / "elsewhere" / "0.parquet", ["outside"])
    under_dvc = {"DVC_STAGE": "download"}
    result = invoke(["-S", "data.corpus=elsewhere/*.parquet"], under_dvc)
    assert result.exit_code == 2
    assert said.lines(result.stderr)[-1].startswith(
        "gptpipe: error: params key 'data.corpus': elsewhere/*.parquet is outside data.inputs"
    )
    # A pattern that climbs out of the folder is outside too.
    for outside in (
        "data/inputs/../../elsewhere/*.parquet",
        "data/*/fw/*.parquet",
        "data/in*/fw/*.parquet",
    ):
        result = invoke(["-S", f"data.corpus={outside}"], under_dvc)
        assert result.exit_code == 2 and "is outside data.inputs" in result.stderr, outside
    result = invoke(["-S", "data.corpus={files: [elsewhere/0.parquet]}"], under_dvc)
    assert result.exit_code == 2
    assert "params key 'data.corpus.files[0]': elsewhere/0.parquet is outside" in result.stderr
    assert not (here / "raw").exists()
    for inside in ("data/inputs/fw/*.parquet", "data/inputs/fw", "data/inputs"):
        result = invoke(["-S", f"data.corpus={inside}"], under_dvc)
        assert result.exit_code == 0, (inside, result.output)
        assert (here / "raw" / "corpus.txt").read_text() == corpus("inside")


def test_real_dvc_watches_a_glob_of_shards_in_data_inputs(tmp_path):
    """Under real `dvc`: a new shard matching the glob shows as a changed dependency and
    `dvc repro` reads it; a glob outside data.inputs fails the stage and keeps the old data."""
    repo = tmp_path / "repo"
    shard(repo / "data" / "inputs" / "fw" / "000.parquet", ["first shard"])
    (repo / "dvc.yaml").write_text(
        "stages:\n  download:\n    cmd: gptpipe download --out data/raw\n"
        "    deps: [data/inputs]\n    params: [data]\n"
        "    outs: [{data/raw: {persist: true}}]\n"  # as the project's dvc.yaml has it
    )
    (repo / "params.yaml").write_text(
        "data:\n  corpus: data/inputs/fw/*.parquet\n  inputs: data/inputs\n"
    )
    (repo / ".gitignore").write_text("/data/raw\n")
    new_repository(repo, "a corpus of Parquet shards")
    run(repo, "dvc", "repro", "-q", GPTPIPE_MIRROR="")
    assert (repo / "data" / "raw" / "corpus.txt").read_text() == corpus("first shard")
    shard(repo / "data" / "inputs" / "fw" / "001.parquet", ["second shard"])
    assert "download" in run(repo, "dvc", "status").stdout
    run(repo, "dvc", "repro", "-q", GPTPIPE_MIRROR="")
    text = (repo / "data" / "raw" / "corpus.txt").read_text()
    assert text == corpus("first shard", "second shard")
    shard(repo / "elsewhere" / "000.parquet", ["outside"])
    (repo / "params.yaml").write_text("data:\n  corpus: elsewhere/*.parquet\n")
    failed = run(repo, "dvc", "repro", "-q", check=False, GPTPIPE_MIRROR="")
    assert failed.returncode != 0
    assert "'data.corpus': elsewhere/*.parquet is outside data.inputs" in failed.stderr
    assert (repo / "data" / "raw" / "corpus.txt").read_text() == text
