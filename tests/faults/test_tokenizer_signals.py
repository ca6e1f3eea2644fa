"""Ctrl-C while the BPE trainer's worker processes count pre-tokens: one line, exit 130, no
traceback from the parent or any worker, whatever moment the signal lands.

A terminal's Ctrl-C reaches the whole foreground process group, workers included, so each
case starts `gptpipe tokenizer` in a process group of its own and signals the group (or, as
`kill -INT PID` does, the command alone); the moments are measured from when the first
worker process appears.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers.faults import leftovers
from helpers.signals import default_sigint

# Seconds after the first worker appears: as the pool starts (workers still being forked and
# initialised), while the first tasks are handed out, and well into counting.
MOMENTS = [0.0, 0.005, 0.02, 0.1, 0.4, 1.0]
# (who gets the SIGINT, seconds after the first worker appears)
CASES = [("group", m) for m in MOMENTS] + [("command", m) for m in (0.0, 0.1, 0.4)]


@pytest.fixture(scope="module")
def wordy_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About 96 MB of varied words: two workers count it for several seconds even on a fast
    CPU (a 2-core Zen 5 counts 24 MB in under a second), so every moment lands while they
    count. Written once; each case stops the count at its signal."""
    path = tmp_path_factory.mktemp("wordy") / "corpus.txt"
    words = [f"w{i:x}{'abcdefgh'[i % 8] * (i % 5)}" for i in range(5000)]
    line = " ".join(words) + "\n"
    with path.open("w", encoding="utf-8") as fh:
        for i in range(1600):
            fh.write(line[i:] + line[:i])
            if i % 40 == 39:
                fh.write("<|endoftext|>\n")
    return path


def _group(pgid: int) -> list[int]:
    """The processes of process group `pgid` (read from /proc), zombies left out."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after its last ")".
        state, _, group = stat.rsplit(")", 1)[1].split()[:3]
        if int(group) == pgid and state != "Z":
            found.append(int(entry.name))
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
@pytest.mark.parametrize(("target", "after"), CASES, ids=[f"{t}-{m}s" for t, m in CASES])
def test_ctrl_c_while_workers_count_pretokens(wordy_corpus, tmp_path, target, after):
    (tmp_path / "params.yaml").write_text(
        "tokenizer:\n  kind: bpe\n  vocab_size: 300\n  workers: 2\n", encoding="utf-8"
    )
    out = tmp_path / "tokenizer"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gptpipe", "tokenizer", "--corpus", wordy_corpus, "--out", out],
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "120"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
        process_group=0,  # its own group, which Ctrl-C signals as a whole
    )
    try:
        deadline = time.monotonic() + 60
        while len(_group(proc.pid)) < 2 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.001)
        time.sleep(after)
        assert proc.poll() is None, f"finished before the signal: {proc.stderr.read()}"
        if target == "group":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1] == "gptpipe: interrupted", err
    assert not out.exists() and leftovers(tmp_path) == []
    time.sleep(0.05)
    assert _group(proc.pid) == []  # no worker outlives the command
