"""The parts of Jinja that are not its public API and that the sandbox (pulse.templates.sandbox) relies on.

A Jinja upgrade that renames a code generator visitor or a sandbox hook would not break any template:
the override would just stop being called, and a limit would silently stop being enforced. These
tests fail first, naming what changed; review sandbox.py against the new Jinja before changing them.
"""

import inspect
from collections.abc import Callable
from typing import Any

import jinja2
import pytest
from jinja2 import StrictUndefined, Undefined
from jinja2.compiler import CodeGenerator
from jinja2.defaults import DEFAULT_FILTERS, DEFAULT_NAMESPACE, DEFAULT_TESTS
from jinja2.environment import Environment
from jinja2.sandbox import ImmutableSandboxedEnvironment

from pulse.templates.sandbox import Sandbox

# What the sandbox was reviewed against: a filter, test or global that a Jinja upgrade adds is exposed
# to API users' templates, with a cost nobody has looked at yet.
REVIEWED_FILTERS = {
    *("abs", "attr", "batch", "capitalize", "center", "count", "d", "default", "dictsort", "e"),
    *("escape", "filesizeformat", "first", "float", "forceescape", "format", "groupby", "indent"),
    *("int", "items", "join", "last", "length", "list", "lower", "map", "max", "min", "pprint"),
    *("random", "reject", "rejectattr", "replace", "reverse", "round", "safe", "select"),
    *("selectattr", "slice", "sort", "string", "striptags", "sum", "title", "tojson", "trim"),
    *("truncate", "unique", "upper", "urlencode", "urlize", "wordcount", "wordwrap", "xmlattr"),
}
REVIEWED_TESTS = {
    *("!=", "<", "<=", "==", ">", ">=", "boolean", "callable", "defined", "divisibleby", "eq"),
    *("equalto", "escaped", "even", "false", "filter", "float", "ge", "greaterthan", "gt", "in"),
    *("integer", "iterable", "le", "lessthan", "lower", "lt", "mapping", "ne", "none", "number"),
    *("odd", "sameas", "sequence", "string", "test", "true", "undefined", "upper"),
}
REVIEWED_GLOBALS = {"cycler", "dict", "joiner", "lipsum", "namespace", "range"}

# Methods of Jinja's classes that the sandbox overrides, with the parameters it expects them to take.
OVERRIDDEN = [
    (CodeGenerator, "visit_For", ["self", "node", "frame"]),
    (CodeGenerator, "visit_Output", ["self", "node", "frame"]),
    (CodeGenerator, "visit_Concat", ["self", "node", "frame"]),
    (CodeGenerator, "visit_Compare", ["self", "node", "frame"]),
    (CodeGenerator, "visit_Getitem", ["self", "node", "frame"]),
    (ImmutableSandboxedEnvironment, "is_safe_attribute", ["self", "obj", "attr", "value"]),
    (ImmutableSandboxedEnvironment, "wrap_str_format", ["self", "value"]),
    (ImmutableSandboxedEnvironment, "call_binop", ["self", "context", "operator", "left", "right"]),
    (ImmutableSandboxedEnvironment, "getitem", ["self", "obj", "argument"]),
    (ImmutableSandboxedEnvironment, "getattr", ["self", "obj", "attribute"]),
    (StrictUndefined, "__init__", ["self", "hint", "obj", "name", "exc"]),
]


def _changed(what: str) -> str:
    return f"Jinja {jinja2.__version__} changed {what}, which pulse.templates.sandbox relies on: review it"


def _parameters(function: Callable[..., Any]) -> list[str]:
    return list(inspect.signature(function).parameters)


@pytest.mark.parametrize(
    ("owner", "name", "parameters"), OVERRIDDEN, ids=[f"{o.__name__}.{n}" for o, n, _ in OVERRIDDEN]
)
def test_the_methods_the_sandbox_overrides_keep_their_names_and_parameters(
    owner: type, name: str, parameters: list[str]
) -> None:
    method = getattr(owner, name, None)
    assert method is not None, _changed(f"{owner.__name__}.{name} (it is gone)")
    assert _parameters(method) == parameters, _changed(f"the parameters of {owner.__name__}.{name}")


def test_the_sandbox_call_hook_and_the_code_generator_hooks_exist() -> None:
    # `call(__context, __obj, *args, **kwargs)`: positional-only in all but name (mangled).
    call = inspect.signature(ImmutableSandboxedEnvironment.call).parameters
    assert [parameter.kind for parameter in call.values()][-2:] == [
        inspect.Parameter.VAR_POSITIONAL,
        inspect.Parameter.VAR_KEYWORD,
    ], _changed("SandboxedEnvironment.call")
    assert Environment.code_generator_class is CodeGenerator, _changed("Environment.code_generator_class")
    assert hasattr(ImmutableSandboxedEnvironment, "intercepted_binops"), _changed(
        "SandboxedEnvironment.intercepted_binops"
    )
    for name in ("write", "writeline", "visit"):
        assert callable(getattr(CodeGenerator, name, None)), _changed(f"CodeGenerator.{name}")


def test_generated_code_goes_through_every_hook_of_the_sandbox() -> None:
    source = (
        "{% for x in items %}{{ f(x) ~ 'a' }}{{ x[1:2] }}{% if x < 2 %}text{% endif %}{{ x * 2 }}{% endfor %}"
        "{{ 'constant' }}"
    )
    code = Sandbox(autoescape=False).compile(source, raw=True)

    for hook, what in [
        (
            "environment.call(context, environment.budgeted, ",
            "`for` loops (visit_For, nodes.EnvironmentAttribute)",
        ),
        ("environment.joined((", "`~` (visit_Concat)"),
        ("environment.sliced(", "slices (visit_Getitem)"),
        ("environment.compared(", "comparisons (visit_Compare)"),
        ("environment.count_written(4)", "literal text (visit_Output, nodes.TemplateData)"),
        ("environment.call_binop(context, '*'", "operators (intercepted_binops)"),
        ("environment.call(context,", "calls (SandboxedEnvironment.call)"),
        # The sandbox's `call` tells these apart from a call's arguments by name.
        ("_loop_vars=_loop_vars", "the loop variables passed along with calls"),
        # A `pass_eval_context` finalize keeps Jinja from finalizing constants at compile time,
        # where nothing would count what they write.
        ("environment.finalize(context.eval_ctx, 'constant')", "finalizing constants"),
        ("context.eval_ctx.autoescape", "context.eval_ctx in generated code"),
    ]:
        assert hook in code, _changed(f"the code it generates for {what}: {hook!r} not found")


def test_the_undefined_internals_the_strict_undefined_reads_are_there() -> None:
    assert set(Undefined.__slots__) >= {
        "_undefined_hint",
        "_undefined_obj",
        "_undefined_name",
        "_undefined_exception",
    }, _changed("Undefined's private attributes")
    assert isinstance(vars(Undefined).get("_undefined_message"), property), _changed(
        "Undefined._undefined_message"
    )


def test_filters_still_carry_the_pass_marker_the_limits_read() -> None:
    # `_limited` finds a filter's input after the environment or context that this marker says Jinja
    # passes first.
    assert getattr(DEFAULT_FILTERS["join"], "jinja_pass_arg", None) is not None, _changed(
        "the `jinja_pass_arg` marker of pass_eval_context filters"
    )


def test_jinja_adds_no_filter_test_or_global_that_was_not_reviewed() -> None:
    assert set(DEFAULT_FILTERS) == REVIEWED_FILTERS, _changed(
        f"its filters (added {set(DEFAULT_FILTERS) - REVIEWED_FILTERS or 'none'}, "
        f"removed {REVIEWED_FILTERS - set(DEFAULT_FILTERS) or 'none'})"
    )
    assert set(DEFAULT_TESTS) == REVIEWED_TESTS, _changed(
        f"its tests (added {set(DEFAULT_TESTS) - REVIEWED_TESTS or 'none'}, "
        f"removed {REVIEWED_TESTS - set(DEFAULT_TESTS) or 'none'})"
    )
    assert set(DEFAULT_NAMESPACE) == REVIEWED_GLOBALS, _changed(
        f"its globals (added {set(DEFAULT_NAMESPACE) - REVIEWED_GLOBALS or 'none'}, "
        f"removed {REVIEWED_GLOBALS - set(DEFAULT_NAMESPACE) or 'none'})"
    )
