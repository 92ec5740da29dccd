"""The SMTP provider against a relay that drips its replies."""

from urllib.parse import urlsplit

import pytest

from pulse.channels.email import SmtpProvider
from pulse.settings import SmtpSettings
from tests.channels.conftest import RawServer, assert_cut_at_half_a_second
from tests.delivery.test_circuit import CLAIM

# A greeting that takes 20 s at a byte every 0.1 s: the socket timeout (per read) never trips.
SLOW_GREETING = b"220 " + b"." * 196 + b"\r\n"


@pytest.mark.timeout(10)  # without a deadline, the greeting takes 20 s
def test_a_greeting_dripped_a_byte_at_a_time_ends_at_the_deadline(raw_server: RawServer) -> None:
    relay = urlsplit(raw_server(SLOW_GREETING, 1, 0.1, read_request=False))
    assert relay.hostname is not None and relay.port is not None
    provider = SmtpProvider(
        SmtpSettings(host=relay.hostname, port=relay.port, timeout_seconds=2, deadline_seconds=0.5)
    )
    assert_cut_at_half_a_second(lambda: provider.send(CLAIM))
