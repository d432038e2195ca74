"""A headless Chromium from Debian, driven through its own chromedriver by Selenium.

Debian's `chromium` and `chromium-driver` come in matching versions, so nothing is downloaded:
the driver is named by path, which keeps Selenium Manager from looking for one. Each browser
gets a fresh profile directory, and its console (`goog:loggingPrefs`) is kept, so a test can
say the page logged no error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM = "/usr/bin/chromium"
WIDTH, HEIGHT = 1280, 900
# Where the tests leave their screenshots (gitignored): look at them after a failure.
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


class Browser:
    """One Chromium window: load a page, wait on a condition in it, read its console."""

    def __init__(self, driver: webdriver.Chrome) -> None:
        self.driver = driver
        self._console: list[dict[str, Any]] = []

    def open(self, url: str) -> None:
        self.driver.get(url)

    def script(self, code: str, *args: object) -> Any:
        return self.driver.execute_script(code, *args)

    def wait_for(self, code: str, *args: object, timeout: float = 60.0) -> Any:
        """Run `code` (a script body that returns something) until it returns a truthy value,
        and give that back; TimeoutException after `timeout` seconds."""
        return WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(
            lambda _driver: self.script(code, *args),
            message=f"the page never satisfied: {code}",
        )

    def wait_until(self, check: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
        return WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(
            lambda _driver: check(), message=f"timed out waiting for {what}"
        )

    def console(self) -> list[dict[str, Any]]:
        """Every console entry so far (Chromium hands each out once; they are kept here)."""
        self._console.extend(self.driver.get_log("browser"))
        return list(self._console)

    def severe(self) -> list[dict[str, Any]]:
        return [e for e in self.console() if e.get("level") == "SEVERE"]

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / name
        self.driver.save_screenshot(str(path))
        return path


@contextmanager
def chromium(
    profile: Path, chromedriver: str = CHROMEDRIVER, binary: str = CHROMIUM
) -> Iterator[Browser]:
    """A headless Chromium with a fresh profile in `profile`, closed on exit."""
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.add_argument(f"--window-size={WIDTH},{HEIGHT}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    try:
        driver.set_window_size(WIDTH, HEIGHT)
        yield Browser(driver)
    finally:
        driver.quit()
