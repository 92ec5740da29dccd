"""SMS and WhatsApp over Twilio's Messages API (`POST /2010-04-01/Accounts/{sid}/Messages.json`).

One pooled HTTP client per provider, shared by every worker thread. A request ends by
`PULSE_TWILIO_DEADLINE_SECONDS` and at most 64 KiB of an answer are read (pulse.channels.http.
BoundedClient), so an answer dripped by Twilio or anything in between holds no worker past its claim
lease.

Twilio answers 201 once it has queued the message; a 5xx, the deadline, timeouts and connection
errors are worth trying again, a 429 is throttling (ProviderThrottled: it goes back without using an
attempt), any other 4xx (bad number, unverified sender, blocked content) is permanent.
"""

from typing import Any, Literal

import httpx

from pulse.channels.http import Answer, BoundedClient, json_object, retry_after_seconds
from pulse.delivery.providers import Claim
from pulse.errors import PermanentProviderError, ProviderThrottled, TransientProviderError
from pulse.settings import TwilioSettings
from pulse.vocabulary import Channel

Encoding = Literal["GSM-7", "UCS-2"]

# GSM 03.38: the basic character set (one septet each) and its extension table (escape + septet).
_GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")
# (capacity of a single message, capacity of each part of a concatenated one) in code units: the
# user data header of a concatenated message takes 7 septets (GSM-7) or 3 UCS-2 characters.
_CAPACITY: dict[Encoding, tuple[int, int]] = {"GSM-7": (160, 153), "UCS-2": (70, 67)}


def sms_segments(text: str) -> tuple[Encoding, int]:
    """The encoding a text is sent in, and how many SMS segments it takes (what the carrier bills)."""
    encoding: Encoding
    if all(char in _GSM7_BASIC or char in _GSM7_EXTENSION for char in text):
        encoding = "GSM-7"
        units = [2 if char in _GSM7_EXTENSION else 1 for char in text]
    else:
        encoding = "UCS-2"
        units = [2 if ord(char) > 0xFFFF else 1 for char in text]  # UTF-16 surrogate pairs
    single, part = _CAPACITY[encoding]
    if sum(units) <= single:
        return encoding, 1
    # A character's code units are never split across two parts (an escape and its septet, or a
    # surrogate pair), so a part may hold one unit less than its capacity.
    segments, used = 1, 0
    for size in units:
        if used + size > part:
            segments, used = segments + 1, 0
        used += size
    return encoding, segments


class TwilioProvider:
    def __init__(self, settings: TwilioSettings, *, name: str = "twilio") -> None:
        self.name = name
        self._settings = settings
        self._client = BoundedClient(
            deadline_seconds=settings.deadline_seconds,
            base_url=settings.base_url.rstrip("/"),
            auth=(settings.account_sid, settings.auth_token.get_secret_value()),
            timeout=settings.timeout_seconds,
            headers={"Accept": "application/json"},
        )
        self._path = f"/2010-04-01/Accounts/{settings.account_sid}/Messages.json"

    def send(self, claim: Claim) -> dict[str, Any]:
        body: str = claim.content["body"]
        prefix = "whatsapp:" if claim.channel is Channel.WHATSAPP else ""
        form = {"To": prefix + claim.recipient, "From": prefix + self._settings.from_number, "Body": body}
        try:
            response = self._client.post(self._path, data=form)
        except httpx.TransportError as error:  # the deadline, timeouts, refused or dropped connections
            raise TransientProviderError(f"Twilio request failed: {error!r}") from error
        if response.is_success:
            encoding, segments = sms_segments(body)
            sid = json_object(response).get("sid")
            return {"message_sid": sid, "segments": segments, "encoding": encoding}
        raise _classify(response)

    def close(self) -> None:
        self._client.close()


def _classify(response: Answer) -> TransientProviderError | PermanentProviderError:
    error = json_object(response)
    message = f"Twilio {response.status_code}"
    if "code" in error or "message" in error:
        message += f" (code {error.get('code')}): {error.get('message', '')}"
    else:
        message += f": {response.text[:200]}"
    if response.status_code == 429:
        return ProviderThrottled(message, retry_after=retry_after_seconds(response))
    if response.status_code >= 500:
        return TransientProviderError(message, retry_after=retry_after_seconds(response))
    return PermanentProviderError(message)
