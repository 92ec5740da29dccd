"""The realtime demo page (GET /demo on the realtime service) in headless Chromium against the gateway:
sends appear without a reload, styled by priority; marking one read counts the badge down; what arrives
while disconnected shows up as missed on reconnect."""

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By

from devtools.stack import Infrastructure, Stack, running_stack
from pulse.tenants.service import Scope
from tests.conftest import wait_for_status
from tests.e2e.test_dashboard import _save_full_page_screenshot, _texts, _wait_for


@pytest.fixture(scope="module")
def demo_stack(private: Infrastructure, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    # The scheduler's outbox sweep publishes any send the gateway could not (a busy broker).
    with running_stack(
        private,
        tmp_path_factory.mktemp("realtime-demo"),
        services=("api", "inapp_worker", "scheduler", "realtime"),
    ) as stack:
        yield stack


def _send(client: httpx.Client, user_id: str, subject: str, priority: str) -> str:
    response = client.post(
        "/v1/notifications",
        json={
            "channel": "inapp",
            "recipient": user_id,
            "priority": priority,
            "content": {"subject": subject, "body": f"{subject}!"},
        },
    )
    assert response.status_code == 202, response.text
    notification_id: str = response.json()["id"]
    return notification_id


def _badge(driver: WebDriver) -> str:
    return driver.find_element(By.ID, "unread-badge").text


def _item_classes(driver: WebDriver) -> dict[str, Any]:
    found: dict[str, Any] = driver.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('#notifications li')]"
        ".map((li) => [li.dataset.id, li.className]));"
    )
    return found


def _connect(driver: WebDriver) -> None:
    driver.find_element(By.ID, "connect").click()
    _wait_for(
        driver,
        lambda d: d.find_element(By.ID, "status").get_attribute("data-state") == "connected",
        "the socket to open",
    )


def test_the_demo_shows_sends_live_counts_reads_down_and_shows_missed_ones(
    demo_stack: Stack,
    private: Infrastructure,
    browser: WebDriver,
) -> None:
    key = private.create_tenant_with_key(f"demo-{uuid.uuid4().hex[:6]}", Scope.SEND, Scope.READ)
    user_id = f"demo-{uuid.uuid4().hex[:6]}"
    browser.get(f"{demo_stack.realtime_url()}/demo")
    gateway = browser.find_element(By.ID, "gateway-url")
    gateway.clear()
    gateway.send_keys(demo_stack.api_url)
    browser.find_element(By.ID, "api-key").send_keys(key)
    user = browser.find_element(By.ID, "user-id")
    user.clear()
    user.send_keys(user_id)
    _connect(browser)
    _wait_for(browser, lambda d: _texts(d, "#log")[0].count("0 unread waiting"), "the empty missed list")

    with demo_stack.client(key) as client:
        urgent = _send(client, user_id, "Server down", "critical")
        routine = _send(client, user_id, "Weekly report", "normal")
        shown = _wait_for(
            browser, lambda d: len(c := _item_classes(d)) == 2 and c, "both sends, without a reload"
        )
        assert shown[urgent] == "priority-critical" and shown[routine] == "priority-normal"
        _wait_for(browser, lambda d: _badge(d) == "2", "the badge to count 2 unread")

        browser.find_element(By.CSS_SELECTOR, f'#notifications li[data-id="{urgent}"] .mark-read').click()
        _wait_for(browser, lambda d: _badge(d) == "1", "the badge to count down to 1")
        assert "read" in _item_classes(browser)[urgent].split()
        wait_for_status(client, urgent, "read")

        browser.find_element(By.ID, "disconnect").click()
        _wait_for(
            browser,
            lambda d: d.find_element(By.ID, "status").get_attribute("data-state") == "disconnected",
            "the disconnect",
        )
        while_away = _send(client, user_id, "Sent while you were away", "high")
        wait_for_status(client, while_away, "delivered")

    _connect(browser)
    missed = _wait_for(
        browser, lambda d: while_away in (c := _item_classes(d)) and c, "the missed notification"
    )
    assert missed[while_away] == "priority-high"
    assert _texts(browser, f'#notifications li[data-id="{while_away}"] .missed') == ["missed"]
    # Newest on top.
    assert _texts(browser, "#notifications li .subject")[0].startswith("Sent while you were away")
    _wait_for(browser, lambda d: _badge(d) == "2", "the badge to count the missed one")
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []
    _save_full_page_screenshot(browser, "realtime-demo.png")


def test_the_demo_page_is_served_with_a_content_security_policy(demo_stack: Stack) -> None:
    response = httpx.get(f"{demo_stack.realtime_url()}/demo", timeout=10)
    assert response.status_code == 200
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "innerHTML" not in httpx.get(f"{demo_stack.realtime_url()}/demo.js", timeout=10).text
