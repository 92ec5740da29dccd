"""The Twilio provider against the sandbox's Twilio endpoint (in-process), and SMS segment counting."""

import uuid
from datetime import UTC, datetime

import httpx
import pytest
from pydantic import SecretStr

from devtools.stack import free_port
from pulse.channels.sms import TwilioProvider, sms_segments
from pulse.delivery.providers import Claim
from pulse.errors import PermanentProviderError, TransientProviderError
from pulse.settings import TwilioSecondary, TwilioSettings
from pulse.vocabulary import Channel, Priority
from services.sandbox.faults import Fault, FaultInjector
from services.sandbox.store import MessageStore
from tests.channels.conftest import (
    SLOW_HEAD,
    RawServer,
    assert_cut_at_half_a_second,
    assert_read_in_little_memory,
    huge_answer,
)

HOST = "127.0.0.1"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("", ("GSM-7", 1), id="empty"),
        pytest.param("a" * 160, ("GSM-7", 1), id="gsm7-single-full"),
        pytest.param("a" * 161, ("GSM-7", 2), id="gsm7-two-parts"),
        pytest.param("a" * 306, ("GSM-7", 2), id="gsm7-two-parts-full"),
        pytest.param("a" * 307, ("GSM-7", 3), id="gsm7-three-parts"),
        pytest.param("€" * 80, ("GSM-7", 1), id="extension-chars-count-double"),
        pytest.param("€" * 81, ("GSM-7", 2), id="extension-chars-overflow"),
        # 152 septets, then an escape pair that may not be split: it starts the second part.
        pytest.param("a" * 152 + "{" + "a" * 10, ("GSM-7", 2), id="escape-pair-not-split"),
        pytest.param("a" * 152 + "{" + "a" * 152, ("GSM-7", 3), id="escape-pair-moves-to-next-part"),
        pytest.param("Grüße aus Köln, señor Ñandu!", ("GSM-7", 1), id="gsm7-accents"),
        pytest.param("ç" * 70, ("UCS-2", 1), id="ucs2-single-full"),  # lower-case ç is not in GSM-7
        pytest.param("Привет" * 12, ("UCS-2", 2), id="ucs2-two-parts"),
        pytest.param("ж" * 134, ("UCS-2", 2), id="ucs2-two-parts-full"),
        pytest.param("ж" * 135, ("UCS-2", 3), id="ucs2-three-parts"),
        pytest.param("😀" * 35, ("UCS-2", 1), id="emoji-are-surrogate-pairs"),
        pytest.param("😀" * 36, ("UCS-2", 2), id="emoji-overflow"),
    ],
)
def test_sms_segments(text: str, expected: tuple[str, int]) -> None:
    assert sms_segments(text) == expected


def _provider(
    base_url: str, *, timeout_seconds: float = 10.0, deadline_seconds: float = 15.0
) -> TwilioProvider:
    return TwilioProvider(
        TwilioSettings(base_url=base_url, timeout_seconds=timeout_seconds, deadline_seconds=deadline_seconds)
    )


def _claim(channel: Channel = Channel.SMS, body: str = "Your code is 123456") -> Claim:
    return Claim(
        notification_id=uuid.uuid4(),
        tenant_id=uuid.uuid4(),
        channel=channel,
        priority=Priority.NORMAL,
        recipient="+14155550100",
        content={"body": body},
        attempt_number=1,
        attempts_left=3,
        created_at=datetime.now(UTC),
    )


def test_an_sms_and_a_whatsapp_message_reach_the_sandbox(
    sandbox: tuple[str, MessageStore, FaultInjector],
) -> None:
    url, store, _ = sandbox
    provider = _provider(url)
    sms_details = provider.send(_claim(Channel.SMS, "Hello by SMS"))
    provider.send(_claim(Channel.WHATSAPP, "Hello by WhatsApp"))

    items, _ = store.search(limit=10)
    whatsapp, sms = items
    assert (sms["channel"], sms["recipient"], sms["body"]) == ("sms", "+14155550100", "Hello by SMS")
    assert sms["headers"]["From"] == "+15005550006"
    assert (whatsapp["channel"], whatsapp["recipient"]) == ("whatsapp", "+14155550100")
    assert whatsapp["headers"]["To"] == "whatsapp:+14155550100"
    assert whatsapp["headers"]["From"] == "whatsapp:+15005550006"
    assert whatsapp["provider"] == "twilio"
    # What the attempt keeps: Twilio's message sid and the segments the carrier bills.
    assert sms_details["message_sid"].startswith("SM")
    assert (sms_details["segments"], sms_details["encoding"]) == (1, "GSM-7")


def test_a_ucs2_sms_reports_its_segments(sandbox: tuple[str, MessageStore, FaultInjector]) -> None:
    url, _, _ = sandbox
    details = _provider(url).send(_claim(body="Ж" * 71))
    assert (details["segments"], details["encoding"]) == (2, "UCS-2")


@pytest.mark.parametrize("status", [429, 500, 503])
def test_throttling_and_server_errors_are_transient(
    sandbox: tuple[str, MessageStore, FaultInjector], status: int
) -> None:
    url, store, faults = sandbox
    faults.set_fault(_fault(status))
    with pytest.raises(TransientProviderError) as raised:
        _provider(url).send(_claim())
    assert str(status) in str(raised.value)
    assert raised.value.retry_after == (
        1.0 if status == 429 else None
    )  # the sandbox sends Retry-After on 429
    assert store.count() == 0


def test_other_client_errors_are_permanent_and_carry_twilios_code(
    sandbox: tuple[str, MessageStore, FaultInjector],
) -> None:
    url, _, faults = sandbox
    faults.set_fault(_fault(400))
    with pytest.raises(PermanentProviderError, match=r"Twilio 400 \(code 21211\): The 'To' number"):
        _provider(url).send(_claim())


def test_wrong_credentials_are_permanent(sandbox: tuple[str, MessageStore, FaultInjector]) -> None:
    url, _, _ = sandbox
    provider = TwilioProvider(TwilioSettings(base_url=url))
    # The path names another account (the BoundedClient's httpx client signs the requests).
    provider._client._client.auth = httpx.BasicAuth("ACsomeone-else", "token")
    with pytest.raises(PermanentProviderError, match="20003"):
        provider.send(_claim())


def test_timeouts_and_refused_connections_are_transient(
    sandbox: tuple[str, MessageStore, FaultInjector],
) -> None:
    url, _, faults = sandbox
    faults.set_fault(_fault(503, rate=0.0, latency_ms=1000))
    with pytest.raises(TransientProviderError, match="Timeout"):
        _provider(url, timeout_seconds=0.2).send(_claim())
    with pytest.raises(TransientProviderError, match="ConnectError"):
        _provider(f"http://{HOST}:{free_port()}").send(_claim())


@pytest.mark.timeout(10)  # without a deadline, the answer takes 24 s
def test_an_answer_dripped_a_byte_at_a_time_ends_at_the_deadline(raw_server: RawServer) -> None:
    provider = _provider(raw_server(SLOW_HEAD, 1, 0.1), timeout_seconds=2, deadline_seconds=0.5)
    assert_cut_at_half_a_second(lambda: provider.send(_claim()))


def test_a_huge_answer_is_not_read_into_memory(raw_server: RawServer) -> None:
    provider = _provider(raw_server(huge_answer(), 65536, 0))
    assert_read_in_little_memory(lambda: provider.send(_claim()), "Twilio 503")


def test_a_secondary_account_is_configured_only_with_its_base_url() -> None:
    primary = TwilioSettings(auth_token=SecretStr("primary-token"))
    assert primary.secondary_settings() is None
    secondary = primary.model_copy(
        update={
            "secondary": TwilioSecondary(base_url="https://api.backup.example", account_sid="AC" + "2" * 32)
        }
    ).secondary_settings()
    assert secondary is not None
    assert (secondary.base_url, secondary.account_sid) == ("https://api.backup.example", "AC" + "2" * 32)
    assert secondary.auth_token.get_secret_value() == "primary-token"  # defaults to the primary's
    assert secondary.from_number == primary.from_number


def _fault(status: int, *, rate: float = 1.0, latency_ms: int = 0) -> Fault:
    return Fault(endpoint="twilio", status=status, rate=rate, latency_ms=latency_ms)
