"""`gptpipe chat` on a real pseudo-terminal: answers, /commands, Ctrl-C, Ctrl-D."""

from __future__ import annotations

import io
import os
import pty
import select
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers.signals import default_sigint

from gptpipe.cli.chat import Session, run_session
from gptpipe.generate import generate_text
from gptpipe.generate.decode import Decoding
from gptpipe.model.folder import load_language_model, save_model
from gptpipe.model.gpt import GPT, GPTConfig
from gptpipe.tokenizer.folder import save_gpt2

CONFIG = GPTConfig(vocab_size=50257, block_size=64, n_layer=1, n_head=2, n_embd=32)


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("chat")
    save_gpt2(root / "tok")
    torch.manual_seed(0)
    model = GPT(CONFIG)
    save_model(root / "tuned", model, root / "tok", meta={"stage": "instruct"})
    save_model(root / "base", model, root / "tok", meta={"stage": "pretrain"})
    return {"tuned": root / "tuned", "base": root / "base"}


class Terminal:
    """A child process on a pseudo-terminal (its controlling terminal: ^C is SIGINT)."""

    def __init__(self, args: list[str]) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child
            os.environ["COLUMNS"] = "200"
            default_sigint()
            os.execv(sys.executable, [sys.executable, "-c", CHILD, *args])
        self.seen = ""

    def read_until(self, text: str, timeout: float = 60.0) -> str:
        """Everything read up to and including `text` (from the last read on)."""
        deadline = time.monotonic() + timeout
        while text not in self.seen:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{text!r} not seen; got {self.seen[-2000:]!r}")
            ready, _, _ = select.select([self.fd], [], [], left)
            if ready:
                try:
                    chunk = os.read(self.fd, 4096)
                except OSError:  # the child has gone
                    chunk = b""
                if not chunk:
                    raise AssertionError(f"EOF before {text!r}; got {self.seen[-2000:]!r}")
                self.seen += chunk.decode("utf-8", "replace").replace("\r\n", "\n")
        head, _, rest = self.seen.partition(text)
        self.seen = rest
        return head + text

    def send(self, data: str) -> None:
        os.write(self.fd, data.encode())

    def wait(self, timeout: float = 30.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                return os.waitstatus_to_exitcode(status)
            try:
                if select.select([self.fd], [], [], 0.1)[0]:
                    os.read(self.fd, 4096)
            except OSError:
                pass
        os.kill(self.pid, 9)
        raise AssertionError("the chat did not end")


CHILD = "import sys; from gptpipe.cli.app import app; sys.argv[0] = 'gptpipe'; app()"


def test_instruct_session_answers_changes_settings_stops_on_ctrl_c_and_ends_on_ctrl_d(
    folders: dict[str, Path],
) -> None:
    term = Terminal(["chat", "--model", str(folders["tuned"]), "--temperature", "0"])
    term.read_until("instruction-tuned")
    term.read_until("> ")
    term.send("/max_tokens 12\n")  # the alias of /max_new_tokens
    term.read_until("max_new_tokens = 12")
    term.read_until("> ")
    term.send("Name a colour.\n")
    answer = term.read_until("> ").removesuffix("> ")
    expected = generate_text(
        folders["tuned"], "Name a colour.", max_new_tokens=12, repetition_penalty=1.1
    )
    assert expected.strip() and expected in answer.replace("\r", "")
    term.send("/top_p 2\n")
    term.read_until("must be in (0, 1]")
    term.read_until("> ")
    term.send("/help\n")
    term.read_until("/max_tokens")
    term.read_until("/reset")
    term.read_until("> ")
    # a long answer, interrupted: the session goes on
    term.send("/max_new_tokens 100000\n")
    term.read_until("> ")
    term.send("/temperature 1\n")
    term.read_until("> ")
    term.send("Write a long story.\n")
    time.sleep(1.5)
    term.send("\x03")  # Ctrl-C
    term.read_until("(stopped)")
    term.read_until("> ")
    term.send("/settings\n")
    term.read_until("temperature 1.0")
    term.read_until("> ")
    term.send("\x04")  # Ctrl-D
    assert term.wait() == 0


def test_base_session_continues_the_text_and_reset_forgets(folders: dict[str, Path]) -> None:
    """The session logic in-process (the terminal itself is tested above)."""
    model, encoding = load_language_model(folders["base"], "cpu")
    decoding = Decoding(max_new_tokens=5)
    session = Session(model, encoding, decoding, False, torch.Generator().manual_seed(0))
    lines = iter(["Once upon a time\n", "there\n", "/reset\n", "/top_k x\n", "Once upon a time\n"])

    def read() -> str:
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    out, err = io.StringIO(), io.StringIO()
    assert run_session(session, read, out, err) == 3
    first, second, third = out.getvalue().splitlines()
    assert first == generate_text(folders["base"], "Once upon a time", max_new_tokens=5)
    assert second == generate_text(
        folders["base"], "Once upon a time" + first + "\nthere", max_new_tokens=5
    )  # a base model continues the whole conversation
    assert third == first  # after /reset it starts afresh
    assert "/top_k: expected an integer, got 'x'" in err.getvalue()


def test_a_failed_answer_keeps_the_session_and_the_conversation(folders: dict[str, Path]) -> None:
    """Sampling that fails (here: a NaN logit, as a diverged model gives, so that the sampled
    distribution is not one) is one line on stderr; the session and what was said go on."""
    model, encoding = load_language_model(folders["base"], "cpu")
    with torch.no_grad():
        model.lm_head.weight[encoding.encode_ordinary("!")[0]] = float("nan")
    decoding = Decoding(max_new_tokens=3, temperature=1.0)
    session = Session(model, encoding, decoding, False, torch.Generator().manual_seed(0))
    lines = iter(["Once upon a time\n", "/temperature 0\n", "/settings\n", "there\n"])

    def read() -> str:
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    out, err = io.StringIO(), io.StringIO()
    assert run_session(session, read, out, err) == 1  # the second line was answered
    failed = [line for line in err.getvalue().splitlines() if "could not answer" in line]
    assert len(failed) == 1 and "nan" in failed[0], err.getvalue()
    assert "temperature 0.0" in err.getvalue()  # the session went on
    assert session.transcript.startswith("Once upon a time\nthere")  # and kept the conversation
