"""What counts as an address on each channel; values are returned normalised (E.164, the email
address's normalised form), and a ValueError says what is wrong."""

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from pulse.vocabulary import Channel
from pulse.webhooks.ssrf import RefusedUrl, split_url

MAX_RECIPIENT = 2048
MAX_USER_ID = 255  # The key a send names a recipient profile (and an inapp inbox) by.
MAX_DEVICE_TOKEN = 4096  # FCM registration tokens are far shorter; anything longer is not one.


def channel_address(channel: Channel, recipient: str) -> str:
    """`recipient` checked and normalised as an address of `channel`."""
    if channel is not Channel.PUSH and len(recipient) > MAX_RECIPIENT:
        raise ValueError(f"at most {MAX_RECIPIENT} characters")
    if channel is Channel.EMAIL:
        return email_address(recipient)
    if channel in (Channel.SMS, Channel.WHATSAPP):
        return phone_number(recipient)
    if channel is Channel.PUSH:
        return device_token(recipient)
    if channel is Channel.WEBHOOK:
        return webhook_url(recipient)
    if channel is Channel.INAPP and len(recipient) > MAX_USER_ID:
        raise ValueError(f"an inapp recipient is a user id, at most {MAX_USER_ID} characters")
    return recipient


def email_address(address: str) -> str:
    try:
        return validate_email(address, check_deliverability=False).normalized
    except EmailNotValidError as error:
        raise ValueError(f"not a valid email address: {error}") from error


def phone_number(recipient: str) -> str:
    """A phone number in E.164 (`+14155550100`); a `whatsapp:` prefix, as Twilio writes it, is dropped."""
    number = recipient.strip().removeprefix("whatsapp:").strip()
    try:
        parsed = phonenumbers.parse(number, None)  # No default region: the country code is required.
    except phonenumbers.NumberParseException as error:
        raise ValueError(
            "not a phone number in international format (+, country code, number: +14155550100)"
        ) from error
    if not phonenumbers.is_valid_number(parsed):
        raise ValueError("not a valid phone number")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def device_token(recipient: str) -> str:
    """A push device token (FCM registration token): opaque, but never blank, spaced or huge."""
    if len(recipient) > MAX_DEVICE_TOKEN:
        raise ValueError(f"a device token is at most {MAX_DEVICE_TOKEN} characters")
    if not recipient or any(char.isspace() for char in recipient):
        raise ValueError("not a device token: it must be non-empty and contain no whitespace")
    return recipient


def webhook_url(recipient: str) -> str:
    """An absolute http(s) URL (which addresses it may reach is the SSRF guard's business)."""
    try:
        split_url(recipient.strip())
    except RefusedUrl as error:
        raise ValueError(f"not a webhook URL: {error}") from error
    return recipient.strip()
