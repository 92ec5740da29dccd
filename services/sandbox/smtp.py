"""Fake SMTP relay: stores every accepted mail once per RCPT TO, honouring injected faults."""

import asyncio
import re
from email.header import decode_header, make_header
from email.headerregistry import HeaderRegistry
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from functools import lru_cache

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from services.sandbox.faults import FaultInjector
from services.sandbox.store import MessageStore, new_message

DATA_SIZE_LIMIT = 10 * 1024 * 1024
# A fixed greeting name: otherwise aiosmtpd resolves the FQDN (a DNS lookup) on every connection.
SERVER_HOSTNAME = "pulse-sandbox"
# A fault of HTTP status 429 gets SMTP's nearest answer: a 421 that says "slow down" in words (SMTP
# has no code of its own for it).
_TOO_MANY_REQUESTS = 429

# policy.default re-parses a header on every access, and the parser alone reads Content-Type about a
# dozen times per multipart mail: memoizing the (immutable) parsed headers makes parsing ~4x cheaper.
_parser = BytesParser(policy=default_policy.clone(header_factory=lru_cache(maxsize=4096)(HeaderRegistry())))


# `<local@domain>`, then any parameters, with a dot-atom local part and a plain domain: what Pulse and
# most clients send. Anything else (quoted local parts, address literals, comments) is parsed in full.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOMAIN = r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
_PARAMS = r"[^\s(][^(]*"
_PLAIN_PATH = re.compile(rf"<(?P<address>{_ATEXT}(?:\.{_ATEXT})*@{_DOMAIN})>(?:[ \t]+(?P<params>{_PARAMS}))?")


class _SandboxSmtp(SMTP):
    """aiosmtpd's server with a fast path for plain MAIL FROM / RCPT TO addresses: it runs the email
    package's full header parser on every command, which cost more CPU than all the rest of a mail."""

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        plain = _PLAIN_PATH.fullmatch(arg)
        if plain is None:
            return super()._getaddr(arg)
        address = plain["address"]
        if self.local_part_limit and len(address.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return address, plain["params"] or ""


class _SandboxController(Controller):
    def factory(self) -> SMTP:
        return _SandboxSmtp(self.handler, **self.SMTP_kwargs)


class SandboxSmtpHandler:
    """``account`` names this listener to faults (a fault without one applies to every listener);
    ``provider`` is what its stored messages say they came through."""

    def __init__(
        self, store: MessageStore, faults: FaultInjector, *, account: str = "primary", provider: str = "smtp"
    ) -> None:
        self._store = store
        self._faults = faults
        self._account = account
        self._provider = provider

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        delay_seconds, status, _retry_after = self._faults.decide("smtp", account=self._account)
        if delay_seconds:
            await asyncio.sleep(delay_seconds)
        if status == _TOO_MANY_REQUESTS:
            return "421 4.7.0 sandbox: rate limit exceeded, too many messages, try again later"
        if status is not None:
            return f"{status} sandbox: injected failure"

        mail = _parser.parsebytes(envelope.original_content or b"")
        headers: dict[str, str] = {}
        for name, value in mail.raw_items():  # a repeated header (e.g. Received) keeps its first value
            headers.setdefault(name, _decoded(value))
        subject = next((value for name, value in headers.items() if name.lower() == "subject"), "")
        body, html = _text_part(mail, "plain"), _text_part(mail, "html")
        message_id = headers.get("Message-ID")
        for recipient in envelope.rcpt_tos:
            self._store.add(
                new_message(
                    channel="email",
                    provider=self._provider,
                    recipient=recipient,
                    subject=subject,
                    body=body or "",
                    html=html,
                    headers=headers,
                ),
                identity=f"smtp:{recipient}:{message_id}" if message_id else None,
            )
        return "250 OK"


def _decoded(raw: str) -> str:
    """A header's value unfolded, its encoded words (RFC 2047) decoded. Not the email package's
    structured headers (`mail.items()`): they parse every address, date and message id, which cost
    more than the rest of the mail, and a header kept for display needs none of it."""
    unfolded = _FOLD.sub("", raw)
    return str(make_header(decode_header(unfolded))) if "=?" in unfolded else unfolded


_FOLD = re.compile(r"\r?\n(?=[ \t])")


def _text_part(mail: EmailMessage, subtype: str) -> str | None:
    part = mail.get_body(preferencelist=(subtype,))
    if part is None:
        return None
    try:
        content: str = part.get_content()
    except LookupError:  # unknown charset: keep the mail readable rather than reject it
        payload = part.get_payload(decode=True)
        content = payload.decode("utf-8", errors="replace") if isinstance(payload, bytes) else ""
    return content


def create_smtp_controller(
    store: MessageStore,
    faults: FaultInjector,
    host: str,
    port: int,
    *,
    account: str = "primary",
    provider: str = "smtp",
) -> Controller:
    return _SandboxController(
        SandboxSmtpHandler(store, faults, account=account, provider=provider),
        hostname=host,
        port=port,
        server_hostname=SERVER_HOSTNAME,
        decode_data=False,
        enable_SMTPUTF8=True,
        data_size_limit=DATA_SIZE_LIMIT,
    )
