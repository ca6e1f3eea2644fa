"""A real `gptpipe serve` for tests: a child process on 127.0.0.1 at a free port, its URL
read from the line it prints, stopped with SIGTERM (the way a service manager stops it)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from gptpipe.model.folder import save_model
from gptpipe.model.gpt import GPT, GPTConfig
from gptpipe.tokenizer.folder import save_gpt2
from helpers.signals import default_sigint

URL = re.compile(r"gptpipe serve: (http://\S+/) ")
TINY = GPTConfig(vocab_size=50257, block_size=96, n_layer=2, n_head=2, n_embd=64)


def model_folders(root: Path) -> dict[str, Path]:
    """A small base model and an instruction-tuned one (GPT-2's tokenizer, random weights:
    every greedy continuation is deterministic and long)."""
    save_gpt2(root / "tok")
    folders = {}
    for seed, name, stage in ((0, "base", "pretrain"), (1, "instruct", "instruct")):
        torch.manual_seed(seed)
        save_model(root / name, GPT(TINY), root / "tok", meta={"stage": stage})
        folders[name] = root / name
    return folders


@dataclass
class Server:
    """A running `gptpipe serve`: its URL and process; stderr is collected as it comes."""

    url: str
    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, then wait for it to exit; its exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)


@contextlib.contextmanager
def serving(*args: str | Path, env: dict[str, str] | None = None) -> Iterator[Server]:
    """`gptpipe serve ARGS --port 0`, up and answering, stopped afterwards."""
    command = [sys.executable, "-m", "gptpipe", "serve", *map(str, args), "--port", "0"]
    process = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
        preexec_fn=default_sigint,
    )
    assert process.stderr is not None
    lines: list[str] = []
    found: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            match = URL.search(line)
            if match and not found:
                found.append(match.group(1))
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(120) or not found:
        process.kill()
        raise RuntimeError(f"gptpipe serve did not start: {''.join(lines)}")
    server = Server(found[0], process, lines)
    try:
        _wait_healthy(server.url)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()


def _wait_healthy(url: str) -> None:
    import urllib.request

    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url + "health", timeout=5) as reply:
                if reply.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
