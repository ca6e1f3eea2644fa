"""`python -m benchmarks.run_all --quick`: every benchmark's quick mode in its own process, each
result stored with its machine and rendered into RESULTS.md. The smoke run here covers the
benchmarks whose quick modes take seconds; `classify`, `pipeline` and `seeds` build whole
pipelines even when small (minutes), and `load_memory` writes and loads a 124M checkpoint four
times (a minute), so they are skipped here to keep CI under its budget; the pieces of two are
tested on their own (test_bench_pipeline.py, test_bench_seeds.py).
"""

import json

import pytest
from helpers.mirror import needs_mirror

from benchmarks import run_all
from benchmarks.table import SUMMARIES

SLOW = ("classify", "pipeline", "seeds", "load_memory")
pytestmark = needs_mirror  # the data benchmarks build their corpora from the offline mirror


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    pytest.importorskip("transformers")  # the references of train and generate
    pytest.importorskip("tokenizers")
    out = tmp_path_factory.mktemp("bench")
    result = run_all.main(["--quick", "--out", str(out), "--skip", ",".join(SLOW), "--no-lock"])
    return out, result


def test_every_fast_benchmark_runs_and_leaves_a_record(quick):
    out, result = quick
    assert result["failed"] == {}
    expected = {b.name for b in run_all.BENCHMARKS} - set(SLOW)
    assert set(result["records"]) == expected
    for name in expected:
        record = json.loads((out / f"{name}.json").read_text())
        assert record["command"].startswith(f"python -m benchmarks.bench_{name} --quick")
        assert record["environment"]["cpu"]["threads"] >= 1
        assert record["environment"]["packages"]["torch"]
        assert SUMMARIES[name](record["results"])  # rows the table can show
    assert not list(out.glob("*.partial"))


def test_the_references_agree_with_ours_where_they_must(quick):
    records = quick[1]["records"]
    shard = records["shard"]["results"]["sizes"]["2"]
    assert shard["gptpipe"]["tokens"] == shard["tiktoken"]["tokens"] > 100_000
    bpe = records["bpe"]["results"]
    assert bpe["gptpipe"]["n_vocab"] == bpe["tokenizers"]["n_vocab"] == 1024
    assert bpe["compression_ratio"] > 0.9
    for config in records["generate"]["results"]["configs"].values():
        assert config["same_tokens"] is True
        assert config["layout_same_as_plain"] is True
    for config in records["evaluate"]["results"]["configs"].values():
        assert config["perplexity_ours"] == pytest.approx(config["perplexity_plain"], rel=1e-4)
    train = records["train"]["results"]
    assert train["peaks_gflops"]["float32"] > 0  # bf16 has a peak only where it is native
    assert all(0 < row["mfu"] <= 1 for row in train["configs"]["quick"].values())
    assert set(train["configs"]["quick"]) == {"hf", train["ours_variant"]}
    serve = records["serve"]["results"]
    assert serve["transformers"]["float32"]["same_texts"] == serve["requests"]  # greedy
    assert all(row["full_length"] for row in serve["clients"].values())
    assert serve["memory"]["requests"] == 200 and serve["memory"]["peak_ratio"] > 0
    sizes = records["download"]["results"]
    assert len(sizes) == 2 and all(s["peak_rss_mb"] > 0 for s in sizes.values())
    bigdata = records["bigdata"]["results"]
    assert list(bigdata["sizes"]) == ["2", "8"]
    for size in bigdata["sizes"].values():  # Parquet files with several row groups each
        assert size["files"] == 3 and size["row_groups"] >= 2 * size["files"]
        assert size["tokens"] == size["tiktoken"]["tokens"] > 100_000  # the same encoder
        assert all(s["peak_rss_mb"] > 0 and s["seconds"] > 0 for s in size["stages"].values())
    small, large = bigdata["sizes"]["2"], bigdata["sizes"]["8"]
    assert 2 <= small["corpus_mb"] < 3 and 8 <= large["corpus_mb"] < 9
    assert 1.8 < large["sampled_mb"] <= 2.0  # the tokenizer learned from its 2 MB sample
    assert set(bigdata["memory_ratio"]) == {"download", "tokenizer", "shard"}


def test_results_md_has_the_machine_a_summary_and_a_table_per_benchmark(quick):
    out, result = quick
    text = (out / "RESULTS.md").read_text()
    assert text.startswith("# Benchmark results (quick")
    assert "Machine: " in text and "torch 2." in text
    for name, record in result["records"].items():
        assert f"## {name}\n" in text
        assert f"| {name} | " in text  # the summary row
        for row in SUMMARIES[name](record["results"]):
            assert row.figure.replace("|", "\\|") in text


def test_a_failing_benchmark_is_reported_and_stores_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("GPTPIPE_MIRROR", str(tmp_path / "no-mirror"))
    result = run_all.main(["--quick", "--out", str(tmp_path), "--only", "bpe", "--no-lock"])
    assert set(result["failed"]) == {"bpe"}
    assert not (tmp_path / "bpe.json").exists() and not list(tmp_path.glob("*.partial"))
    assert "bpe" not in result["records"]


def test_quick_figures_never_overwrite_the_stored_ones(capsys):
    with pytest.raises(SystemExit):
        run_all.main(["--quick"])
    assert "--quick needs --out" in capsys.readouterr().err


def test_the_readme_table_goes_between_the_markers_and_only_there(tmp_path):
    start, end = run_all.README_MARKERS
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nbefore\n{start}\nold\n{end}\nafter\n")
    for table in ("| a |", "| b |"):  # a second run replaces the first table
        run_all.update_readme(readme, table)
    assert readme.read_text() == f"# x\n\nbefore\n{start}\n| b |\n{end}\nafter\n"
    assert start in (run_all.README).read_text()  # the real README has the markers
