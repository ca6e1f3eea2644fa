"""The data benchmarks keep working: their quick modes run end to end on tiny inputs."""

import pytest
from helpers.mirror import needs_mirror

from benchmarks import bench_bpe, bench_download, bench_shard

# Every benchmark builds its corpus from the offline mirror.
pytestmark = needs_mirror


def test_bench_bpe_quick_compares_with_tokenizers(tmp_path):
    pytest.importorskip("tokenizers")
    result = bench_bpe.main(["--quick", "--json", str(tmp_path / "bpe.json")])
    assert result["gptpipe"]["n_vocab"] == result["tokenizers"]["n_vocab"] == 1024
    assert result["time_ratio"] > 0 and result["compression_ratio"] > 0.9
    assert (tmp_path / "bpe.json").is_file()


def test_bench_shard_quick_matches_tiktoken_token_counts(tmp_path):
    result = bench_shard.main(["--quick", "--json", str(tmp_path / "shard.json")])
    entry = result["sizes"]["2"]
    assert entry["gptpipe"]["tokens"] == entry["tiktoken"]["tokens"] > 100_000
    assert entry["throughput_ratio"] > 0 and entry["gptpipe"]["peak_rss_mb"] > 0


def test_bench_download_measures_the_stage_at_each_size():
    result = bench_download.main(["--sizes", "0.5", "--repeat", "1"])
    assert result["0.5"]["corpus_mb"] > 0.4 and result["0.5"]["peak_rss_mb"] > 0
