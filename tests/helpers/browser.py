"""A real headless Chromium for tests, driven by Selenium, with networking effectively off.

Debian's chromium and chromedriver (`apt-get install chromium chromium-driver`; .ci/run
installs them); a test that needs them is skipped, saying so, where either is missing.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


@contextlib.contextmanager
def headless_chromium(profile: Path, size: tuple[int, int] = (1280, 2400)) -> Iterator[Any]:
    """A Selenium driver of headless Chromium (window `size` in CSS pixels, profile in
    `profile`), quit afterwards. No host resolves but 127.0.0.1, and the proxy refuses, so a
    page gets nothing that is not in its own file or served on this machine. The browser's
    console is kept (`driver.get_log("browser")`)."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        pytest.skip(
            f"no browser to open the page: {', '.join(missing)} missing "
            "(Debian: apt-get install chromium chromium-driver)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--window-size={size[0]},{size[1]}",
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        "--proxy-server=127.0.0.1:9",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def set_viewport(driver: Any, width: int, height: int) -> None:
    """Size the window so that the page itself gets `width` x `height` CSS pixels (a
    screenshot's size): the window's own bars take some of its size."""
    driver.set_window_size(width, height)
    inner = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    driver.set_window_size(2 * width - inner[0], 2 * height - inner[1])


def ink(screenshot: Path | bytes) -> int:
    """The pixels of a PNG screenshot (a file, or its bytes) that are not white or nearly."""
    import matplotlib.image

    source = io.BytesIO(screenshot) if isinstance(screenshot, bytes) else screenshot
    pixels = matplotlib.image.imread(source, format="png")
    return int((pixels[..., :3] < 0.9).any(axis=-1).sum())
