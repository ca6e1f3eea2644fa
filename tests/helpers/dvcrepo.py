"""Real `git` and `dvc` for tests: a command run with the virtualenv's tools on PATH, and a new
committed git + DVC repository."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent  # the virtualenv's bin: dvc and gptpipe


def run(
    cwd: Path, *args: str, check: bool = True, timeout: float = 900, **env_vars: str
) -> subprocess.CompletedProcess[str]:
    """`args` in `cwd` with the virtualenv first on PATH (and `env_vars` set); a failure shows
    its output unless `check` is False."""
    path = f"{BIN}{os.pathsep}{os.environ['PATH']}"
    env = {**os.environ, "PATH": path, "DVC_NO_ANALYTICS": "1", **env_vars}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result


def new_repository(root: Path, message: str) -> None:
    """`root` (its files already written) as a git + DVC repository, everything committed."""
    run(root, "git", "init", "-q")
    run(root, "git", "config", "user.email", "ci@example.invalid")
    run(root, "git", "config", "user.name", "ci")
    run(root, "dvc", "init", "-q")
    run(root, "dvc", "config", "core.analytics", "false")
    run(root, "git", "add", "-A")
    run(root, "git", "commit", "-qm", message)
