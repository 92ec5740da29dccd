"""Rendering templates with Jinja2 in a sandbox: template code comes from API users.

Subject and body are plain text; only `html` is autoescaped. Beyond Jinja's own filters there are
locale-aware ones (formatting.py), formatting for the render's locale (the recipient's), "en" by
default. The sandbox (sandbox.py) keeps templates away from Python internals and bounds what one render
may cost (limits.py). Whatever goes wrong while compiling or rendering a part is an `InvalidInput`
naming the part, never a crash and never Python internals.
"""

import logging
import re
import threading
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Final, NoReturn

from jinja2 import Template as CompiledTemplate
from jinja2 import TemplateError, TemplateSyntaxError, UndefinedError, nodes
from jinja2.sandbox import SecurityError

from pulse.db.models import Template
from pulse.errors import InvalidInput
from pulse.templates import limits
from pulse.templates.formatting import locale_named
from pulse.templates.limits import LimitExceeded, Render, current_render
from pulse.templates.sandbox import REMOVED_GLOBALS, MissingVariable, Sandbox

log = logging.getLogger(__name__)

DEFAULT_LOCALE: Final = "en"
# What the compiled templates a process keeps may hold: a part holds about its source plus 75 bytes
# a token (0.75 MB for 10,000 tokens), so that a count of entries would not bound it.
_CACHE_BYTES: Final = 64 * 1024 * 1024
_BYTES_PER_TOKEN: Final = 75
# Levels of tags and expressions one in another. Jinja's parser and compiler recurse, about five
# Python frames a level: any template within this compiles wherever it is compiled.
MAX_NESTING: Final = 100

_PARTS: Final = ("subject", "body", "html")
_VARIABLES = ("body", "variables")
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

_TEXT = Sandbox(autoescape=False)
_HTML = Sandbox(autoescape=True)


def _environment(part: str) -> Sandbox:
    return _HTML if part == "html" else _TEXT


# --- compiling -----------------------------------------------------------------------------------


def check_template_source(subject: str | None, body: str, html: str | None) -> None:
    """Refuse a template whose parts do not compile or reach for what the sandbox forbids anyway;
    raises InvalidInput naming the part (and the line)."""
    for part, source in zip(_PARTS, (subject, body, html), strict=True):
        if source is not None:
            _compile(part, source, location=("body", part))


def _compile(part: str, source: str, *, location: tuple[str, str]) -> tuple[CompiledTemplate, int]:
    """The part compiled, and about how many bytes it holds."""
    environment = _environment(part)
    try:
        tree, tokens = _checked_tree(environment, part, source, location)
        return environment.from_string(tree), len(source) + tokens * _BYTES_PER_TOKEN
    except TemplateSyntaxError as error:
        raise InvalidInput(
            f"the {part} has a syntax error on line {error.lineno}: {error.message}", location=location
        ) from error
    except (RecursionError, SyntaxError) as error:
        # Jinja's parser recurses (`((((...))))`), and Python refuses deeply nested blocks (twenty
        # loops one in another).
        raise InvalidInput(f"the {part} is nested too deeply to compile", location=location) from error
    except InvalidInput:
        raise
    except Exception as error:  # a template must never fail a request: a 422, logged if odd
        _log_if_odd(error, f"the {part} of a template failed to compile")
        raise InvalidInput(
            f"the {part} could not be compiled: {_public(error)}", location=location
        ) from error


def _checked_tree(
    environment: Sandbox, part: str, source: str, location: tuple[str, str]
) -> tuple[nodes.Template, int]:
    """The part's syntax tree, and how many tokens it has."""
    # Compiling takes time in proportion to the tokens; counting them first is cheap.
    max_tokens = limits.LIMITS.max_tokens
    tokens = 0
    for tokens, _ in enumerate(environment.lexer.tokenize(source), start=1):
        if tokens > max_tokens:
            raise InvalidInput(
                f"the {part} is too long to compile: more than {max_tokens} tokens (names, values, "
                "operators, tags and runs of text)",
                location=location,
            )
    tree = environment.parse(source)
    if _depth(tree) > MAX_NESTING:
        raise InvalidInput(
            f"the {part} is nested too deeply to compile (more than {MAX_NESTING} levels)", location=location
        )
    for statement in tree.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
        raise InvalidInput(
            f"the {part} cannot extend, include or import templates (line {statement.lineno})",
            location=location,
        )
    for name in tree.find_all(nodes.Name):
        if name.ctx == "load" and name.name in REMOVED_GLOBALS:
            raise InvalidInput(
                f"the {part} uses {name.name} (line {name.lineno}), which Pulse templates do not provide",
                location=location,
            )
    for lookup in tree.find_all((nodes.Getattr, nodes.Getitem)):
        if isinstance(lookup, nodes.Getattr):
            key = lookup.attr
        elif isinstance(lookup, nodes.Getitem) and isinstance(lookup.arg, nodes.Const):
            key = lookup.arg.value
        else:
            continue
        if isinstance(key, str) and key.startswith("_"):
            raise InvalidInput(
                f"the template tried an unsafe operation: the {part} reads {key!r} on line {lookup.lineno} "
                "(names starting with '_' are not accessible)",
                location=location,
            )
    return tree, tokens


def _depth(tree: nodes.Node) -> int:
    """How many levels of nodes `tree` has, found without recursing."""
    deepest = 0
    pending = [(tree, 1)]
    while pending:
        node, depth = pending.pop()
        deepest = max(deepest, depth)
        pending.extend((child, depth + 1) for child in node.iter_child_nodes())
    return deepest


class _CompiledTemplates:
    """Compiled parts by (template id, version), least recently used dropped past `max_bytes`.

    The stored sources are compared on every hit, so an entry can never serve other source (a version
    number reused after a rolled-back update, say); comparing equal strings is cheap next to rendering.
    """

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._bytes = 0
        self._entries: OrderedDict[
            tuple[uuid.UUID, int], tuple[tuple[str | None, ...], dict[str, CompiledTemplate], int]
        ] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, template: Template) -> dict[str, CompiledTemplate]:
        sources = tuple(getattr(template, part) for part in _PARTS)
        key = (template.id, template.version)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] == sources:
                self._entries.move_to_end(key)
                return entry[1]
        compiled, size = {}, 0
        for part, source in zip(_PARTS, sources, strict=True):
            if source is not None:
                compiled[part], part_size = _compile(part, source, location=("template", part))
                size += part_size
        with self._lock:
            replaced = self._entries.pop(key, None)
            self._bytes += size - (replaced[2] if replaced else 0)
            self._entries[key] = (sources, compiled, size)
            while self._bytes > self._max_bytes and len(self._entries) > 1:
                self._bytes -= self._entries.popitem(last=False)[1][2]
        return compiled


_compiled = _CompiledTemplates(_CACHE_BYTES)


# --- rendering -----------------------------------------------------------------------------------


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
    compiled = _compiled.get(template)
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
            f"the {part} used a value it was not given: {_public(error)}", location=_VARIABLES
        ) from error
    except LimitExceeded as error:
        raise InvalidInput(f"the {part} went over a limit: {error}", location=location) from error
    except SecurityError as error:
        raise InvalidInput(
            f"the template tried an unsafe operation in the {part}: {_public(error)}", location=location
        ) from error
    except Exception as error:  # a template must never fail a request: a 422, logged if odd
        _log_if_odd(error, f"the {part} of a template failed to render")
        raise InvalidInput(f"the {part} failed to render: {_public(error)}", location=location) from error
    max_chars = current_render.get().limits.max_chars
    if len(text) > max_chars:
        raise InvalidInput(f"the rendered {part} is longer than {max_chars // 1024} KiB", location=location)
    if "\x00" in text:  # PostgreSQL stores none
        raise InvalidInput(
            f"NUL characters (\\u0000) are not accepted in the rendered {part}", location=location
        )
    return text


def _log_if_odd(error: Exception, what: str) -> None:
    if not isinstance(error, _TEMPLATE_FAILURES):
        log.warning(what, exc_info=error)


def _missing(names: list[str], cause: Exception | None = None) -> NoReturn:
    raise InvalidInput(f"missing variables: {', '.join(names)}", location=_VARIABLES) from cause


def _public(error: BaseException) -> str:
    """The error's message, shortened, without object addresses or module paths; a RecursionError
    says only what it is, and a KeyError (whose message is the key alone) that a key is missing."""
    if isinstance(error, RecursionError):
        return "too deeply nested (recursion)"
    message = f"no key {error}" if isinstance(error, KeyError) else _INTERNALS.sub("", str(error))
    if len(message) > _MAX_MESSAGE:
        return message[: _MAX_MESSAGE - 1] + "…"
    return message or type(error).__name__
