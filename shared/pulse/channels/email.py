"""Email over SMTP: multipart text + html, a Message-ID derived from the notification id.

Each worker thread keeps one SMTP connection open and reuses it, which is what makes hundreds of mails
per second possible; a dropped connection is reopened once before the attempt counts as failed.

A send ends by `PULSE_SMTP_DEADLINE_SECONDS`, connecting included: the socket timeout bounds each read
only, so a relay dripping its replies a byte at a time would hold the worker past its claim lease.
Hitting the deadline is worth trying again (on a new connection).
"""

import math
import re
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Callable
from email.charset import QP, Charset
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.nonmultipart import MIMENonMultipart
from email.utils import formataddr, formatdate, parseaddr
from typing import TYPE_CHECKING, Any

from pulse.delivery.providers import Claim
from pulse.errors import PermanentProviderError, ProviderThrottled, TransientProviderError
from pulse.settings import SmtpSettings

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

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


class _DeadlineReplies:
    """What smtplib reads replies from (its `file`): each read waits at most what is left of the
    connection's time (`remaining`), so a reply dripped a byte at a time ends at the deadline."""

    def __init__(self, sock: socket.socket, remaining: Callable[[], float]) -> None:
        self._sock = sock
        self._remaining = remaining
        self._buffer = b""

    def readline(self, limit: int) -> bytes:
        while b"\n" not in self._buffer and len(self._buffer) < limit:
            self._sock.settimeout(self._remaining())
            chunk = self._sock.recv(8192)
            if not chunk:
                break
            self._buffer += chunk
        end = self._buffer.find(b"\n", 0, limit)
        end = min(limit, len(self._buffer)) if end < 0 else end + 1
        line, self._buffer = self._buffer[:end], self._buffer[end:]
        return line

    def close(self) -> None:
        pass


class _DeadlineSMTP(smtplib.SMTP):
    """An SMTP connection whose every read and write waits at most `remaining()` seconds (connecting
    and the greeting included: the constructor does both)."""

    def __init__(self, host: str, port: int, *, remaining: Callable[[], float], **options: Any) -> None:
        self.remaining = remaining
        super().__init__(host, port, timeout=remaining(), **options)

    def send(self, s: "ReadableBuffer | str") -> None:
        if self.sock is not None:
            self.sock.settimeout(self.remaining())  # sendall's timeout bounds the whole write
        super().send(s)

    def getreply(self) -> tuple[int, bytes]:
        if self.file is None and self.sock is not None:  # a new connection, or one just upgraded to TLS
            self.file = _DeadlineReplies(self.sock, self.remaining)
        return super().getreply()


class _DeadlineSMTPSSL(_DeadlineSMTP, smtplib.SMTP_SSL):
    pass


class SmtpProvider:
    def __init__(self, settings: SmtpSettings, *, name: str = "smtp") -> None:
        self.name = name
        self._settings = settings
        self._local = threading.local()

    def _remaining(self) -> float:
        """What a read or write of this thread's connection may wait: the socket timeout, or less
        when the send's deadline is nearer. Raises TimeoutError once the deadline has passed."""
        deadline: float = getattr(self._local, "deadline", math.inf)
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no answer within the {self._settings.deadline_seconds:g} s deadline")
        return min(self._settings.timeout_seconds, left)

    def send(self, claim: Claim) -> dict[str, Any]:
        message = build_message(
            claim, sender=self._settings.from_address, message_id_domain=self._settings.message_id_domain
        )
        self._local.deadline = time.monotonic() + self._settings.deadline_seconds
        try:
            return self._send(message)
        finally:
            self._local.deadline = math.inf

    def _send(self, message: Message) -> dict[str, Any]:
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
            connection = _DeadlineSMTPSSL(
                settings.host, settings.port, remaining=self._remaining, context=ssl.create_default_context()
            )
        else:
            connection = _DeadlineSMTP(settings.host, settings.port, remaining=self._remaining)
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
