"""The optional judge against a scripted server on 127.0.0.1 that answers like Ollama."""

import pytest
from helpers.ollama import Ollama

from gptpipe.errors import ConfigError
from gptpipe.finetune.judge import judge, judge_prompt, parse_score

RECORDS = [
    {
        "instruction": "Name the capital of France.",
        "input": "",
        "reference": "Paris.",
        "response": "Paris.",
    },
    {"instruction": "Add the numbers.", "input": "2 and 3", "reference": "5", "response": "6"},
    {"instruction": "Say hi.", "input": "", "reference": "Hi!", "response": "Hello!"},
]


@pytest.mark.parametrize("path,stream", [("/api/chat", False), ("/api/generate", True)])
def test_judge_scores_each_response_and_counts_the_unparsable(path, stream):
    server = Ollama(["100", "20.", "I would say eighty"], stream=stream)
    try:
        records = [dict(r) for r in RECORDS]
        result = judge(server.url + path, "llama3", records, timeout=10)
    finally:
        server.close()
    assert result == {"judge_mean": 60.0, "judge_unparsed": 1}
    assert [r["judge_score"] for r in records] == [100, 20, None]
    sent_path, body = server.requests[0]
    assert sent_path == path and body["model"] == "llama3" and body["stream"] is False
    assert body["options"]["temperature"] == 0 and body["options"]["seed"] == 123
    prompt = body["messages"][0]["content"] if path == "/api/chat" else body["prompt"]
    assert prompt == judge_prompt("Name the capital of France.", "", "Paris.", "Paris.")
    assert "score the model response `Paris.`" in prompt
    assert prompt.endswith("where 100 is the best score. Respond with the integer number only.")


def test_judge_errors_name_the_params_key():
    server = Ollama([])
    try:
        with pytest.raises(ConfigError, match=r"instruct\.judge_url.*HTTP 404"):
            judge(server.url + "/v1/other", "m", [dict(RECORDS[0])], timeout=10)
    finally:
        server.close()
    with pytest.raises(ConfigError, match=r"instruct\.judge_url.*cannot reach"):
        judge(server.url + "/api/chat", "m", [dict(RECORDS[0])], timeout=2)


def test_parse_score_takes_an_integer_from_0_to_100_only():
    assert [parse_score(t) for t in ("87", " 0 \n", "100.", "101", "8 7", "score: 5", "")] == [
        87,
        0,
        100,
        None,
        None,
        None,
        None,
    ]
