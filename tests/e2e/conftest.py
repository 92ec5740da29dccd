"""End-to-end fixtures: a headless Chromium (Debian's chromium and chromium-driver; nothing is
downloaded) for the pages the gateway serves."""

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("PULSE_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("PULSE_TEST_CHROMEDRIVER", "/usr/bin/chromedriver"))
# Headless, and quiet on this machine's closed network: no background calls to Google's services. No
# name resolves but localhost: pages must work offline (what they load from a CDN fails at once).
CHROMIUM_ARGUMENTS = [
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
]


def _browser_installed() -> bool:
    return os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)


def _can_install_browser() -> bool:
    return os.geteuid() == 0 and Path("/etc/debian_version").exists()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    if not _browser_installed():
        if not _can_install_browser():
            pytest.skip(
                f"{CHROMIUM} or {CHROMEDRIVER} is missing and cannot be installed here (not root on Debian): "
                "install chromium and chromium-driver, or set PULSE_TEST_CHROMIUM / PULSE_TEST_CHROMEDRIVER"
            )
        subprocess.run([REPO / "scripts" / "ensure-test-tools.sh"], check=True, timeout=900)
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in CHROMIUM_ARGUMENTS:
        options.add_argument(argument)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
