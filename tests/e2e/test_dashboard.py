"""End to end in a real browser: GET /dashboard, driven in headless Chromium (Debian's chromium and
chromium-driver; nothing is downloaded), shows a tenant's live figures from the /v1 API."""

import base64
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.wait import WebDriverWait

from devtools.stack import Stack
from tests.conftest import Tenant, wait_for_status
from tests.e2e.test_email_delivery import _email

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "artifacts"
KEY_STORAGE = "pulse.dashboard.apiKey"


@pytest.fixture
def sandbox(stack: Stack) -> Iterator[httpx.Client]:
    with stack.sandbox() as client:
        yield client
        client.delete("/api/faults")


def _recipient(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}@example.com"


def _send(client: httpx.Client, recipient: str) -> str:
    response = client.post("/v1/notifications", json=_email(recipient))
    assert response.status_code == 202, response.text
    notification_id: str = response.json()["id"]
    return notification_id


def _wait_for(
    driver: WebDriver, condition: Callable[[WebDriver], Any], what: str, timeout: float = 30
) -> Any:
    """Poll the page (it re-renders every 5 s) until `condition` returns something truthy."""
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.2).until(condition)
    except TimeoutException:
        banner = _texts(driver, "#error-banner")
        pytest.fail(f"timed out after {timeout}s waiting for {what} (error banner: {banner})")


def _texts(driver: WebDriver, selector: str) -> list[str]:
    """The text of every element matching `selector`, read in one go (rows are replaced on refresh)."""
    texts: list[str] = driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])].map((node) => node.textContent.trim());",
        selector,
    )
    return texts


def _row(driver: WebDriver, table: str, channel: str) -> list[str]:
    return _texts(driver, f'#{table} tbody tr[data-channel="{channel}"] > *')


def _visible(driver: WebDriver, selector: str) -> bool:
    return bool(driver.find_element(By.CSS_SELECTOR, selector).is_displayed())


def _enter_key(driver: WebDriver, key: str) -> None:
    _wait_for(driver, lambda d: _visible(d, "#key-panel"), "the page to ask for an API key")
    driver.find_element(By.ID, "api-key-input").send_keys(key)
    driver.find_element(By.CSS_SELECTOR, "#key-form button[type=submit]").click()


def _save_full_page_screenshot(driver: WebDriver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
    shot = driver.execute_cdp_cmd("Page.captureScreenshot", {"captureBeyondViewport": True, "clip": clip})
    path = ARTIFACTS / name
    path.write_bytes(base64.b64decode(shot["data"]))
    return path


def test_the_dashboard_shows_the_tenant_s_figures_recent_notifications_and_queues(
    stack: Stack, make_tenant: Callable[..., Tenant], sandbox: httpx.Client, browser: WebDriver
) -> None:
    tenant = make_tenant("send,read")
    failing, delivered = _recipient("bounce"), [_recipient("dash") for _ in range(3)]
    with stack.client(tenant.api_key) as client:
        sandbox.post(
            "/api/faults", json={"endpoint": "smtp", "status": 550, "fail_next": 1}
        ).raise_for_status()
        wait_for_status(client, _send(client, failing), "failed")
        sandbox.delete("/api/faults").raise_for_status()
        for notification_id in [_send(client, recipient) for recipient in delivered]:
            wait_for_status(client, notification_id, "delivered")

    browser.get(f"{stack.api_url}/dashboard")
    _enter_key(browser, tenant.api_key)

    failure_row = _wait_for(
        browser,
        lambda d: (
            (row := _row(d, "failure-rate-table", "email"))[:5] == ["email", "4", "3", "1", "25.0 %"] and row
        ),
        "the email row of the failure-rate table: 4 total, 3 delivered, 1 failed, 25.0 %",
    )
    assert "550" in failure_row[5]  # the top failure reason
    level = browser.find_element(By.CSS_SELECTOR, '#failure-rate-table tr[data-channel="email"]')
    assert level.get_attribute("data-level") == "alert"  # red: at or over 20 %

    retries_row = _row(browser, "delivery-table", "email")
    assert retries_row[:3] == ["email", "1.00", "0"]  # average attempts, retried
    assert all(cell != "—" for cell in retries_row[3:]), retries_row  # avg and p95 delivery time

    def feed_lists_every_recipient(driver: WebDriver) -> list[str] | None:
        rows = _texts(driver, "#recent-table tbody tr")
        return rows if all(any(r in row for row in rows) for r in [failing, *delivered]) else None

    feed = _wait_for(browser, feed_lists_every_recipient, "the recent feed to list every recipient")
    [failed_row] = [row for row in feed if failing in row]
    assert "failed" in failed_row
    assert len(feed) == 4
    statuses = _texts(browser, "#recent-table tbody .badge")
    assert sorted(statuses) == ["delivered", "delivered", "delivered", "failed"]

    legend = _texts(browser, "#throughput-legend [data-series]")
    assert legend == ["4 accepted", "3 delivered", "1 failed"]
    chart = browser.find_element(By.ID, "throughput-chart")
    assert chart.tag_name == "svg"
    bars = chart.find_elements(By.CSS_SELECTOR, "rect.bar")
    assert {bar.get_attribute("class") for bar in bars} == {"bar accepted", "bar delivered", "bar failed"}
    assert len(chart.find_elements(By.CSS_SELECTOR, "rect.column")) == 60  # one per minute

    queue_row = _row(browser, "queue-table", "email")
    assert queue_row[0] == "emailpulse.email.*"
    email_queues = browser.find_elements(By.CSS_SELECTOR, '#queue-table td[data-queue^="pulse.email."]')
    assert [cell.get_attribute("data-queue") for cell in email_queues] == [
        f"pulse.email.{priority}" for priority in ("critical", "high", "normal", "low")
    ]
    assert all(cell.text.isdigit() for cell in email_queues)
    [dead_count] = _texts(browser, '#dead-letter-counts [data-queue="pulse.email.dead"]')
    assert dead_count.startswith("email ")

    dead_letters = _texts(browser, "#dead-letter-table tbody tr")
    [dead_letter] = [row for row in dead_letters if failing in row]
    assert "550" in dead_letter

    assert _texts(browser, "#refresh-status")[0].startswith("Last refreshed")
    assert not _visible(browser, "#error-banner")
    assert not _visible(browser, "#key-panel")
    # Nothing went wrong in the page: no script error, no request or inline code refused by the CSP.
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []

    _save_full_page_screenshot(browser, "dashboard.png")

    # The key is remembered: a reload shows the figures without asking again.
    browser.refresh()
    _wait_for(
        browser,
        lambda d: _row(d, "failure-rate-table", "email")[:5] == ["email", "4", "3", "1", "25.0 %"],
        "the figures again after a reload",
    )
    assert not _visible(browser, "#key-panel")


def test_a_rejected_key_shows_an_error_and_asks_again_and_a_forgotten_key_is_removed(
    stack: Stack, browser: WebDriver
) -> None:
    browser.get(f"{stack.api_url}/dashboard")
    browser.execute_script("localStorage.setItem(arguments[0], 'pk_not_a_key');", KEY_STORAGE)
    browser.refresh()

    banner = _wait_for(
        browser,
        lambda d: _visible(d, "#error-banner") and _texts(d, "#error-banner")[0],
        "the error banner",
    )
    assert "rejected" in banner
    assert "401" in banner
    assert _visible(browser, "#key-panel")
    assert _texts(browser, "#refresh-status")[0] == "Not refreshed yet"

    browser.find_element(By.ID, "forget-key").click()
    assert browser.execute_script("return localStorage.getItem(arguments[0]);", KEY_STORAGE) is None
    assert _texts(browser, "#refresh-status")[0] == "No API key"


def test_the_page_is_served_without_a_key_with_a_strict_content_security_policy(stack: Stack) -> None:
    response = httpx.get(f"{stack.api_url}/dashboard", timeout=10)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "script-src 'sha256-" in policy
    assert "unsafe-inline" not in policy
    assert "connect-src 'self'" in policy
    # Data reaches the page as text only: no markup is ever built from it.
    assert "innerHTML" not in response.text
    assert "/dashboard" not in httpx.get(f"{stack.api_url}/openapi.json", timeout=10).json()["paths"]
