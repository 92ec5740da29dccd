"""Email over SMTP: multipart text + html, a Message-ID derived from the notification id.

Each worker thread keeps one SMTP connection open and reuses it, which is what makes hundreds of mails
per second possible; a dropped connection is reopened once before the attempt counts as failed.
"""

import re
import smtplib
import ssl
import threading
from email.charset import QP, Charset
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
from email.utils import formataddr, formatdate, parseaddr
from typing import Any

from pulse.delivery.providers import Claim
from pulse.errors import PermanentProviderError, ProviderThrottled, TransientProviderError
from pulse.settings import SmtpSettings

# SMTP has no code of its own for "too many": relays say it in the words of a 4xx reply (421 4.7.0
# "Try again later" alone is also what a relay going down says, and greylisting says that too).
_SLOW_DOWN = re.compile(
    r"throttl|rate.?limit|rate exceeded|unusual rate|slow down|too many (messages|mails|emails|connections)"
    r"|unexpected volume|server busy",
    re.IGNORECASE,
)

_UTF8_QP = Charset("utf-8")
_UTF8_QP.body_encoding = QP  # Readable in raw form, unlike base64.


def build_message(claim: Claim, *, sender: str, message_id_domain: str) -> Message:
    """Text, or text + html as multipart/alternative.

    Built with the compat32 MIME classes: they produce the same wire format as `EmailMessage` at a
    quarter of the CPU, which matters at hundreds of mails per second.
    """
    text = _text_part(claim.content["body"], "plain")
    html = claim.content.get("html")
    message: Message = text
    if html:
        message = MIMEMultipart("alternative")
        message.attach(text)
        message.attach(_text_part(html, "html"))
    message["From"] = formataddr(parseaddr(sender), charset="utf-8")
    message["To"] = claim.recipient
    message["Subject"] = Header(claim.content.get("subject", ""), "utf-8").encode()
    message["Date"] = formatdate(usegmt=True)
    # Stable across retries, so receiving systems can recognise a repeat.
    message["Message-ID"] = f"<{claim.notification_id}@{message_id_domain}>"
    message["X-Pulse-Notification-Id"] = str(claim.notification_id)
    return message


def _text_part(content: str, subtype: str) -> MIMENonMultipart:
    part = MIMENonMultipart("text", subtype)
    part.set_payload(content, charset=_UTF8_QP)
    return part


class SmtpProvider:
    def __init__(self, settings: SmtpSettings, *, name: str = "smtp") -> None:
        self.name = name
        self._settings = settings
        self._local = threading.local()

    def send(self, claim: Claim) -> dict[str, Any]:
        message = build_message(
            claim, sender=self._settings.from_address, message_id_domain=self._settings.message_id_domain
        )
        try:
            try:
                self._connection().send_message(message)
            except (smtplib.SMTPServerDisconnected, ConnectionError):  # an idle connection the server closed
                self._drop_connection()
                self._connection().send_message(message)
        except smtplib.SMTPRecipientsRefused as error:
            code, reply = next(iter(error.recipients.values()))
            raise _classify(code, reply) from error
        except smtplib.SMTPNotSupportedError as error:
            # E.g. an internationalised address and a relay without SMTPUTF8: retrying cannot help.
            raise PermanentProviderError(f"SMTP relay cannot send this message: {error}") from error
        except smtplib.SMTPResponseException as error:
            self._reset_after_error()
            raise _classify(error.smtp_code, error.smtp_error) from error
        except (OSError, smtplib.SMTPException) as error:
            self._drop_connection()
            raise TransientProviderError(f"SMTP connection failed: {error}") from error
        return {"message_id": message["Message-ID"]}

    def close(self) -> None:
        self._drop_connection()

    def _connection(self) -> smtplib.SMTP:
        connection: smtplib.SMTP | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._connect()
            self._local.connection = connection
        return connection

    def _connect(self) -> smtplib.SMTP:
        settings = self._settings
        connection: smtplib.SMTP
        if settings.use_tls:
            connection = smtplib.SMTP_SSL(
                settings.host,
                settings.port,
                timeout=settings.timeout_seconds,
                context=ssl.create_default_context(),
            )
        else:
            connection = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout_seconds)
        if settings.starttls:
            connection.starttls(context=ssl.create_default_context())
        if settings.username and settings.password:
            connection.login(settings.username, settings.password.get_secret_value())
        return connection

    def _reset_after_error(self) -> None:
        try:
            self._connection().rset()
        except (OSError, smtplib.SMTPException):
            self._drop_connection()

    def _drop_connection(self) -> None:
        connection: smtplib.SMTP | None = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            try:
                connection.quit()
            except (OSError, smtplib.SMTPException):
                connection.close()


def _classify(code: int, reply: bytes | str) -> TransientProviderError | PermanentProviderError:
    text = reply.decode(errors="replace") if isinstance(reply, bytes) else reply
    message = f"SMTP {code} {text}".strip()
    # RFC 5321: 4yz replies are transient, 5yz permanent.
    if 400 <= code < 500 and _SLOW_DOWN.search(text):
        return ProviderThrottled(message)
    if 400 <= code < 500:
        return TransientProviderError(message)
    return PermanentProviderError(message)
