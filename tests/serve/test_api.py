"""`gptpipe serve` as its clients see it: the official `openai` client and plain HTTP against
a real server process on 127.0.0.1, with two small model folders."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import httpx2 as httpx
import openai
import pytest
import torch
from helpers.server import TINY, Server, model_folders, serving

from gptpipe.errors import BadInput
from gptpipe.model.folder import save_model
from gptpipe.model.gpt import GPT
from gptpipe.tokenizer.folder import load_tokenizer, save_gpt2


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return model_folders(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def server(folders: dict[str, Path]) -> Any:
    with serving("--model", folders["base"], "--model", folders["instruct"], "--batch", "8") as s:
        yield s


@pytest.fixture
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "v1", api_key="none", max_retries=0)


def generate(folder: Path, prompt: str, tokens: int) -> str:
    """`gptpipe generate --temperature 0`'s continuation (its stdout)."""
    done = subprocess.run(
        [sys.executable, "-m", "gptpipe", "generate", "--model", str(folder), "--prompt", prompt,
         "--max-new-tokens", str(tokens), "--temperature", "0"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return done.stdout.removesuffix("\n")


def test_models_and_health(client: openai.OpenAI, server: Server) -> None:
    ids = [m.id for m in client.models.list().data]
    assert ids == ["base", "instruct"]
    with urllib.request.urlopen(server.url + "health") as reply:
        health = json.load(reply)
    assert health["status"] == "ok" and [m["id"] for m in health["models"]] == ids


def test_a_model_card_says_the_limits_and_the_defaults_a_request_gets(
    client: openai.OpenAI,
) -> None:
    card = client.models.retrieve("base").model_dump()
    assert card["context_length"] == 96 and card["instruction_tuned"] is False
    assert card["limits"] == {
        "max_tokens": 2048, "n": 8, "logprobs": 20, "stop": 4, "body_bytes": 1 << 20
    }  # fmt: skip
    chat = card["defaults"]["chat"]
    assert chat["temperature"] == 0.7 and chat["max_tokens"] == 200
    for route, defaults in card["defaults"].items():  # leaving them out == sending these
        extra = {k: v for k, v in defaults.items() if k in ("top_k", "repetition_penalty")}
        rest = {k: v for k, v in defaults.items() if k not in extra}
        if route == "chat":
            asked: dict[str, Any] = {"messages": [{"role": "user", "content": "Hi"}]}
            create: Any = client.chat.completions.create
        else:
            asked, create = {"prompt": "Hi"}, client.completions.create
        plain = create(model="base", seed=5, **asked)
        explicit = create(model="base", seed=5, **asked, **rest, extra_body=extra)
        assert plain.choices[0] == explicit.choices[0], route


def test_greedy_completion_equals_gptpipe_generate_token_for_token(
    client: openai.OpenAI, folders: dict[str, Path]
) -> None:
    prompt = "The history of the"
    answer = client.completions.create(model="base", prompt=prompt, max_tokens=40, temperature=0)
    assert answer.choices[0].text == generate(folders["base"], prompt, 40)
    assert answer.choices[0].finish_reason in ("length", "stop")
    enc = load_tokenizer(folders["base"])
    assert answer.usage is not None
    assert answer.usage.prompt_tokens == len(enc.encode_ordinary(prompt))
    assert answer.usage.completion_tokens == 40  # random weights: no <|endoftext|> this soon
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + 40


def test_chat_wraps_the_conversation_in_the_instruct_models_template(
    client: openai.OpenAI, folders: dict[str, Path]
) -> None:
    """One user message to an instruction-tuned folder: its Alpaca prompt, as `generate`
    wraps a prompt for it, so the greedy answers are the same."""
    question = "Name three colours."
    answer = client.chat.completions.create(
        model="instruct",
        messages=[{"role": "user", "content": question}],
        max_tokens=30,
        temperature=0,
    )
    message = answer.choices[0].message
    assert message.role == "assistant"
    assert message.content == generate(folders["instruct"], question, 30)
    assert answer.usage is not None and answer.usage.completion_tokens == 30


def test_a_stream_arrives_in_pieces_and_adds_up_to_the_whole_answer(
    client: openai.OpenAI,
) -> None:
    kwargs: dict[str, Any] = {"model": "base", "prompt": "Once", "max_tokens": 30, "temperature": 0}
    whole = client.completions.create(**kwargs).choices[0].text
    pieces = [c for c in client.completions.create(**kwargs, stream=True)]
    texts = [c.choices[0].text for c in pieces if c.choices]
    assert "".join(texts) == whole and len([t for t in texts if t]) > 5
    assert pieces[-1].choices[0].finish_reason == "length"
    chat = client.chat.completions.create(
        model="instruct", messages=[{"role": "user", "content": "Hi"}], max_tokens=20,
        temperature=0, stream=True, stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(chat)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 20


def test_n_samples_with_a_seed_are_reproducible_and_differ(client: openai.OpenAI) -> None:
    def draw() -> list[str]:
        answer = client.completions.create(
            model="base", prompt="A", max_tokens=12, temperature=1.0, n=3, seed=7
        )
        assert [c.index for c in answer.choices] == [0, 1, 2]
        return [c.text for c in answer.choices]

    first = draw()
    assert draw() == first and len(set(first)) == 3


def test_logprobs_and_echo(client: openai.OpenAI, folders: dict[str, Path]) -> None:
    answer = client.completions.create(
        model="base", prompt="One two", max_tokens=5, temperature=0, logprobs=3, echo=True
    )
    choice = answer.choices[0]
    assert choice.text.startswith("One two")
    assert choice.logprobs is not None
    tokens = choice.logprobs.tokens or []
    assert "".join(tokens) == choice.text  # the prompt's tokens, then the new ones
    assert choice.logprobs.token_logprobs is not None
    assert choice.logprobs.token_logprobs[0] is None  # the first prompt token has none
    assert all(v is not None and v <= 0 for v in choice.logprobs.token_logprobs[1:])
    top = choice.logprobs.top_logprobs or []
    assert len(top[-1] or {}) == 3
    chat = client.chat.completions.create(
        model="instruct", messages=[{"role": "user", "content": "Hi"}], max_tokens=4,
        temperature=0, logprobs=True, top_logprobs=2,
    )  # fmt: skip
    content = chat.choices[0].logprobs.content if chat.choices[0].logprobs else None
    assert content is not None and len(content) == 4 and len(content[0].top_logprobs) == 2


def test_a_prompt_longer_than_the_context_keeps_its_end_and_says_so(server: Server) -> None:
    long = "word " * 200
    reply = httpx.post(
        server.url + "v1/completions",
        json={"model": "base", "prompt": long, "max_tokens": 3, "temperature": 0},
        timeout=60,
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["usage"]["prompt_tokens"] == 96  # the context
    assert "exceed the context of 96" in body["warnings"][0]


BAD: list[tuple[dict[str, Any] | bytes, int, str | None]] = [
    ({"model": "nope", "prompt": "a"}, 404, "model"),
    (b"{not json", 400, None),
    (b"[1, 2]", 400, None),
    ({"prompt": "a"}, 400, "model"),
    ({"model": "base", "prompt": 3}, 400, "prompt"),
    ({"model": "base", "prompt": "a", "temperature": "hot"}, 400, "temperature"),
    ({"model": "base", "prompt": "a", "temperature": 1e-9}, 400, "temperature"),
    ({"model": "base", "prompt": "a", "temperature": -1}, 400, "temperature"),
    ({"model": "base", "prompt": "a", "top_p": 1.5}, 400, "top_p"),
    ({"model": "base", "prompt": "a", "top_p": 0}, 400, "top_p"),
    ({"model": "base", "prompt": "a", "top_k": -1}, 400, "top_k"),
    ({"model": "base", "prompt": "a", "n": 0}, 400, "n"),
    ({"model": "base", "prompt": "a", "n": 100}, 400, "n"),
    ({"model": "base", "prompt": "a", "n": 1.5}, 400, "n"),
    ({"model": "base", "prompt": "a", "max_tokens": 0}, 400, "max_tokens"),
    ({"model": "base", "prompt": "a", "max_tokens": 10**7}, 400, "max_tokens"),
    ({"model": "base", "prompt": "a", "seed": -1}, 400, "seed"),
    ({"model": "base", "prompt": "a", "seed": 2**64}, 400, "seed"),
    ({"model": "base", "prompt": "a", "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
    ({"model": "base", "prompt": "a", "stop": [""]}, 400, "stop"),
    ({"model": "base", "prompt": "a", "presence_penalty": 0.5}, 400, "presence_penalty"),
    ({"model": "base", "prompt": "a", "repetition_penalty": 0}, 400, "repetition_penalty"),
    ({"model": "base", "prompt": "a", "logprobs": 99}, 400, "logprobs"),
    ({"model": "base", "prompt": [99999999]}, 400, "prompt"),
    ({"model": "base", "prompt": []}, 400, "prompt"),
    ({"model": "base", "prompt": "a", "stream": "yes"}, 400, "stream"),
]
BAD_CHAT: list[tuple[dict[str, Any], int, str | None]] = [
    ({"model": "instruct", "messages": []}, 400, "messages"),
    ({"model": "instruct", "messages": [{"role": "user"}]}, 200, None),
    ({"model": "instruct", "messages": [{"role": "robot", "content": "x"}]}, 400,
     "messages[0].role"),
    ({"model": "instruct", "messages": [{"role": "system", "content": "x"}]}, 400, "messages"),
    ({"model": "instruct", "messages": "hello"}, 400, "messages"),
    ({"model": "instruct", "messages": [{"role": "user", "content": "x"}], "tools": [{}]}, 400,
     "tools"),
    ({"model": "instruct", "messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}, 400,
     "top_logprobs"),
]  # fmt: skip


@pytest.mark.parametrize(("body", "status", "param"), BAD, ids=[str(b)[:60] for b, _, _ in BAD])
def test_a_bad_completion_request_is_a_4xx_json_error_naming_the_field(
    server: Server, body: dict[str, Any] | bytes, status: int, param: str | None
) -> None:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    reply = httpx.post(server.url + "v1/completions", content=content, timeout=60,
                       headers={"content-type": "application/json"})  # fmt: skip
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert error["param"] == param and error["message"], error
    if param is not None:
        assert param in error["message"] or error["param"] == param


@pytest.mark.parametrize(("body", "status", "param"), BAD_CHAT)
def test_a_bad_chat_request_is_a_4xx_json_error_naming_the_field(
    server: Server, body: dict[str, Any], status: int, param: str | None
) -> None:
    body = body | {"max_tokens": 2}
    reply = httpx.post(server.url + "v1/chat/completions", json=body, timeout=60)
    assert reply.status_code == status, reply.text
    if status != 200:
        assert reply.json()["error"]["param"] == param


def test_a_body_over_the_limit_is_refused_before_it_is_read(server: Server) -> None:
    huge = {"model": "base", "prompt": "x" * (2 << 20)}
    reply = httpx.post(server.url + "v1/completions", json=huge, timeout=60)
    assert reply.status_code == 413 and "bytes" in reply.json()["error"]["message"]


def test_an_unknown_route_is_a_json_404(server: Server) -> None:
    reply = httpx.get(server.url + "v1/nothing", timeout=10)
    assert reply.status_code == 404 and "error" in reply.json()


def _active(server: Server) -> int:
    health = httpx.get(server.url + "health", timeout=10).json()
    return sum(m["active"] for m in health["models"])


def test_a_client_that_leaves_mid_stream_frees_its_rows(server: Server) -> None:
    body = {"model": "base", "prompt": "x", "max_tokens": 2000, "temperature": 0, "n": 8,
            "stream": True}  # fmt: skip
    with httpx.stream("POST", server.url + "v1/completions", json=body, timeout=60) as reply:
        lines = reply.iter_lines()
        for _ in range(5):
            next(lines)
        assert _active(server) == 8  # every row taken
    deadline = time.monotonic() + 30
    while _active(server) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _active(server) == 0  # capacity came back
    answer = httpx.post(server.url + "v1/completions", timeout=60,
                        json={"model": "base", "prompt": "y", "max_tokens": 3})  # fmt: skip
    assert answer.status_code == 200


def test_the_api_key_guards_every_route_but_the_page_and_health(folders: dict[str, Path]) -> None:
    with serving("--model", folders["base"], env={"GPTPIPE_API_KEY": "s3cret"}) as server:
        assert httpx.get(server.url + "health", timeout=10).status_code == 200
        assert httpx.get(server.url, timeout=10).status_code == 200
        for key in (None, "wrong", "s3cre", "s3cret2"):
            headers = {"authorization": f"Bearer {key}"} if key else {}
            reply = httpx.get(server.url + "v1/models", headers=headers, timeout=10)
            assert reply.status_code == 401 and reply.json()["error"]["code"] == "invalid_api_key"
        good = openai.OpenAI(base_url=server.url + "v1", api_key="s3cret", max_retries=0)
        assert [m.id for m in good.models.list().data] == ["base"]
        bad = openai.OpenAI(base_url=server.url + "v1", api_key="nope", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad.models.list()


def test_sigterm_lets_the_requests_in_flight_finish_then_exits_cleanly(
    folders: dict[str, Path],
) -> None:
    with serving("--model", folders["base"]) as server:
        got: dict[str, Any] = {}

        def ask() -> None:
            reply = httpx.post(
                server.url + "v1/completions",
                json={"model": "base", "prompt": "z", "max_tokens": 400, "temperature": 0},
                timeout=120,
            )
            got["status"], got["body"] = reply.status_code, reply.json()

        asking = threading.Thread(target=ask)
        asking.start()
        deadline = time.monotonic() + 30
        while not _active(server) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert server.stop(120) == 0
        asking.join(120)
        assert got["status"] == 200 and got["body"]["usage"]["completion_tokens"] == 400
        assert "gptpipe serve: stopped" in "".join(server.lines)


def test_bad_command_lines_are_one_line_and_exit_2(folders: dict[str, Path]) -> None:
    for args, words in (
        (["--model", str(folders["base"]), "--batch", "0"], "--batch"),
        (["--model", str(folders["base"]), "--name", "a", "--name", "b"], "--name"),
        (["--model", str(folders["base"].parent / "missing")], "missing"),
        (["--model", str(folders["base"]), "--host", "no.such.host.invalid"], "--host"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "gptpipe", "serve", *args, "--port", "0"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert done.returncode == 2 and len(lines) == 1 and words in lines[0], done.stderr


def test_a_model_that_fails_answers_with_an_error_not_a_hang(tmp_path: Path) -> None:
    # a diverged model: finite weights so large that its logits overflow, so that drawing a
    # token fails inside the engine
    root = tmp_path / "nan"
    save_gpt2(root / "tok")
    model = GPT(TINY)
    with torch.no_grad():
        model.ln_f.weight.fill_(3e38)
    save_model(root / "model", model, root / "tok", meta={"stage": "pretrain"})
    with serving("--model", root / "model", "--name", "nan") as server:
        client = openai.OpenAI(base_url=server.url + "v1", api_key="none", max_retries=0)
        with pytest.raises(openai.InternalServerError) as whole:
            client.completions.create(model="nan", prompt="Hi", max_tokens=5, temperature=1)
        assert "the model failed to answer" in str(whole.value)
        stream = client.chat.completions.create(
            model="nan", messages=[{"role": "user", "content": "Hi"}], stream=True
        )
        with pytest.raises(openai.APIError, match="the model failed to answer"):
            list(stream)  # the stream says so and ends; it does not hang or just stop
        # the engine goes on: the next request is answered the same way, not left waiting
        with pytest.raises(openai.InternalServerError):
            client.completions.create(model="nan", prompt="Hi", max_tokens=5, temperature=1)
    assert any("the model failed to answer" in line for line in server.lines)


def test_rows_that_cannot_fit_are_refused_naming_batch_before_the_cache(
    folders: dict[str, Path],
) -> None:
    """--batch (at most MAX_ROWS) allocates that many rows of every model's whole context at
    start: rows no memory holds are refused naming it, before the engine allocates them
    (GPT-2 XL's 256 rows would need over 80 GiB)."""
    from gptpipe.cli.serve import load_served

    started = time.perf_counter()
    with pytest.raises(BadInput) as refused:
        load_served([folders["base"]], [], "cpu", "float32", 10**9)
    assert time.perf_counter() - started < 5
    assert str(refused.value).startswith("--batch: ") and "memory" in str(refused.value)
