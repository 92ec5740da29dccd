"""Compiling template parts: checked before Jinja compiles them (size, nesting, what the sandbox would
refuse anyway), and kept compiled per template version in a cache bounded by the memory it holds."""

import threading
import uuid
from collections import OrderedDict
from typing import Final

from jinja2 import Template as CompiledTemplate
from jinja2 import TemplateSyntaxError, nodes

from pulse.db.models import Template
from pulse.errors import InvalidInput
from pulse.templates import limits
from pulse.templates.failures import log_if_odd, public
from pulse.templates.sandbox import REMOVED_GLOBALS, Sandbox

PARTS: Final = ("subject", "body", "html")
# What the compiled templates a process keeps may hold: a part holds about its source plus 75 bytes
# a token (0.75 MB for 10,000 tokens), so that a count of entries would not bound it.
_CACHE_BYTES: Final = 64 * 1024 * 1024
_BYTES_PER_TOKEN: Final = 75
# Levels of tags and expressions one in another. Jinja's parser and compiler recurse, about five
# Python frames a level: any template within this compiles wherever it is compiled.
MAX_NESTING: Final = 100

_TEXT = Sandbox(autoescape=False)
_HTML = Sandbox(autoescape=True)


def _environment(part: str) -> Sandbox:
    return _HTML if part == "html" else _TEXT


def check_template_source(subject: str | None, body: str, html: str | None) -> None:
    """Refuse a template whose parts do not compile or reach for what the sandbox forbids anyway;
    raises InvalidInput naming the part (and the line)."""
    for part, source in zip(PARTS, (subject, body, html), strict=True):
        if source is not None:
            _compile(part, source, location=("body", part))


def compiled_parts(template: Template) -> dict[str, CompiledTemplate]:
    """The template's parts (those it has), compiled once per version. Raises InvalidInput (location
    template.<part>) when one does not compile."""
    return _compiled.get(template)


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
        log_if_odd(error, f"the {part} of a template failed to compile")
        raise InvalidInput(f"the {part} could not be compiled: {public(error)}", location=location) from error


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
        sources = tuple(getattr(template, part) for part in PARTS)
        key = (template.id, template.version)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] == sources:
                self._entries.move_to_end(key)
                return entry[1]
        compiled, size = {}, 0
        for part, source in zip(PARTS, sources, strict=True):
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
