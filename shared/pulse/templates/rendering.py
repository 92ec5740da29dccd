"""Rendering templates with Jinja2 in a sandbox: template code comes from API users.

Subject and body are plain text; only `html` is autoescaped. Beyond Jinja's own filters there are
locale-aware ones (formatting.py), formatting for the render's locale (the recipient's), "en" by
default. The sandbox (sandbox.py) keeps templates away from Python internals and bounds what one render
may cost (limits.py); parts are compiled once per template version (compiling.py). Whatever goes wrong
while compiling or rendering a part is an `InvalidInput` naming the part, never a crash and never
Python internals (failures.py).
"""

from collections.abc import Mapping
from typing import Any, Final, NoReturn

from jinja2 import Template as CompiledTemplate
from jinja2 import UndefinedError
from jinja2.sandbox import SecurityError

from pulse.db.models import Template
from pulse.errors import InvalidInput
from pulse.templates import limits
from pulse.templates.compiling import compiled_parts
from pulse.templates.failures import log_if_odd, public
from pulse.templates.formatting import locale_named
from pulse.templates.limits import LimitExceeded, Render, current_render
from pulse.templates.sandbox import MissingVariable

DEFAULT_LOCALE: Final = "en"

_VARIABLES = ("body", "variables")


def render_template(
    template: Template, variables: Mapping[str, Any], *, locale: str | None = None
) -> dict[str, str]:
    """The template's `subject`, `body` and `html` (those it has) rendered with `variables`, numbers
    and dates formatted for `locale` (e.g. the recipient's "fr_FR"; default "en").

    Raises InvalidInput naming the missing variables (location body.variables), or saying what went
    wrong in the template (location template.<part>) without Python internals.
    """
    missing_names = [name for name in template.variables if name not in variables]
    if missing_names:
        _missing(missing_names)
    try:
        render_locale = locale_named(locale or DEFAULT_LOCALE)
    except ValueError as error:
        raise InvalidInput(str(error), location=("body", "locale")) from error
    compiled = compiled_parts(template)
    context = dict(variables)
    token = current_render.set(Render.start(render_locale, limits.LIMITS))
    try:
        return {part: _render_part(part, compiled_part, context) for part, compiled_part in compiled.items()}
    finally:
        current_render.reset(token)


def _render_part(part: str, compiled: CompiledTemplate, variables: dict[str, Any]) -> str:
    location = ("template", part)
    try:
        text = compiled.render(variables)
    except MissingVariable as error:
        _missing([str(error)], error)
    except UndefinedError as error:
        raise InvalidInput(
            f"the {part} used a value it was not given: {public(error)}", location=_VARIABLES
        ) from error
    except LimitExceeded as error:
        raise InvalidInput(f"the {part} went over a limit: {error}", location=location) from error
    except SecurityError as error:
        raise InvalidInput(
            f"the template tried an unsafe operation in the {part}: {public(error)}", location=location
        ) from error
    except Exception as error:  # a template must never fail a request: a 422, logged if odd
        log_if_odd(error, f"the {part} of a template failed to render")
        raise InvalidInput(f"the {part} failed to render: {public(error)}", location=location) from error
    max_chars = current_render.get().limits.max_chars
    if len(text) > max_chars:
        raise InvalidInput(f"the rendered {part} is longer than {max_chars // 1024} KiB", location=location)
    if "\x00" in text:  # PostgreSQL stores none
        raise InvalidInput(
            f"NUL characters (\\u0000) are not accepted in the rendered {part}", location=location
        )
    return text


def _missing(names: list[str], cause: Exception | None = None) -> NoReturn:
    raise InvalidInput(f"missing variables: {', '.join(names)}", location=_VARIABLES) from cause
