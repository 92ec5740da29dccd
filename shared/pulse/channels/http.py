"""Reading providers' HTTP answers: their JSON error bodies and Retry-After."""

import math
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx


def json_object(response: httpx.Response) -> dict[str, object]:
    """The body as a JSON object; empty when it is not one."""
    try:
        parsed = response.json()
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def retry_after_seconds(response: httpx.Response) -> float | None:
    """Retry-After in seconds, given as seconds or as an HTTP date."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds()
        except (TypeError, ValueError):
            return None
    return max(0.0, seconds) if math.isfinite(seconds) else None
