"""The chat page at `GET /`, used as a person would: a real headless Chromium (Selenium)
types into the page of a real `gptpipe serve` with three small model folders, two with
random weights and one trained here to write hostile HTML.

Screenshots go to the tests' temporary folders only.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import torch
from helpers.browser import headless_chromium, ink, set_viewport
from helpers.server import Server, model_folders, serving
from helpers.tiny import byte_tokenizer
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.select import Select

from gptpipe.config import PretrainConfig
from gptpipe.model.folder import save_model
from gptpipe.model.gpt import GPT, GPTConfig
from gptpipe.train.loop import train
from gptpipe.train.losses import lm_loss

HOSTILE = "<b>bold</b><script>window.pwned=1</script><img src=x onerror=window.pwned=2>"
SIZE = (800, 500)  # the page's viewport, in CSS pixels: the screenshot's size
KEY = "s3cret"


def hostile_model(root: Path) -> Path:
    """A byte-level model trained (a second or two) on HOSTILE lines: its greedy answer to
    a line of it is more of them."""
    data = torch.tensor(list((HOSTILE + "\n").encode()) * 40)
    block = 40
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=257, block_size=block, n_layer=1, n_head=2, n_embd=48))

    def batch_at(i: int) -> tuple[torch.Tensor, torch.Tensor]:
        starts = torch.randint(0, len(data) - block - 1, (8, 1), generator=torch.manual_seed(i))
        rows = data[starts + torch.arange(block + 1)]
        return rows[:, :-1], rows[:, 1:]

    def validate(net: torch.nn.Module) -> dict[str, float]:
        with torch.no_grad():
            return {"val_loss": float(net(*batch_at(-1))[1])}

    cfg = PretrainConfig(
        max_steps=300, batch_size=8, learning_rate=1e-2, min_lr=1e-3, warmup_steps=10,
        eval_interval=300, eval_batches=1, log_interval=100, checkpoint_interval=0,
        dtype="float32", threads=1,
    )  # fmt: skip
    train(model, cfg, batch_at=batch_at, loss_of=lm_loss, validate=validate)
    save_model(
        root / "html", model.eval(), byte_tokenizer(root / "bytes"), meta={"stage": "pretrain"}
    )
    return root / "html"


@pytest.fixture(scope="module")
def driver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with headless_chromium(tmp_path_factory.mktemp("chromium")) as chromium:
        set_viewport(chromium, *SIZE)
        yield chromium


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("page")
    return model_folders(root) | {"html": hostile_model(root)}


@pytest.fixture(scope="module")
def server(folders: dict[str, Path]) -> Iterator[Server]:
    models = [a for name in ("base", "instruct", "html") for a in ("--model", folders[name])]
    with serving(*models) as running:
        yield running


# Every request body the page sends, kept in window.sent (the page calls fetch afresh each time).
RECORD = """
window.sent = [];
const fetched = window.fetch;
window.fetch = (url, init) => {
    if (init && init.body) window.sent.push(JSON.parse(init.body));
    return fetched(url, init);
};
"""


@dataclass
class Page:
    """The page in the browser, and what a person does with it."""

    driver: Any

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def find(self, css: str) -> Any:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def wait(self, done: Callable[[], Any], what: str, timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        while not (result := done()):
            assert time.monotonic() < deadline, f"{what}: not after {timeout} s ({self.error})"
            time.sleep(0.02)
        return result

    def open(self, url: str) -> Page:
        self.driver.get_log("browser")  # what earlier pages logged: not this one's
        self.driver.get(url)
        self.wait(lambda: self.js("return document.readyState") == "complete", "loaded")
        self.js(RECORD)
        return self

    def models(self) -> list[str]:
        return self.js(
            "return Array.from(document.querySelectorAll('#model option'), o => o.value)"
        )

    def texts(self, role: str) -> list[str]:
        css = f"#log .{role} .text"
        return self.js(f"return Array.from(document.querySelectorAll('{css}'), e => e.textContent)")

    @property
    def error(self) -> str:
        return self.find("#error").text

    @property
    def sent(self) -> list[dict[str, Any]]:
        return self.js("return window.sent")

    def busy(self) -> bool:
        return not self.find("#stop").get_property("disabled")

    def set(self, field: str, value: str) -> None:
        box = self.find(f"#{field}")
        box.clear()
        box.send_keys(value)

    def type(self, *keys: str) -> None:
        self.find("#input").send_keys(*keys)

    def ask(self, text: str, wait: bool = True) -> str:
        """Type `text` and Enter; the answer, once complete (with `wait`)."""
        before = len(self.texts("assistant"))
        self.type(text, Keys.ENTER)
        self.wait(lambda: len(self.texts("assistant")) > before, "an answer begun")
        if wait:
            self.wait(lambda: not self.busy(), "the answer complete")
            assert self.error == ""
        return self.texts("assistant")[-1]


@pytest.fixture
def page(driver: Any, server: Server) -> Page:
    """The page freshly loaded, its model list filled."""
    opened = Page(driver).open(server.url)
    opened.wait(opened.models, "the model list")
    return opened


def post(server: Server, body: dict[str, Any]) -> dict[str, Any]:
    reply = httpx.post(server.url + "v1/chat/completions", json=body, timeout=60)
    assert reply.status_code == 200, reply.text
    return reply.json()


def test_the_picker_lists_the_models_and_an_answer_streams_in(page: Page) -> None:
    assert page.models() == ["base", "instruct", "html"]
    assert page.find("#model").get_property("value") == "instruct"  # instruction-tuned first
    # Every control has a label.
    unlabelled = "return Array.from(document.querySelectorAll('input, select, textarea'))"
    assert page.js(unlabelled + ".filter(e => !e.labels.length).map(e => e.id)") == []
    page.set("max_tokens", "300")
    lengths = [len(page.ask("Hello there", wait=False))]
    while page.busy():
        lengths.append(len(page.texts("assistant")[-1]))
    answer = page.texts("assistant")[-1]
    assert page.texts("user") == ["Hello there"] and answer and page.error == ""
    assert lengths == sorted(lengths)  # it only grows
    assert len({n for n in lengths if 0 < n < len(answer)}) >= 3, lengths  # several steps
    (body,) = page.sent
    assert body == {
        "model": "instruct",
        "messages": [{"role": "user", "content": "Hello there"}],
        "stream": True,
        "temperature": 0.7,
        "top_p": 0.95,
        "max_tokens": 300,
    }
    assert [e for e in page.driver.get_log("browser") if e["level"] == "SEVERE"] == []


def test_stop_ends_the_answer_midway_keeps_what_came_and_frees_the_row(
    page: Page, server: Server
) -> None:
    page.set("temperature", "0")
    page.set("max_tokens", "2000")
    page.ask("Tell me a long story", wait=False)
    page.wait(lambda: len(page.texts("assistant")[-1]) > 100, "a hundred characters")
    page.find("#stop").click()
    page.wait(lambda: not page.busy(), "the Stop button disabled")
    stopped = page.texts("assistant")[-1]
    time.sleep(0.5)
    assert page.texts("assistant")[-1] == stopped and page.error == ""  # no more text came
    assert page.find("#log .assistant").get_attribute("data-finish") == "stopped"
    # What came stays in the conversation: the next turn sends it.
    page.set("max_tokens", "5")
    page.ask("Go on")
    assert page.sent[-1]["messages"][1] == {"role": "assistant", "content": stopped}

    def active() -> int:
        health = httpx.get(server.url + "health", timeout=10).json()
        return sum(m["active"] for m in health["models"])

    page.wait(lambda: active() == 0, "the server freed the row", timeout=10)
    # What came is the start of the greedy answer, which goes on past it: the answer was cut
    # short of what 2000 tokens give.
    greedy, body = "", page.sent[0]
    with httpx.stream("POST", server.url + "v1/chat/completions", json=body, timeout=60) as reply:
        chunks = (line for line in reply.iter_lines() if line.startswith("data: {"))
        while len(greedy) <= len(stopped):
            choice = json.loads(next(chunks).removeprefix("data: "))["choices"][0]
            assert choice["finish_reason"] is None, "the whole greedy answer is no longer"
            greedy += choice["delta"].get("content", "")
    assert greedy.startswith(stopped) and len(greedy) > len(stopped)


def test_temperature_0_gives_the_apis_greedy_answer(page: Page, server: Server) -> None:
    page.set("temperature", "0")
    page.set("max_tokens", "60")
    answer = page.ask("Name three colours.")
    assert page.sent[-1]["temperature"] == 0
    greedy = post(
        server,
        {
            "model": "instruct",
            "messages": [{"role": "user", "content": "Name three colours."}],
            "temperature": 0,
            "max_tokens": 60,
        },
    )
    assert answer == greedy["choices"][0]["message"]["content"] != ""


def test_each_turn_sends_the_whole_conversation_until_a_new_one(page: Page) -> None:
    page.set("max_tokens", "20")
    first = page.ask("First")
    page.ask("Second")
    assert page.sent[-1]["messages"] == [
        {"role": "user", "content": "First"},
        {"role": "assistant", "content": first},
        {"role": "user", "content": "Second"},
    ]
    page.find("#new").click()
    assert page.texts("user") == [] and page.texts("assistant") == []
    page.ask("Third")
    assert page.sent[-1]["messages"] == [{"role": "user", "content": "Third"}]
    assert page.texts("user") == ["Third"]


def test_shift_enter_breaks_the_line_and_enter_sends(page: Page) -> None:
    page.set("max_tokens", "5")
    page.type("line one", Keys.SHIFT, Keys.ENTER, Keys.NULL, "line two")
    assert page.find("#input").get_property("value") == "line one\nline two"
    assert page.sent == [] and page.texts("user") == []
    page.ask("")
    assert page.texts("user") == ["line one\nline two"]
    assert page.find("#input").get_property("value") == ""


def test_html_in_an_answer_is_shown_as_text(page: Page, server: Server) -> None:
    Select(page.find("#model")).select_by_value("html")
    page.set("temperature", "0")
    page.set("max_tokens", "160")
    answer = page.ask("<b>bold</b>")
    greedy = post(
        server,
        {
            "model": "html",
            "messages": [{"role": "user", "content": "<b>bold</b>"}],
            "temperature": 0,
            "max_tokens": 160,
        },
    )
    assert answer == greedy["choices"][0]["message"]["content"]
    for part in ("<b>bold</b>", "<script>window.pwned=1</script>", "<img src=x onerror="):
        assert part in answer, answer
    assert page.texts("user") == ["<b>bold</b>"]
    assert page.js("return typeof window.pwned") == "undefined"
    # No element came of it: the log holds the messages' own divs only.
    made = "return Array.from(document.querySelectorAll('#log *'), e => e.tagName)"
    assert set(page.js(made)) == {"DIV"}
    assert page.js("return document.scripts.length") == 1  # the page's own
    # Nor can one: the page has no way to put a string in as HTML.
    source = httpx.get(server.url, timeout=10).text
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"):
        assert sink not in source, sink


def test_a_server_with_a_key_brings_up_the_key_field(driver: Any, folders: dict[str, Path]) -> None:
    with serving("--model", folders["html"], "--api-key", KEY) as keyed:
        page = Page(driver).open(keyed.url)
        key = page.wait(lambda: page.find("#key").is_displayed() and page.find("#key"), "key field")
        assert "API key" in page.error and page.models() == []
        key.send_keys(KEY, Keys.ENTER)
        assert page.wait(page.models, "the model list") == ["html"]
        assert not key.is_displayed() and page.error == ""
        page.set("max_tokens", "10")
        assert page.ask("<b>bold</b>")
        assert page.js("return sessionStorage.getItem('gptpipe-api-key')") == KEY


def test_a_screenshot_mid_conversation_is_not_blank(page: Page, tmp_path: Path) -> None:
    empty = ink(page.driver.get_screenshot_as_png())
    page.set("max_tokens", "40")
    page.ask("What is a language model?")
    page.ask("Say it in fewer words.")
    path = tmp_path / "page.png"
    assert page.driver.save_screenshot(str(path))
    assert struct.unpack(">II", path.read_bytes()[16:24]) == SIZE  # the PNG header's size
    assert ink(path) > max(20_000, 2 * empty), (ink(path), empty)


def test_at_a_narrow_width_nothing_is_cut_off_sideways(page: Page) -> None:
    set_viewport(page.driver, 360, 640)
    try:
        page.set("max_tokens", "30")
        page.ask("A long word: " + "x" * 200)
        right = """return Math.max(...Array.from(document.querySelectorAll('body *'),
                                         e => e.getBoundingClientRect().right))"""
        assert page.js("return document.documentElement.scrollWidth") <= 360
        assert page.js(right) <= 360
    finally:
        set_viewport(page.driver, *SIZE)


def test_a_refused_request_is_one_line_and_the_message_can_be_sent_again(page: Page) -> None:
    page.set("top_p", "0")
    page.type("Hi", Keys.ENTER)
    page.wait(lambda: page.error, "an error")
    assert page.error.startswith("top_p: must be in (0, 1]"), page.error
    assert page.texts("user") == [] and page.find("#input").get_property("value") == "Hi"
    page.set("top_p", "1")
    page.set("max_tokens", "5")
    assert page.ask("") and page.error == ""
