"""The environment templates run in: Jinja's immutable sandbox, kept away from Python internals (no `_`
attributes, no mutation, only a few plain methods on values, no `str.format`), with every operation
whose cost grows with its values counted against the render's limits (see limits.py): each operator,
`~`, slice, filter, test, call and printed value, loop iteration and comparison."""

from collections.abc import Iterable, Iterator
from functools import wraps
from typing import Any, Final

from jinja2 import (
    Environment,
    StrictUndefined,
    TemplateRuntimeError,
    UndefinedError,
    nodes,
    pass_environment,
    pass_eval_context,
)
from jinja2.compiler import CodeGenerator, Frame
from jinja2.defaults import DEFAULT_FILTERS, DEFAULT_TESTS
from jinja2.filters import (
    do_batch,
    do_center,
    do_format,
    do_indent,
    do_replace,
    do_round,
    do_tojson,
    do_wordwrap,
    make_attrgetter,
    sync_do_join,
    sync_do_slice,
)
from jinja2.nodes import EvalContext
from jinja2.runtime import Context, Undefined, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import missing
from markupsafe import escape, soft_str

from pulse.templates.formatting import LOCALE_FILTERS
from pulse.templates.limits import (
    LimitExceeded,
    Render,
    check_printf,
    checked,
    current_render,
    produced,
    refuse_bits_over,
    refuse_over,
    size_of,
)

# Without `namespace` nothing carries over between loop iterations, so that a loop cannot grow a value
# step by step; `lipsum` writes as much text as it is asked for.
REMOVED_GLOBALS: Final = ("namespace", "lipsum")
# `pprint` takes time in proportion to a value's size times its depth, and is only a debugging aid.
_REMOVED_FILTERS: Final = ("pprint",)
# Filters that run Python code for each item of their input (a sort key, a test, an attribute
# lookup): sorting a 250,000-character string took over half a second. These get their input one
# item at a time, each counted as a step, as a loop's are.
_ITEM_BY_ITEM: Final = frozenset(
    {
        "batch",
        "groupby",
        "join",
        "list",
        "map",
        "max",
        "min",
        "reject",
        "rejectattr",
        "select",
        "selectattr",
        "slice",
        "sort",
        "sum",
        "unique",
    }
)
MAX_JSON_INDENT: Final = 8
MAX_ROUND_DIGITS: Final = 100  # more than any float or useful integer rounding; 10 ** n is computed

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
_SEQUENCES = (str, list, tuple)  # what `*` repeats


class MissingVariable(UndefinedError):
    """A top-level name the template uses was not given; the message is the name."""


class _StrictUndefined(StrictUndefined):
    """StrictUndefined that raises `MissingVariable` for a missing top-level name, so that the error
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
            exc = MissingVariable
        super().__init__(hint, obj, name, exc)

    @property
    def _undefined_message(self) -> str:
        if self._undefined_exception is MissingVariable and self._undefined_name is not None:
            return self._undefined_name
        return super()._undefined_message


class _CodeGenerator(CodeGenerator):
    """Compiles loops, literal output, `~`, comparisons and slices so that they count against the
    render's limits; operators, calls, filters and tests go through the environment anyway."""

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

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:  # noqa: N802 (Jinja's visitor name)
        self.write("environment.joined((")
        for operand in node.nodes:
            self.visit(operand, frame)
            self.write(", ")
        self.write("), context.eval_ctx.autoescape)")

    def visit_Compare(self, node: nodes.Compare, frame: Frame) -> None:  # noqa: N802 (Jinja's visitor name)
        self.write("environment.compared(")
        super().visit_Compare(node, frame)
        self.write(")")

    def visit_Getitem(self, node: nodes.Getitem, frame: Frame) -> None:  # noqa: N802 (Jinja's visitor name)
        # Jinja slices in place (`s[a:b]`); other lookups go through `environment.getitem`.
        if not isinstance(node.arg, nodes.Slice):
            super().visit_Getitem(node, frame)
            return
        self.write("environment.sliced(")
        super().visit_Getitem(node, frame)
        self.write(")")


@pass_eval_context  # any pass_* but `environment` keeps Jinja from finalising constants at compile time
def _finalize(eval_ctx: EvalContext, value: Any) -> str:
    if not isinstance(value, str):
        checked(value, "a printed value")
    # Escaped here, not after, so that what is counted is what is written (up to 6 times as long).
    return produced(escape(value) if eval_ctx.autoescape else soft_str(value), "a printed value")


class Sandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})
    code_generator_class = _CodeGenerator

    def __init__(self, *, autoescape: bool) -> None:
        # Jinja's optimizer tries to evaluate every subexpression at compile time, over and over on
        # nested ones: 300 filters in a row took 55 s to compile. What it saves is negligible.
        super().__init__(
            autoescape=autoescape, undefined=_StrictUndefined, finalize=_finalize, optimized=False
        )
        for name in REMOVED_GLOBALS:
            del self.globals[name]
        self.filters = {
            name: _limited(filter_, "filter", item_by_item=name in _ITEM_BY_ITEM)
            for name, filter_ in {**DEFAULT_FILTERS, **_SIZE_CHECKED_FILTERS, **LOCALE_FILTERS}.items()
            if name not in _REMOVED_FILTERS
        }
        self.tests = {name: _limited(test, "test") for name, test in DEFAULT_TESTS.items()}

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        for kind, methods in _VALUE_METHODS:
            if isinstance(obj, kind):
                return attr in methods
        return super().is_safe_attribute(obj, attr, value)

    def wrap_str_format(self, value: Any) -> None:
        """`str.format` is not available (its widths size the output); the `format` filter is."""
        return None

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        for operand in (left, right):
            if isinstance(operand, int):  # dividing huge integers takes quadratic time
                refuse_bits_over(operand.bit_length(), "a number")
        if operator == "**":
            if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
                refuse_bits_over(left.bit_length() * right, "the power")
        elif operator == "*":
            if isinstance(left, int) and isinstance(right, int):
                refuse_bits_over(left.bit_length() + right.bit_length(), "the product")
            elif isinstance(left, _SEQUENCES) and isinstance(right, int):
                refuse_over(_size(left) * right, "the repeated value")
            elif isinstance(left, int) and isinstance(right, _SEQUENCES):
                refuse_over(_size(right) * left, "the repeated value")
        elif operator == "%" and isinstance(left, str):
            check_printf(left, right)
        return produced(super().call_binop(context, operator, left, right), "the result")

    def joined(self, operands: tuple[Any, ...], autoescape: bool) -> str:
        """`a ~ b ~ ...` (see `_CodeGenerator`)."""
        refuse_over(sum(_size(operand) for operand in operands), "the joined string")
        joined: str = (markup_join if autoescape else str_join)(operands)
        return produced(joined, "the joined string")

    def compared(self, result: Any) -> Any:
        """What a comparison gave (see `_CodeGenerator`): comparing long values takes time."""
        current_render.get().check_deadline()
        return result

    def getitem(self, obj: Any, argument: Any) -> Any:
        # Filters look up an attribute of each item (`sort(attribute=...)`): over a long string,
        # hundreds of thousands of times.
        current_render.get().check_deadline()
        return super().getitem(obj, argument)

    def getattr(self, obj: Any, attribute: str) -> Any:
        current_render.get().check_deadline()
        return super().getattr(obj, attribute)

    def sliced(self, value: Any) -> Any:
        """`s[a:b:c]` (see `_CodeGenerator`): a new value, up to as long as `s`."""
        return produced(value, "a slice")

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        current_render.get().step()
        for name, value in (*enumerate(args), *kwargs.items()):
            # Jinja passes the loop's and block's variables along; they are not arguments.
            if name not in ("_loop_vars", "_block_vars"):
                checked(value, "an argument")
        return produced(super().call(context, obj, *args, **kwargs), "a call's result")

    def budgeted(self, iterable: Iterable[Any]) -> Iterator[Any]:
        """What every `for` loop iterates over (see `_CodeGenerator`)."""
        return _stepped(current_render.get(), iterable)

    def count_written(self, characters: int) -> None:
        current_render.get().charge(characters)


def _size(value: Any) -> int:
    return size_of(value, current_render.get().limits.max_chars)


def _limited(function: Any, kind: str, *, item_by_item: bool = False) -> Any:
    """The filter or test, refusing arguments and results over the limits, its result counted; with
    `item_by_item`, its input is handed over one item at a time, each counted as a step."""
    # Its input comes after the environment or context Jinja passes to some filters.
    input_index = 0 if getattr(function, "jinja_pass_arg", None) is None else 1

    @wraps(function)  # copies Jinja's `jinja_pass_arg` marker too
    def limited(*args: Any, **kwargs: Any) -> Any:
        # Outside a render this raises LookupError, which also keeps Jinja from running filters and
        # tests on constants at compile time, where nothing would count them.
        render = current_render.get()
        render.check_deadline()
        for value in (*args[input_index:], *kwargs.values()):
            render.size_within(value, f"a {kind}'s argument")
        if item_by_item and len(args) > input_index:
            args = (*args[:input_index], _stepped(render, args[input_index]), *args[input_index + 1 :])
        return produced(function(*args, **kwargs), f"a {kind}'s result")

    return limited


def _stepped(render: Render, iterable: Iterable[Any]) -> Iterator[Any]:
    for item in iterable:
        render.step()
        yield item


# --- filters whose cost an argument sizes: checked before they run --------------------------------


def _center(value: Any, width: int = 80) -> str:
    refuse_over(width, "the centred string")
    return do_center(value, width)


def _indent(s: Any, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
    text = soft_str(s)
    indentation = len(width) if isinstance(width, str) else width
    refuse_over(len(text) + indentation * (len(text.splitlines()) + 1), "the indented string")
    return do_indent(text, width, first, blank)


@pass_eval_context
def _replace(eval_ctx: EvalContext, s: Any, old: str, new: str, count: int | None = None) -> str:
    text, old, new = soft_str(s), soft_str(old), soft_str(new)
    occurrences = text.count(old) if old else len(text) + 1
    if count is not None:
        occurrences = min(occurrences, max(count, 0))
    refuse_over(len(text) + occurrences * max(len(new) - len(old), 0), "the replaced string")
    return do_replace(eval_ctx, text, old, new, count)


@pass_eval_context
def _join(
    eval_ctx: EvalContext, value: Iterable[Any], d: str = "", attribute: str | int | None = None
) -> str:
    items = list(value)  # once: `value` may be a generator (`map`, `select`)
    refuse_over(_size(items) + len(d) * len(items), "the joined string")
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
    refuse_over(len(text) + lines * len(wrapstring or "\n"), "the wrapped string")
    return do_wordwrap(environment, text, width, break_long_words, wrapstring, break_on_hyphens)


def _slice(value: Any, slices: int, fill_with: Any = None) -> Iterator[list[Any]]:
    refuse_over(slices, "the number of slices")
    return sync_do_slice(value, slices, fill_with)


def _batch(value: Iterable[Any], linecount: int, fill_with: Any = None) -> Iterator[list[Any]]:
    if fill_with is not None:
        refuse_over(linecount, "the filled batch")
    return do_batch(value, linecount, fill_with)


@pass_eval_context
def _tojson(eval_ctx: EvalContext, value: Any, indent: int | None = None) -> Any:
    if indent is not None and indent > MAX_JSON_INDENT:
        raise LimitExceeded(f"tojson indents by at most {MAX_JSON_INDENT}")
    return do_tojson(eval_ctx, value, indent)


def _format(value: Any, *args: Any, **kwargs: Any) -> str:
    check_printf(soft_str(value), kwargs or args)
    return do_format(value, *args, **kwargs)


def _round(value: float, precision: int = 0, method: str = "common") -> float:
    if abs(precision) > MAX_ROUND_DIGITS:
        raise LimitExceeded(f"round takes a precision of at most {MAX_ROUND_DIGITS} digits")
    return do_round(value, precision, method)  # type: ignore[arg-type] # Jinja's own check of `method`


@pass_environment
def _sum(
    environment: Environment, iterable: Iterable[Any], attribute: str | int | None = None, start: Any = 0
) -> Any:
    if attribute is not None:
        iterable = map(make_attrgetter(environment, attribute), iterable)
    if not isinstance(start, (list, tuple)):
        return sum(iterable, start)
    # Adding lists copies them, so `sum` takes time in the square of their number: each partial sum
    # is counted as a template's own `+` would be.
    render = current_render.get()
    total, size = start, _size(start)
    for item in iterable:
        size += _size(item)
        refuse_over(size, "the sum")
        render.charge(size)
        total = total + item
    return total


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
    "round": _round,
    "sum": _sum,
}
