"""Headless Chromium for the explorer page: one way for its tests, its benchmark and the README shot.

Debian's `chromium` and `chromium-driver` (scripts/ensure_chromium.sh installs them), driven by
Selenium with both paths given: Selenium Manager never looks for, or downloads, a browser or a
driver (SE_OFFLINE too), so this works on a machine that reaches package registries only. Never
imported by the predictor; Selenium is a dev dependency.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

BROWSERS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
DRIVERS = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")
WINDOW = (1360, 900)


class NoChromium(RuntimeError):
    """No usable Chromium, driver or Selenium here; the message says what is missing."""


def find_chromium() -> tuple[str, str]:
    """(browser, driver) paths of the system Chromium, or NoChromium naming what is missing."""
    browser = next((p for p in BROWSERS if os.access(p, os.X_OK)), shutil.which("chromium"))
    driver = next((p for p in DRIVERS if os.access(p, os.X_OK)), shutil.which("chromedriver"))
    if browser is None or driver is None:
        missing = " and ".join(n for n, p in (("chromium", browser), ("chromedriver", driver)) if p is None)
        raise NoChromium(
            f"no {missing}: run scripts/ensure_chromium.sh (apt-get install chromium chromium-driver)"
        )
    try:
        import selenium  # noqa: F401
    except ImportError as e:
        raise NoChromium("selenium is not installed (make venv)") from e
    return browser, driver


def start_chromium(window: tuple[int, int] = WINDOW, log_path: Path | None = None) -> Any:
    """A headless Chromium WebDriver that records the page's console (read with `console_errors`).

    `--no-sandbox`: tests and CI run as root, where Chromium's sandbox refuses to start.
    """
    browser, driver = find_chromium()
    os.environ["SE_OFFLINE"] = "true"  # belt and braces: the paths below already skip the Manager
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--disable-extensions",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--force-color-profile=srgb",
        f"--window-size={window[0]},{window[1]}",
        "--lang=en-GB",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(driver, log_output=str(log_path) if log_path else os.devnull)
    try:
        return webdriver.Chrome(options=options, service=service)
    except WebDriverException as e:
        raise NoChromium(f"chromium did not start: {e.msg}") from e


def console_errors(driver: Any) -> list[dict[str, Any]]:
    """The console entries at SEVERE level since the last call (errors, failed requests)."""
    return [entry for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]


def paint_timings(driver: Any) -> dict[str, float]:
    """The page's paint entries (first-paint, first-contentful-paint), in ms since navigation."""
    entries = driver.execute_script(
        "return performance.getEntriesByType('paint').map(e => [e.name, e.startTime]);"
    )
    return {str(name): float(start) for name, start in entries}


def answer_timings(driver: Any) -> list[float]:
    """Every `scenerec:answer` measure of the page so far (ask -> answer on screen), in ms."""
    values = driver.execute_script(
        "return performance.getEntriesByName('scenerec:answer').map(e => e.duration);"
    )
    return [float(v) for v in values]
