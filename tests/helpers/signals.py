"""Children that a test interrupts with Ctrl-C must not inherit an ignored SIGINT.

A shell starts background jobs with SIGINT ignored (POSIX, without job control), and an
ignored SIGINT is inherited through fork and exec; Python then installs no KeyboardInterrupt
handler. So a suite started as `make test &` would see a child that Ctrl-C cannot stop and
fail for a reason that is not the product's. Each interrupted child starts with the default
disposition, as it would from an interactive terminal.
"""

from __future__ import annotations

import signal


def default_sigint() -> None:
    """`preexec_fn` for a child that a test sends SIGINT (or run in a forked child)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
