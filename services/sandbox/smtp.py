"""Fake SMTP relay: stores every accepted mail once per RCPT TO, honouring injected faults."""

import asyncio
from email.headerregistry import HeaderRegistry
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from functools import lru_cache
from types import SimpleNamespace

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


class _SandboxSmtp(SMTP):
    """aiosmtpd's server with its MAIL FROM / RCPT TO address parsing memoized: it runs the email
    package's full header parser on every command, which cost more CPU than all the rest of a mail
    (and the same few addresses keep coming)."""

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        return _parsed_address(arg, self.local_part_limit)


@lru_cache(maxsize=4096)
def _parsed_address(arg: str, local_part_limit: int) -> tuple[str | None, str | None]:
    # The parse depends on nothing of the server but its local-part limit.
    return SMTP._getaddr(SimpleNamespace(local_part_limit=local_part_limit), arg)  # type: ignore[arg-type]


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
        for name, value in mail.items():
            headers.setdefault(name, str(value))  # repeated headers (e.g. Received) keep their first value
        subject = str(mail.get("Subject", ""))
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
