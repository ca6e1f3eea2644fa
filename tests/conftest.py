"""Shared test settings."""

import subprocess
from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (and do not spin on a busy 2-core machine)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


REPO = Path(__file__).resolve().parents[1]


def _tracked_changes() -> set[str]:
    """Tracked files of the checkout that differ from the index (empty outside git)."""
    done = subprocess.run(
        ["git", "-C", str(REPO), "diff", "--name-only"], capture_output=True, text=True
    )
    return set(done.stdout.split()) if done.returncode == 0 else set()


@pytest.fixture(scope="session", autouse=True)
def tests_leave_the_checkout_alone():
    """No test writes into the repository's own files (stages run in temporary folders)."""
    before = _tracked_changes()
    yield
    written = sorted(_tracked_changes() - before)
    assert not written, f"tests changed tracked files of the checkout: {written}"
