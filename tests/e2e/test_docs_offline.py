"""End to end in a real browser: /docs (Swagger UI) and /redoc render the API's operations with no
name resolving but localhost (see CHROMIUM_ARGUMENTS), i.e. from the gateway's own files, no CDN."""

import pytest
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.support.wait import WebDriverWait

from devtools.stack import Stack


def _rendered(driver: WebDriver, selector: str, text: str) -> list[str]:
    """The texts of the elements matching `selector` once one of them contains `text`."""

    def texts(driver: WebDriver) -> list[str] | None:
        found: list[str] = driver.execute_script(
            "return [...document.querySelectorAll(arguments[0])].map((node) => node.textContent);", selector
        )
        return found if any(text in item for item in found) else None

    try:
        return WebDriverWait(driver, 30, poll_frequency=0.2).until(texts)
    except TimeoutException:
        logs = [entry["message"] for entry in driver.get_log("browser")]
        pytest.fail(f"{driver.current_url} never showed {text!r} in {selector}; browser log: {logs}")


@pytest.mark.parametrize(
    ("page", "operations"),
    [("/docs", ".opblock-summary-path"), ("/redoc", "[data-section-id^='operation']")],
)
def test_the_api_reference_renders_without_internet_access(
    stack: Stack, browser: WebDriver, page: str, operations: str
) -> None:
    browser.get(stack.api_url + page)
    assert "/v1/notifications" in "".join(_rendered(browser, operations, "/v1/notifications"))
