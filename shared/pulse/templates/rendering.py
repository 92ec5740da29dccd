"""Rendering templates with Jinja2 in a sandbox: template code comes from API users.

Subject and body are plain text; only `html` is autoescaped. Filters beyond Jinja's own:
`currency(code="USD", locale=None)`, `format_number(format=None, locale=None)`,
`format_date(format="medium", locale=None)` and `format_datetime(format="medium", timezone=None,
locale=None)`; a date accepts a date, a datetime or an ISO 8601 string, a format is a name (`short`,
`medium`, `long`, `full`) or a CLDR pattern (`d MMM y`). `locale` defaults to the render's (the
recipient's), itself "en" by default.

The sandbox keeps templates away from Python internals (no `_` attributes, no mutation, only a few
plain methods on values, no `str.format`), and bounds what one render may cost: operators and filters
that could build a huge value check its size first, every value passed to or returned by a filter or
call, or printed, stays under `MAX_VALUE`; a render may loop or call at most `MAX_STEPS` times and
write at most `MAX_WRITTEN` characters (macro and block buffers included); a rendered part is at most
`MAX_PART` characters. Anything over a limit is an `InvalidInput`, never a crash.
"""

import re
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache, wraps
from typing import Any, Final, NoReturn
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale, UnknownLocaleError
from babel.dates import format_date as babel_format_date
from babel.dates import format_datetime as babel_format_datetime
from babel.numbers import format_currency, format_decimal, is_currency
from jinja2 import (
    Environment,
    StrictUndefined,
    TemplateError,
    TemplateRuntimeError,
    TemplateSyntaxError,
    UndefinedError,
    nodes,
    pass_environment,
    pass_eval_context,
)
from jinja2 import Template as CompiledTemplate
from jinja2.compiler import CodeGenerator, Frame
from jinja2.defaults import DEFAULT_FILTERS
from jinja2.filters import (
    do_batch,
    do_center,
    do_format,
    do_indent,
    do_replace,
    do_tojson,
    do_wordwrap,
    sync_do_join,
    sync_do_slice,
)
from jinja2.nodes import EvalContext
from jinja2.runtime import Context, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError
from jinja2.utils import missing
from markupsafe import soft_str

from pulse.db.models import Template
from pulse.errors import InvalidInput

DEFAULT_LOCALE: Final = "en"
MAX_PART: Final = 256 * 1024  # characters of one rendered part (subject, body or html)
MAX_VALUE: Final = 256 * 1024  # characters (roughly, as printed) of one value a template builds
MAX_WRITTEN: Final = 4 * MAX_PART  # characters written while rendering one part, buffers included
MAX_STEPS: Final = 100_000  # loop iterations plus calls while rendering one part
MAX_INT_BITS: Final = 4096  # integers a template computes with `*` or `**` (about 1233 digits)
MAX_JSON_INDENT: Final = 8
_CACHED_TEMPLATES: Final = 512

_PARTS: Final = ("subject", "body", "html")
# Without `namespace` nothing carries over between loop iterations, so that a loop cannot grow a value
# step by step; `lipsum` writes as much text as it is asked for.
_REMOVED_GLOBALS: Final = ("namespace", "lipsum")
_VARIABLES = ("body", "variables")

# Methods a template may call on plain values; the rest (padding, translation, str.format, ...)
# could build huge strings from small inputs, and Jinja's filters cover the useful ones with checks.
_STR_METHODS = frozenset(
    {
        "capitalize",
        "casefold",
        "count",
        "endswith",
        "find",
        "index",
        "isalnum",
        "isalpha",
        "isascii",
        "isdecimal",
        "isdigit",
        "isidentifier",
        "islower",
        "isnumeric",
        "isprintable",
        "isspace",
        "istitle",
        "isupper",
        "lower",
        "lstrip",
        "partition",
        "removeprefix",
        "removesuffix",
        "rfind",
        "rindex",
        "rpartition",
        "rsplit",
        "rstrip",
        "split",
        "splitlines",
        "startswith",
        "strip",
        "swapcase",
        "title",
        "upper",
    }
)
_VALUE_METHODS: Final[tuple[tuple[type | tuple[type, ...], frozenset[str]], ...]] = (
    (str, _STR_METHODS),
    (dict, frozenset({"get", "items", "keys", "values"})),
    ((list, tuple), frozenset({"count", "index"})),
    ((int, float), frozenset({"real", "imag", "numerator", "denominator", "is_integer"})),
)
# A printf conversion: `%(name)-10.2f`; its width and precision size the output.
_PRINTF_SPEC = re.compile(r"%(?:\([^)]*\))?[#0 +-]*(\*|\d+)?(?:\.(\*|\d*))?[hlL]?(.)", re.DOTALL)
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_SEQUENCES = (str, list, tuple)  # what `*` repeats


class _LimitExceeded(SecurityError):
    """A render went over one of the module's limits."""


class _MissingVariable(UndefinedError):
    """A top-level name the template uses was not given; the message is the name."""


class _StrictUndefined(StrictUndefined):
    """StrictUndefined that raises `_MissingVariable` for a missing top-level name, so that the error
    can name it, and that reports the first cause when undefined values are looked into."""

    __slots__ = ()

    def __init__(
        self,
        hint: str | None = None,
        obj: Any = missing,
        name: str | None = None,
        exc: type[TemplateRuntimeError] = UndefinedError,
    ) -> None:
        if isinstance(obj, Undefined):
            # Looking into an undefined value (`|attr` does): report why it is undefined in the first place.
            hint, name, exc = obj._undefined_hint, obj._undefined_name, obj._undefined_exception
            obj = obj._undefined_obj
        elif hint is None and obj is missing and name is not None and exc is UndefinedError:
            exc = _MissingVariable
        super().__init__(hint, obj, name, exc)

    @property
    def _undefined_message(self) -> str:
        if self._undefined_exception is _MissingVariable and self._undefined_name is not None:
            return self._undefined_name
        return super()._undefined_message


@dataclass
class _Render:
    """What one part's render has used so far, and the locale its filters format for."""

    locale: Locale
    steps: int = 0
    written: int = 0

    def step(self) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise _LimitExceeded(f"more than {MAX_STEPS} loop iterations and calls")

    def write(self, characters: int) -> None:
        self.written += characters
        if self.written > MAX_WRITTEN:
            raise _LimitExceeded(f"more than {MAX_WRITTEN // 1024} KiB written while rendering")


_current: ContextVar[_Render] = ContextVar("pulse_template_render")


# --- sizes ---------------------------------------------------------------------------------------


def _size(value: object, limit: int = MAX_VALUE) -> int:
    """About how many characters `value` prints as; stops counting once past `limit`, so that a
    large (or deeply shared) structure costs no more than `limit` steps."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, int):
        return value.bit_length() // 3 + 1
    children: Iterable[object]
    if isinstance(value, dict):
        children = (item for pair in value.items() for item in pair)
    elif isinstance(value, (list, tuple, set, frozenset)):
        children = value
    else:
        return 1
    total = 2
    for child in children:
        total += _size(child, limit - total) + 2
        if total > limit:
            break
    return total


def _refuse_over(estimate: int, what: str) -> None:
    if estimate > MAX_VALUE:
        raise _LimitExceeded(f"{what} would exceed {MAX_VALUE // 1024} KiB")


def _refuse_bits_over(bits: int, what: str) -> None:
    if bits > MAX_INT_BITS:
        raise _LimitExceeded(f"{what} would exceed {MAX_INT_BITS} bits")


def _checked(value: Any, what: str) -> Any:
    _refuse_over(_size(value), what)
    return value


def _check_printf(fmt: str, values: Any) -> None:
    """Refuse `fmt % values` when its result could exceed MAX_VALUE."""
    conversions = widths = 0
    for match in _PRINTF_SPEC.finditer(fmt):
        width, precision, conversion = match.groups()
        if "*" in (width, precision):
            raise _LimitExceeded("`*` widths are not supported in format strings")
        widths += int(width or 0) + int(precision or 0)
        conversions += conversion != "%"
    if isinstance(values, tuple):
        substituted = sum(_size(value) for value in values)
    else:
        sizes = [_size(value) for value in (values.values() if isinstance(values, Mapping) else [values])]
        substituted = conversions * max(sizes, default=0)
    _refuse_over(len(fmt) + widths + substituted, "the formatted string")


# --- the sandbox ---------------------------------------------------------------------------------


class _CodeGenerator(CodeGenerator):
    """Compiles loops and literal output so that they count against the render's budget."""

    def visit_For(self, node: nodes.For, frame: Frame) -> None:  # noqa: N802 (Jinja's visitor name)
        budgeted = nodes.Call(
            nodes.EnvironmentAttribute("budgeted"), [node.iter], [], None, None, lineno=node.lineno
        )
        node.iter = budgeted.set_environment(self.environment)
        super().visit_For(node, frame)

    def visit_Output(self, node: nodes.Output, frame: Frame) -> None:  # noqa: N802 (Jinja's visitor name)
        # Expressions are counted by `_finalize` as they are written; literal text is counted here.
        literal = sum(len(child.data) for child in node.nodes if isinstance(child, nodes.TemplateData))
        if literal:
            self.writeline(f"environment.count_written({literal})")
        super().visit_Output(node, frame)


@pass_eval_context  # any pass_* but `environment` keeps Jinja from finalising constants at compile time
def _finalize(_: EvalContext, value: Any) -> str:
    if not isinstance(value, str):
        _checked(value, "a printed value")
    text = soft_str(value)
    _current.get().write(len(text))
    return text


class _Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"*", "**", "%"})
    code_generator_class = _CodeGenerator

    def __init__(self, *, autoescape: bool) -> None:
        super().__init__(autoescape=autoescape, undefined=_StrictUndefined, finalize=_finalize)
        for name in _REMOVED_GLOBALS:
            del self.globals[name]
        self.filters = {
            name: _limited(filter_)
            for name, filter_ in {**DEFAULT_FILTERS, **_SIZE_CHECKED_FILTERS, **_LOCALE_FILTERS}.items()
        }

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        for kind, methods in _VALUE_METHODS:
            if isinstance(obj, kind):
                return attr in methods
        return super().is_safe_attribute(obj, attr, value)

    def wrap_str_format(self, value: Any) -> None:
        """`str.format` is not available (its widths size the output); the `format` filter is."""
        return None

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
                _refuse_bits_over(left.bit_length() * right, "the power")
        elif operator == "*":
            if isinstance(left, int) and isinstance(right, int):
                _refuse_bits_over(left.bit_length() + right.bit_length(), "the product")
            elif isinstance(left, _SEQUENCES) and isinstance(right, int):
                _refuse_over(_size(left) * right, "the repeated value")
            elif isinstance(left, int) and isinstance(right, _SEQUENCES):
                _refuse_over(_size(right) * left, "the repeated value")
        elif operator == "%" and isinstance(left, str):
            _check_printf(left, right)
        return super().call_binop(context, operator, left, right)

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        _current.get().step()
        for name, value in (*enumerate(args), *kwargs.items()):
            # Jinja passes the loop's and block's variables along; they are not arguments.
            if name not in ("_loop_vars", "_block_vars"):
                _checked(value, "an argument")
        return _checked(super().call(context, obj, *args, **kwargs), "a call's result")

    def budgeted(self, iterable: Iterable[Any]) -> Iterator[Any]:
        """What every `for` loop iterates over (see `_CodeGenerator`)."""
        render = _current.get()
        for item in iterable:
            render.step()
            yield item

    def count_written(self, characters: int) -> None:
        _current.get().write(characters)


def _limited(filter_: Any) -> Any:
    """The filter, refusing arguments and results over MAX_VALUE."""

    @wraps(filter_)  # copies Jinja's `jinja_pass_arg` marker too
    def limited(*args: Any, **kwargs: Any) -> Any:
        for value in (*args, *kwargs.values()):
            _checked(value, "a filter's argument")
        return _checked(filter_(*args, **kwargs), "a filter's result")

    return limited


# --- filters whose output an argument sizes: checked before they run ------------------------------


def _center(value: Any, width: int = 80) -> str:
    _refuse_over(width, "the centred string")
    return do_center(value, width)


def _indent(s: Any, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    text = soft_str(s)
    indentation = len(width) if isinstance(width, str) else width
    _refuse_over(len(text) + indentation * (len(text.splitlines()) + 1), "the indented string")
    return do_indent(text, width, first, blank)


@pass_eval_context
def _replace(eval_ctx: EvalContext, s: Any, old: str, new: str, count: int | None = None) -> str:
    text, old, new = soft_str(s), soft_str(old), soft_str(new)
    occurrences = text.count(old) if old else len(text) + 1
    if count is not None:
        occurrences = min(occurrences, max(count, 0))
    _refuse_over(len(text) + occurrences * max(len(new) - len(old), 0), "the replaced string")
    return do_replace(eval_ctx, text, old, new, count)


@pass_eval_context
def _join(
    eval_ctx: EvalContext, value: Iterable[Any], d: str = "", attribute: str | int | None = None
) -> str:
    items = list(value)  # once: `value` may be a generator (`map`, `select`)
    _refuse_over(_size(items) + len(d) * len(items), "the joined string")
    return sync_do_join(eval_ctx, items, d, attribute)


@pass_environment
def _wordwrap(
    environment: Environment,
    s: Any,
    width: int = 79,
    break_long_words: bool = True,
    wrapstring: str | None = None,
    break_on_hyphens: bool = True,
) -> str:
    text = soft_str(s)
    lines = len(text) // max(width, 1) + text.count("\n") + 1
    _refuse_over(len(text) + lines * len(wrapstring or "\n"), "the wrapped string")
    return do_wordwrap(environment, text, width, break_long_words, wrapstring, break_on_hyphens)


def _slice(value: Any, slices: int, fill_with: Any = None) -> Iterator[list[Any]]:
    _refuse_over(slices, "the number of slices")
    return sync_do_slice(value, slices, fill_with)


def _batch(value: Iterable[Any], linecount: int, fill_with: Any = None) -> Iterator[list[Any]]:
    if fill_with is not None:
        _refuse_over(linecount, "the filled batch")
    return do_batch(value, linecount, fill_with)


@pass_eval_context
def _tojson(eval_ctx: EvalContext, value: Any, indent: int | None = None) -> Any:
    if indent is not None and indent > MAX_JSON_INDENT:
        raise _LimitExceeded(f"tojson indents by at most {MAX_JSON_INDENT}")
    return do_tojson(eval_ctx, value, indent)


def _format(value: Any, *args: Any, **kwargs: Any) -> str:
    _check_printf(soft_str(value), kwargs or args)
    return do_format(value, *args, **kwargs)


_SIZE_CHECKED_FILTERS: Final = {
    "center": _center,
    "indent": _indent,
    "replace": _replace,
    "join": _join,
    "wordwrap": _wordwrap,
    "slice": _slice,
    "batch": _batch,
    "tojson": _tojson,
    "format": _format,
}


# --- locale-aware filters ------------------------------------------------------------------------


def normalize_locale(value: str) -> str:
    """A known locale in canonical form ("fr-FR" and "fr_fr" give "fr_FR"); ValueError otherwise."""
    return str(_locale(value))


@lru_cache(maxsize=256)
def _locale(value: str) -> Locale:
    try:
        return Locale.parse(value.strip().replace("-", "_"))
    except (ValueError, TypeError, UnknownLocaleError) as error:
        raise ValueError(f"unknown locale {value!r} (use a language tag like en, fr_FR or pt-BR)") from error


def _filter_locale(locale: str | None) -> Locale:
    return _current.get().locale if locale is None else _locale(locale)


def _defined(value: Any) -> Any:
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()
    return value


def _decimal(value: Any, filter_name: str) -> Decimal:
    try:
        number = Decimal(soft_str(_defined(value)).strip())
    except InvalidOperation as error:
        raise ValueError(f"{filter_name} expects a number, got {value!r}") from error
    # A huge exponent ("1e999999999") would be written out in full.
    if number.is_finite() and number.adjusted() > 100:
        raise ValueError(f"{filter_name}: {value!r} is too large")
    return number


def _currency(value: Any, currency: str = "USD", locale: str | None = None) -> str:
    """`{{ 1234.5|currency("EUR") }}` → "€1,234.50" (en), "1 234,50 €" (fr_FR)."""
    code = soft_str(currency).upper()
    if not is_currency(code):
        raise ValueError(f"currency: unknown currency code {currency!r} (use ISO 4217, like EUR)")
    return format_currency(_decimal(value, "currency"), code, locale=_filter_locale(locale))


def _format_number(value: Any, format: str | None = None, locale: str | None = None) -> str:
    """`{{ 1234567.891|format_number }}` → "1,234,567.891" (en), "1.234.567,891" (de)."""
    return format_decimal(_decimal(value, "format_number"), format=format, locale=_filter_locale(locale))


def _as_datetime(value: Any, filter_name: str) -> date:
    value = _defined(value)
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.strip())
        except ValueError as error:
            raise ValueError(f"{filter_name}: {value!r} is not an ISO 8601 date") from error
    raise ValueError(f"{filter_name} expects a date, a datetime or an ISO 8601 string, got {value!r}")


def _format_date(value: Any, format: str = "medium", locale: str | None = None) -> str:
    """`{{ "2026-03-01"|format_date("full", "fr_FR") }}` → "dimanche 1 mars 2026"."""
    day = _as_datetime(value, "format_date")
    day = day.date() if isinstance(day, datetime) else day
    try:
        return babel_format_date(day, format=format, locale=_filter_locale(locale))
    except (AttributeError, KeyError) as error:  # what babel raises for a pattern asking for a time
        raise ValueError(f"format_date: {format!r} is not a date format") from error


def _format_datetime(
    value: Any, format: str = "medium", timezone: str | None = None, locale: str | None = None
) -> str:
    """`{{ sent_at|format_datetime("short", "Europe/Paris") }}`; naive datetimes are read as UTC."""
    moment = _as_datetime(value, "format_datetime")
    if not isinstance(moment, datetime):
        moment = datetime(moment.year, moment.month, moment.day)
    try:
        zone = None if timezone is None else ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(f"format_datetime: unknown time zone {timezone!r}") from error
    return babel_format_datetime(moment, format=format, tzinfo=zone, locale=_filter_locale(locale))


_LOCALE_FILTERS: Final = {
    "currency": _currency,
    "format_number": _format_number,
    "format_date": _format_date,
    "format_datetime": _format_datetime,
}

_TEXT = _Sandbox(autoescape=False)
_HTML = _Sandbox(autoescape=True)


def _environment(part: str) -> _Sandbox:
    return _HTML if part == "html" else _TEXT


# --- compiling -----------------------------------------------------------------------------------


def check_template_source(subject: str | None, body: str, html: str | None) -> None:
    """Refuse a template whose parts do not compile or reach for what the sandbox forbids anyway;
    raises InvalidInput naming the part (and the line)."""
    for part, source in zip(_PARTS, (subject, body, html), strict=True):
        if source is not None:
            _compile(part, source)


def _compile(part: str, source: str) -> CompiledTemplate:
    environment = _environment(part)
    location = ("body", part)
    try:
        tree = environment.parse(source)
    except TemplateSyntaxError as error:
        raise InvalidInput(
            f"the {part} has a syntax error on line {error.lineno}: {error.message}", location=location
        ) from error
    for statement in tree.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
        raise InvalidInput(
            f"the {part} cannot extend, include or import templates (line {statement.lineno})",
            location=location,
        )
    for name in tree.find_all(nodes.Name):
        if name.ctx == "load" and name.name in _REMOVED_GLOBALS:
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
    return environment.from_string(tree)


class _CompiledTemplates:
    """Compiled parts by (template id, version), least recently used dropped past `size`.

    The stored sources are compared on every hit, so an entry can never serve other source (a version
    number reused after a rolled-back update, say); comparing equal strings is cheap next to rendering.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[
            tuple[uuid.UUID, int], tuple[tuple[str | None, ...], dict[str, CompiledTemplate]]
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
        compiled = {
            part: _compile(part, source)
            for part, source in zip(_PARTS, sources, strict=True)
            if source is not None
        }
        with self._lock:
            self._entries[key] = (sources, compiled)
            self._entries.move_to_end(key)
            if len(self._entries) > self._size:
                self._entries.popitem(last=False)
        return compiled


_compiled = _CompiledTemplates(_CACHED_TEMPLATES)


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
        render_locale = _locale(locale or DEFAULT_LOCALE)
    except ValueError as error:
        raise InvalidInput(str(error), location=("body", "locale")) from error
    context = dict(variables)
    return {
        part: _render_part(part, compiled, context, render_locale)
        for part, compiled in _compiled.get(template).items()
    }


def _render_part(part: str, compiled: CompiledTemplate, variables: dict[str, Any], locale: Locale) -> str:
    location = ("template", part)
    token = _current.set(_Render(locale))
    try:
        text = compiled.render(variables)
    except _MissingVariable as error:
        _missing([str(error)], error)
    except UndefinedError as error:
        raise InvalidInput(
            f"the {part} used a value it was not given: {error}", location=_VARIABLES
        ) from error
    except SecurityError as error:
        raise InvalidInput(
            f"the template tried an unsafe operation: {_public(error)}", location=location
        ) from error
    except (TemplateError, ArithmeticError, TypeError, ValueError, RecursionError) as error:
        raise InvalidInput(f"the {part} failed to render: {_public(error)}", location=location) from error
    finally:
        _current.reset(token)
    if len(text) > MAX_PART:
        raise InvalidInput(f"the rendered {part} is longer than {MAX_PART // 1024} KiB", location=location)
    return text


def _missing(names: list[str], cause: Exception | None = None) -> NoReturn:
    raise InvalidInput(f"missing variables: {', '.join(names)}", location=_VARIABLES) from cause


def _public(error: BaseException) -> str:
    """The error's message without object addresses; a RecursionError says only what it is."""
    if isinstance(error, RecursionError):
        return "too deeply nested (recursion)"
    return _ADDRESS.sub("", str(error)) or type(error).__name__
