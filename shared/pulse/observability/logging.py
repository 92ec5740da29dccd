"""Structured logs: one JSON object per line, carrying the request id that flows from the HTTP
request (X-Request-ID) into Celery message headers and the worker's log lines. URLs in a line keep
only their scheme, host and port: credentials, paths and query strings may be secrets."""

import json
import logging
import re
import sys
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

REQUEST_ID_HEADER = "X-Request-ID"
# Set by the gateway per request, and by workers per task, from the message headers.
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

# Attributes every LogRecord has; anything else was passed with `extra=` and belongs in the line.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def new_request_id() -> str:
    return uuid.uuid4().hex


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        event: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self._service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if (current := request_id.get()) is not None:
            event["request_id"] = current
        event.update({key: value for key, value in record.__dict__.items() if key not in _STANDARD})
        if record.exc_info:
            event["exception"] = self.formatException(record.exc_info)
        return json.dumps(event, default=str)


def redact_url(url: str) -> str:
    """`url` as `scheme://host[:port]`, and `/[redacted]` if it had more: the userinfo, path, query and
    fragment may each carry a secret (a Slack-style webhook URL's path is its token, a broker or
    database URL's userinfo its password)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    try:
        if parts.port is not None:
            netloc += f":{parts.port}"
    except ValueError:  # Not a port number: not worth showing.
        pass
    rest = parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc
    return f"{parts.scheme}://{netloc}" + ("/[redacted]" if rest else "")


class RedactUrls(logging.Filter):
    """Redacts the URL arguments of every record: httpx logs each request's full URL at INFO, and a
    webhook URL's path or query may be its secret."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any(map(_is_url, record.args)):
            record.args = tuple(redact_url(str(arg)) if _is_url(arg) else arg for arg in record.args)
        return True


_URL = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://")


def _is_url(arg: object) -> bool:
    return isinstance(arg, str | httpx.URL) and _URL.match(str(arg)) is not None


def configure_logging(service: str, level: int = logging.INFO) -> None:
    """Every logger of the process (uvicorn's and Celery's too) writes JSON lines to stderr."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    handler.addFilter(RedactUrls())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.captureWarnings(True)  # Library warnings become JSON events too.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "celery", "celery.task", "celery.redirected"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
