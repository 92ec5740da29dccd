"""How a template's failure reaches the API user: a short message without Python internals, and a
log line when the failure is not one template code meets in the ordinary way."""

import logging
import re
from typing import Final

from jinja2 import TemplateError

log = logging.getLogger(__name__)

_INTERNALS = re.compile(r" at 0x[0-9a-fA-F]+|\bjinja2\.\w+\.")  # addresses, Jinja's module paths
# What template code fails with in the ordinary way; anything else may be a bug (ours or Jinja's): logged.
# (Jinja checks some filter arguments with `assert`: `truncate`.)
_TEMPLATE_FAILURES = (
    TemplateError,
    ArithmeticError,
    AssertionError,
    LookupError,
    TypeError,
    ValueError,
    RecursionError,
)
_MAX_MESSAGE: Final = 300  # characters of an error's message: it may quote a long value


def log_if_odd(error: Exception, what: str) -> None:
    if not isinstance(error, _TEMPLATE_FAILURES):
        log.warning(what, exc_info=error)


def public(error: BaseException) -> str:
    """The error's message, shortened, without object addresses or module paths; a RecursionError
    says only what it is, and a KeyError (whose message is the key alone) that a key is missing."""
    if isinstance(error, RecursionError):
        return "too deeply nested (recursion)"
    message = f"no key {error}" if isinstance(error, KeyError) else _INTERNALS.sub("", str(error))
    if len(message) > _MAX_MESSAGE:
        return message[: _MAX_MESSAGE - 1] + "…"
    return message or type(error).__name__
