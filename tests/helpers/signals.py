"""Children that a test interrupts with Ctrl-C must not inherit an ignored SIGINT.

A shell starts background jobs with SIGINT ignored (POSIX, without job control), and an
ignored SIGINT is inherited through fork and exec; Python then installs no KeyboardInterrupt
handler. So a suite started as `make test &` would see a child that Ctrl-C cannot stop and
fail for a reason that is not the product's. Each interrupted child starts with the default
disposition, as it would from an interactive terminal.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any


def default_sigint() -> None:
    """`preexec_fn` for a child that a test sends SIGINT (or run in a forked child)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def sigterm_after_checkpoint(
    cmd: list[str], cwd: Path, checkpoints: Path, log: Path, step: int = 3
) -> tuple[int, dict[str, Any] | None]:
    """Run a training command, send it SIGTERM once its checkpoint folder holds step `step`
    or later (within two minutes), and wait for it: (its exit status, the checkpoint's state
    after it stopped). Its output goes to `log`."""
    from gptpipe.train.state import read_checkpoint_state

    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            state = read_checkpoint_state(checkpoints)
            if state is not None and state["step"] >= step:
                break
            time.sleep(0.005)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    return proc.returncode, read_checkpoint_state(checkpoints)
