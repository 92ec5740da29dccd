"""Hostile templates: every render is bounded in time, memory and size, and whatever goes wrong while
compiling or rendering a part is an InvalidInput naming the part, never a crash."""

import time
import tracemalloc
import uuid
from typing import Any

import pytest

from pulse.db.models import Template
from pulse.errors import InvalidInput
from pulse.templates import limits
from pulse.templates.compiling import check_template_source
from pulse.templates.formatting import locale_named
from pulse.templates.limits import LimitExceeded, Render, TemplateLimits
from pulse.templates.rendering import render_template

# Small limits, so that going over them is quick; `big` stays under max_chars.
TIGHT = TemplateLimits(max_chars=4096, max_work_chars=64 * 1024, max_steps=5_000, max_tokens=500)
BIG = "x" * 3000
PARTS = ("subject", "body", "html")


@pytest.fixture
def tight(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "LIMITS", TIGHT)


def _template(source: str, part: str = "body") -> Template:
    parts: dict[str, str | None] = {"subject": None, "body": "fine", "html": None, part: source}
    return Template(id=uuid.uuid4(), version=1, variables=[], **parts)


def _refusal(source: str, variables: dict[str, Any] | None = None, part: str = "body") -> InvalidInput:
    with pytest.raises(InvalidInput) as refused:
        render_template(_template(source, part), variables or {})
    return refused.value


def _assert_no_internals(message: str) -> None:
    for leak in ("Traceback", 'File "', "0x", "jinja2", "<class"):
        assert leak not in message, message


# --- the templates, under the default limits --------------------------------------------


def _multiplying(operator: str) -> str:
    """292 characters when `~`: each `set` makes a string ten times as long as the one before."""
    lines = ["{% set s0 = 'x' * 250000 %}"]
    for level in (1, 2):
        lines.append(f"{{% set s{level} = " + f" {operator} ".join([f"s{level - 1}"] * 10) + " %}")
    return "\n".join(lines)


@pytest.mark.parametrize(("operator", "built"), [("~", "the joined string"), ("+", "the result")])
def test_concatenation_cannot_build_a_huge_string(operator: str, built: str) -> None:
    template = _template(_multiplying(operator))
    with pytest.raises(InvalidInput) as refused:
        render_template(template, {})  # compiled now, so that what follows is the render alone
    assert str(refused.value) == f"the body went over a limit: {built} would exceed 256 KiB"
    assert refused.value.location == ("template", "body")

    started = time.monotonic()
    tracemalloc.start()
    try:
        with pytest.raises(InvalidInput):
            render_template(template, {})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < 1
    assert peak < 2 * 1024 * 1024  # 25 MB without the limit; now the first 250 KB string


def test_a_render_is_charged_for_the_work_it_does_not_its_loop_turns() -> None:
    # 50,000 upper() of a 250 KB string took 13.7 s, within the loop budget.
    source = "{% for i in range(50000) %}{% set shout = text.upper() %}{% endfor %}done"
    started = time.monotonic()
    refused = _refusal(source, {"text": "a" * 250_000})
    assert time.monotonic() - started < 1
    assert str(refused) == "the body went over a limit: more than 4096 KiB produced while rendering"


def test_a_render_that_runs_past_its_deadline_is_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    # Comparing long strings builds nothing, and 100,000 turns are within the loop budget: only the
    # clock stops it (it would take seconds).
    monkeypatch.setattr(limits, "LIMITS", TemplateLimits(deadline_ms=50))
    source = "{% for i in range(100000) %}{% if left == right %}{% endif %}{% endfor %}done"
    variables = {"left": "x" * 200_000, "right": "x" * 199_999 + "x"}
    started = time.monotonic()
    refused = _refusal(source, variables)
    assert time.monotonic() - started < 1
    assert str(refused) == "the body went over a limit: rendering took more than 50 ms of CPU time"


def test_waiting_for_the_processor_does_not_count_against_the_deadline() -> None:
    render = Render.start(locale_named("en"), TemplateLimits(deadline_ms=20))
    time.sleep(0.05)  # as a thread waits for the CPU or the GIL on a busy machine
    render.check_deadline()
    with pytest.raises(LimitExceeded, match="rendering took more than 20 ms of CPU time"):
        while True:  # busy: 20 ms of processor time
            render.check_deadline()


def test_normal_renders_go_on_after_a_hostile_one() -> None:
    _refusal(_multiplying("~"))
    assert render_template(_template("Hi {{ name }}"), {"name": "Ada"})["body"] == "Hi Ada"


# --- every way to build or scan a value is counted ----------------------------------------------


@pytest.mark.usefixtures("tight")
@pytest.mark.parametrize(
    ("source", "complaint"),
    [
        ("{{ big ~ big }}", "the joined string would exceed 4 KiB"),
        ("{{ big + big }}", "the result would exceed 4 KiB"),
        ("{{ [big] + [big] }}", "the result would exceed 4 KiB"),
        ("{{ [big, 'y']|join(big) }}", "the joined string would exceed 4 KiB"),
        ("{{ '%s%s' % (big, big) }}", "the formatted string would exceed 4 KiB"),
        ("{{ big|replace('x', 'yy') }}", "the replaced string would exceed 4 KiB"),
        ("{{ big|center(100000) }}", "the centred string would exceed 4 KiB"),
        ("{{ big|indent(100000) }}", "the indented string would exceed 4 KiB"),
        ("{{ big|wordwrap(1) }}", "the wrapped string would exceed 4 KiB"),
        ("{{ big|batch(100000, 'x')|list }}", "the filled batch would exceed 4 KiB"),
        ("{{ big|list }}", "a filter's result would exceed 4 KiB"),
        ("{% for i in range(100) %}{% set copy = big[::-1] %}{% endfor %}", "produced while rendering"),
        ("{% for i in range(100) %}{% set loud = big|upper %}{% endfor %}", "produced while rendering"),
        ("{% for i in range(100) %}{% set loud = big.upper() %}{% endfor %}", "produced while rendering"),
        ("{% for i in range(100) %}{% set copy = big ~ '' %}{% endfor %}", "produced while rendering"),
        (
            "{% for i in range(100) %}{{ loop.cycle(big, big)|length }}{% endfor %}",
            "produced while rendering",
        ),
        ("{% for i in range(100) %}{{ dict(text=big)|length }}{% endfor %}", "produced while rendering"),
        ("{{ ([[1]] * 300)|sum(start=[]) }}", "produced while rendering"),
        ("{% macro deeper(n) %}{{ big }}{{ deeper(n + 1) }}{% endmacro %}{{ deeper(0) }}", "produced"),
        ("{% for x in [1] recursive %}{{ big }}{{ loop([1]) }}{% endfor %}", "produced while rendering"),
        ("{% for c in big %}{% for d in big %}{% endfor %}{% endfor %}", "more than 5000 loop iterations"),
        # Sorting 250,000 characters took over half a second: filters' items are counted as loops' are.
        ("{% for i in range(10) %}{{ big[:600]|sort|length }}{% endfor %}", "more than 5000 loop iterations"),
        ("{{ 1|round(1000000000, 'ceil') }}", "round takes a precision of at most 100 digits"),
        ("{{ 5|round(-1000000000) }}", "round takes a precision of at most 100 digits"),
        ("{{ ('f' * 2000)|int(base=16) // 3 }}", "would exceed 4096 bits"),
        ("{{ 9 ** (9 ** 9) }}", "the power would exceed 4096 bits"),
    ],
)
def test_whatever_builds_a_value_is_counted(source: str, complaint: str) -> None:
    started = time.monotonic()
    refused = _refusal(source, {"big": BIG})
    assert time.monotonic() - started < 1
    assert str(refused).startswith("the body went over a limit: ")
    assert complaint in str(refused)
    assert refused.location == ("template", "body")


def test_filters_may_name_a_few_locales() -> None:
    source = "{% for name in names %}{{ 1|format_number(locale=name) }}{% endfor %}"
    assert render_template(_template(source), {"names": ["en", "fr"] * 20})["body"] == "1" * 40
    refused = _refusal(source, {"names": ["en", "fr", "de", "es", "it", "nl", "pt", "sv", "da", "fi", "pl"]})
    assert str(refused) == "the body went over a limit: the filters of one render may name at most 10 locales"


def test_a_large_ordinary_render_fits_the_default_limits() -> None:
    source = (
        "{% for event in events %}{{ loop.index }}. {{ event.name|title }} paid "
        "{{ event.amount|currency('EUR') }} on {{ event.day|format_date('long') }}"
        "{% if event.note %} ({{ event.note|truncate(40) }}){% endif %}\n{% endfor %}"
        "Total: {{ events|sum(attribute='amount')|currency('EUR') }}"
    )
    # About 4 ms of CPU: far within the deadline, even on a busy machine.
    events = [
        {"name": f"customer {i}", "amount": i, "day": "2026-03-01", "note": "n" * 50} for i in range(100)
    ]
    body = render_template(_template(source), {"events": events})["body"]
    assert body.endswith("Total: €4,950.00")
    assert len(body) > 8_000


# --- every render error is an InvalidInput naming the part ---------------------------------------


@pytest.mark.parametrize("part", PARTS)
@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("{{ 'abc'|truncate(-5) }}", "expected length >= 3, got -5"),
        ("{{ '%(a)s' % {} }}", "no key 'a'"),
        ("{{ 1|format_number(locale=5) }}", "unknown locale '5'"),
        ("{{ (1, 2)|xmlattr }}", "'tuple' object has no attribute 'items'"),
        ("{{ cycler().next() }}", "at least one item has to be provided"),
        ("{{ 1|format_number(format=5) }}", "is not iterable"),
        ("{{ ('1' * 100)|currency }}", "currency cannot format"),
        ("{{ 1|format_number('0.' + '0' * 90) }}", "format_number cannot format 1"),
        ("{{ '2026-03-01'|format_date('y' * 200) }}", "a format is at most 100 characters"),
        ("{{ range(100000000) }}", "Range too big"),
        ("{{ 2.0 ** 100000 }}", "Numerical result out of range"),
    ],
)
def test_a_failing_filter_or_operation_is_refused_naming_the_part(
    part: str, source: str, reason: str
) -> None:
    refused = _refusal(source, {"big": "9" * 5000}, part=part)
    assert str(refused).startswith(f"the {part} failed to render: ")
    assert reason in str(refused)
    assert refused.location == ("template", part)
    _assert_no_internals(str(refused))


@pytest.mark.parametrize("part", PARTS)
def test_a_nul_character_in_the_output_is_refused(part: str) -> None:
    refused = _refusal("a{{ '\\x00' }}b", part=part)
    assert str(refused) == f"NUL characters (\\u0000) are not accepted in the rendered {part}"
    assert refused.location == ("template", part)


def test_an_error_message_is_kept_short() -> None:
    refused = _refusal("{{ big|currency }}", {"big": "x" * 10_000})
    assert len(str(refused)) < 350
    assert str(refused).endswith("…")


def test_a_reference_to_the_template_itself_names_no_module() -> None:
    refused = _refusal("{{ self.missing() }}")
    assert (
        str(refused)
        == "the body used a value it was not given: 'TemplateReference object' has no attribute 'missing'"
    )


# --- compiling -----------------------------------------------------------------------------------


def _nested(opening: str, middle: str, closing: str, depth: int) -> str:
    return opening * depth + middle + closing * depth


@pytest.mark.parametrize(
    "source",
    [
        _nested("{% if x %}", "deep", "{% endif %}", 150),
        _nested("{% filter upper %}", "deep", "{% endfilter %}", 150),
        _nested("{% macro m() %}", "deep", "{% endmacro %}", 150),
        "{{ x" + "|e" * 150 + " }}",  # took 5 s to compile, 300 took 55 s
        "{{ " + "not " * 150 + "x }}",
        "{{ " + "1 if x else " * 150 + "2 }}",
        "{{ " + " + ".join(["x"] * 150) + " }}",
        "{{ x" + ".y" * 150 + " }}",
    ],
)
def test_a_source_nested_too_deeply_is_refused_when_saved(source: str) -> None:
    started = time.monotonic()
    with pytest.raises(InvalidInput) as refused:
        check_template_source(None, source, None)
    assert time.monotonic() - started < 0.5
    assert str(refused.value) == "the body is nested too deeply to compile (more than 100 levels)"
    assert refused.value.location == ("body", "body")


@pytest.mark.parametrize(
    "source",
    [
        "{{ " + _nested("(", "1", ")", 150) + " }}",  # Jinja's parser recurses
        "{{ " + _nested("[", "1", "]", 150) + " }}",
        "{{ " + _nested("f(", "1", ")", 150) + " }}",
        _nested("{% for x in y %}", "deep", "{% endfor %}", 25),  # Python nests at most 20 loops
    ],
)
def test_a_source_python_cannot_nest_is_refused_when_saved(source: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        check_template_source(None, source, None)
    assert str(refused.value) == "the body is nested too deeply to compile"
    assert refused.value.location == ("body", "body")


@pytest.mark.parametrize("part", PARTS)
def test_a_compile_error_names_the_part(part: str) -> None:
    sources = {"subject": "fine", "body": "fine", "html": "fine", part: "{{ x|no_such_filter }}"}
    with pytest.raises(InvalidInput) as refused:
        check_template_source(sources["subject"], sources["body"], sources["html"])
    assert str(refused.value) == f"the {part} has a syntax error on line 1: No filter named 'no_such_filter'."
    assert refused.value.location == ("body", part)


def test_a_literal_python_cannot_read_is_refused_when_saved() -> None:
    with pytest.raises(InvalidInput) as refused:
        check_template_source(None, "{{ 1" + "0" * 5000 + " }}", None)
    assert str(refused.value).startswith("the body could not be compiled: Exceeds the limit (4300 digits)")


def test_pprint_is_not_provided() -> None:
    # It takes time in proportion to a value's size times its depth: seconds on a deep variable.
    with pytest.raises(InvalidInput, match="No filter named 'pprint'"):
        check_template_source(None, "{{ x|pprint }}", None)


def test_a_source_with_too_many_tokens_is_refused_quickly() -> None:
    started = time.monotonic()
    with pytest.raises(InvalidInput) as refused:
        check_template_source(None, "{{ x }}" * 4000, None)  # 12,000 tokens: it took a second to compile
    assert time.monotonic() - started < 0.5
    assert str(refused.value).startswith("the body is too long to compile: more than 10000 tokens")
    assert refused.value.location == ("body", "body")


def test_text_is_cheap_however_long() -> None:
    check_template_source(None, "<p>Hello {{ name }}</p>" + "<p>text</p>" * 9000, None)


def test_the_limits_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULSE_TEMPLATE_DEADLINE_MS", "250")
    monkeypatch.setenv("PULSE_TEMPLATE_MAX_CHARS", "65536")
    configured = TemplateLimits()
    assert (configured.deadline_ms, configured.max_chars) == (250, 65536)
    assert (configured.max_work_chars, configured.max_steps, configured.max_tokens) == (
        4 * 1024 * 1024,
        100_000,
        10_000,
    )


def test_html_is_counted_as_escaped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "LIMITS", TIGHT)
    refused = _refusal("{% for i in range(5) %}{{ quotes }}{% endfor %}", {"quotes": '"' * 3000}, part="html")
    assert str(refused) == "the html went over a limit: a printed value would exceed 4 KiB"
    assert render_template(_template("{{ quotes }}", "html"), {"quotes": '"' * 600})["html"] == "&#34;" * 600
