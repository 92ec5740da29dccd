"""Rendering templates: filters and locales, missing variables, escaping, the sandbox and its limits."""

import time
import uuid
from datetime import UTC, date, datetime
from typing import Any

import pytest

from pulse.db.models import Template
from pulse.errors import InvalidInput
from pulse.templates import compiling
from pulse.templates.compiling import check_template_source
from pulse.templates.limits import LIMITS
from pulse.templates.rendering import render_template
from pulse.templates.schemas import PreviewRequest

NBSP, NARROW_NBSP = "\xa0", "\u202f"  # CLDR's spaces in amounts, numbers and times
SSTI_PAYLOADS = (
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
)


def _template(
    body: str, *, subject: str | None = None, html: str | None = None, variables: Any = ()
) -> Template:
    return Template(
        id=uuid.uuid4(), version=1, subject=subject, body=body, html=html, variables=list(variables)
    )


def _body(source: str, variables: dict[str, Any] | None = None, locale: str | None = None) -> str:
    return render_template(_template(source), variables or {}, locale=locale)["body"]


def _refusal(source: str, variables: dict[str, Any] | None = None) -> InvalidInput:
    with pytest.raises(InvalidInput) as refused:
        render_template(_template(source), variables or {})
    return refused.value


def _assert_no_internals(message: str) -> None:
    for leak in ("Traceback", 'File "', "0x", "jinja2", "uid=", "subclass 'object'", "<class"):
        assert leak not in message, message


# --- filters and locales -----------------------------------------------------------------------


def test_currency_is_formatted_for_the_render_locale() -> None:
    source = "{{ amount|currency('EUR') }}"
    assert _body(source, {"amount": 1234.5}) == "€1,234.50"
    assert _body(source, {"amount": 1234.5}, locale="fr_FR") == f"1{NARROW_NBSP}234,50{NBSP}€"
    assert _body(source, {"amount": "1234.5"}, locale="de-DE") == f"1.234,50{NBSP}€"
    assert _body("{{ 12|currency }}", locale="en_US") == "$12.00"


def test_a_filter_may_name_its_own_locale() -> None:
    assert _body("{{ 1234.5|currency('JPY', 'ja_JP') }}", locale="fr_FR") == "￥1,234"
    assert _body("{{ 1234567.891|format_number(locale='de') }}") == "1.234.567,891"


def test_format_number_groups_digits_and_takes_a_pattern() -> None:
    assert _body("{{ n|format_number }}", {"n": 1234567.891}) == "1,234,567.891"
    assert _body("{{ n|format_number('#,##0.00') }}", {"n": 0.5}, locale="fr_FR") == "0,50"


@pytest.mark.parametrize("day", [date(2026, 3, 1), datetime(2026, 3, 1, 9, 30, tzinfo=UTC), "2026-03-01"])
def test_format_date_accepts_a_date_a_datetime_or_an_iso_string(day: Any) -> None:
    assert _body("{{ day|format_date }}", {"day": day}) == "Mar 1, 2026"
    assert _body("{{ day|format_date('full') }}", {"day": day}, locale="fr-FR") == "dimanche 1 mars 2026"
    assert _body("{{ day|format_date('long') }}", {"day": day}, locale="de_DE") == "1. März 2026"


def test_format_date_takes_a_cldr_pattern() -> None:
    assert _body("{{ '2026-03-01'|format_date('EEEE d MMMM y') }}", locale="es") == "domingo 1 marzo 2026"
    assert _body("{{ '2026-03-01'|format_date('yyyy/MM/dd') }}") == "2026/03/01"


def test_format_datetime_converts_to_a_time_zone() -> None:
    source = "{{ at|format_datetime('short', 'Europe/Paris') }}"
    assert _body(source, {"at": "2026-03-01T23:30:00Z"}, locale="fr_FR") == "02/03/2026 00:30"
    assert _body("{{ at|format_datetime('short') }}", {"at": "2026-03-01T23:30:00Z"}) == (
        f"3/1/26, 11:30{NARROW_NBSP}PM"
    )


@pytest.mark.parametrize(
    ("source", "complaint"),
    [
        ("{{ 'soon'|format_date }}", "not an ISO 8601 date"),
        ("{{ '2026-03-01'|format_date('HH:mm z') }}", "not a date format"),
        ("{{ 'ten'|currency }}", "expects a number"),
        ("{{ 1|currency('EURO') }}", "unknown currency code"),
        ("{{ '1e999999999'|currency }}", "too large"),
        ("{{ 1|format_number(locale='xx_YY') }}", "unknown locale"),
        ("{{ '2026-03-01'|format_datetime(timezone='Mars/Olympus') }}", "unknown time zone"),
    ],
)
def test_a_filter_given_a_bad_value_fails_the_render_with_a_reason(source: str, complaint: str) -> None:
    refused = _refusal(source)
    assert complaint in str(refused)
    assert refused.location == ("template", "body")


def test_an_unknown_render_locale_is_refused() -> None:
    with pytest.raises(InvalidInput, match="unknown locale") as refused:
        render_template(_template("{{ 1|currency }}"), {}, locale="klingon-moon")
    assert refused.value.location == ("body", "locale")


def test_a_preview_request_canonicalises_its_locale() -> None:
    assert PreviewRequest.model_validate({"locale": "pt-br"}).locale == "pt_BR"


# --- parts and escaping ------------------------------------------------------------------------


def test_every_part_is_rendered_and_absent_parts_are_omitted() -> None:
    template = _template("Hi {{ name }}", subject="For {{ name }}", variables=["name"])
    assert render_template(template, {"name": "Ada"}) == {"subject": "For Ada", "body": "Hi Ada"}


def test_html_is_autoescaped_but_subject_and_body_are_plain_text() -> None:
    template = _template(
        "{{ name }} & co",
        subject="{{ name }}",
        html="<p>{{ name }} {{ trusted|safe }}</p>",
        variables=["name"],
    )
    rendered = render_template(template, {"name": '<b>Ada</b> & "Bob"', "trusted": "<i>hi</i>"})
    assert rendered["subject"] == '<b>Ada</b> & "Bob"'
    assert rendered["body"] == '<b>Ada</b> & "Bob" & co'
    assert rendered["html"] == "<p>&lt;b&gt;Ada&lt;/b&gt; &amp; &#34;Bob&#34; <i>hi</i></p>"


# --- missing variables -------------------------------------------------------------------------


def test_declared_variables_that_are_not_given_are_all_named() -> None:
    template = _template("{{ a }}", variables=["a", "order_id", "name"])
    with pytest.raises(InvalidInput) as refused:
        render_template(template, {"a": 1})
    assert str(refused.value) == "missing variables: order_id, name"
    assert refused.value.location == ("body", "variables")


def test_an_undeclared_variable_hit_while_rendering_is_named() -> None:
    refused = _refusal("Hello {{ first_name }}")
    assert str(refused) == "missing variables: first_name"
    assert refused.location == ("body", "variables")
    assert str(_refusal("{% for line in lines %}{{ line }}{% endfor %}")) == "missing variables: lines"


def test_a_missing_attribute_says_what_was_missing() -> None:
    refused = _refusal("{{ order.total }}", {"order": {"id": 1}})
    assert "has no attribute 'total'" in str(refused)
    assert refused.location == ("body", "variables")


def test_optional_variables_can_be_tested_or_defaulted() -> None:
    source = (
        "{% if coupon is defined %}{{ coupon }}{% else %}none{% endif %}/{{ nickname|default('friend') }}"
    )
    assert _body(source) == "none/friend"
    assert _body(source, {"coupon": "SPRING", "nickname": "Ada"}) == "SPRING/Ada"


# --- the sandbox -------------------------------------------------------------------------------


@pytest.mark.parametrize("payload", SSTI_PAYLOADS)
def test_template_injection_is_refused_when_the_template_is_saved(payload: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        check_template_source(None, f"Hello\n{payload}", None)
    message = str(refused.value)
    assert message.startswith("the template tried an unsafe operation")
    assert "line 2" in message
    assert refused.value.location == ("body", "body")
    _assert_no_internals(message)


@pytest.mark.parametrize(
    "payload",
    [
        "{{ ''|attr('__cla' ~ 'ss__') }}",
        "{{ cycler|attr('__in' ~ 'it__')|attr('__glo' ~ 'bals__') }}",
        "{{ name.format_map(name) }}",
        "{{ (1).to_bytes(10, 'big') }}",
        "{{ items.append(1) }}",
    ],
)
def test_reaching_for_internals_at_render_time_is_refused(payload: str) -> None:
    refused = _refusal(payload, {"name": "{0.__class__}", "items": []})
    assert str(refused).startswith("the template tried an unsafe operation in the body: ")
    assert refused.location == ("template", "body")
    _assert_no_internals(str(refused))


def test_templates_cannot_load_other_templates_or_use_removed_globals() -> None:
    for source, complaint in (
        ("{% include 'secrets.txt' %}", "cannot extend, include or import"),
        ("{% set ns = namespace(total=0) %}", "uses namespace"),
        ("{{ lipsum(1000) }}", "uses lipsum"),
    ):
        with pytest.raises(InvalidInput, match=complaint):
            check_template_source(None, source, None)


def test_a_syntax_error_names_the_part_and_the_line() -> None:
    with pytest.raises(InvalidInput) as refused:
        check_template_source("Fine {{ x }}", "fine", "<p>\n{% if %}</p>")
    assert str(refused.value).startswith("the html has a syntax error on line 2")
    assert refused.value.location == ("body", "html")


# --- resource limits ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "{{ 'a' * 10**9 }}",
        "{{ [1] * 10**9 }}",
        "{{ [big] * 1000 }}",
        "{{ 9 ** (9 ** 9) }}",
        "{{ (10 ** 1000) * (10 ** 1000) }}",
        "{{ 'x'|center(1000000000) }}",
        "{{ '%1000000000d' % 1 }}",
        "{{ '%*d' % (1000000000, 1) }}",
        "{{ '%1000000000s'|format('x') }}",
        "{{ ('line\n' * 50000)|indent(100) }}",
        "{{ big|replace('x', big) }}",
        "{{ [big, big]|join(big) }}",
        "{{ [1]|slice(1000000000)|list }}",
        "{{ {'a': 1}|tojson(1000000000) }}",
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "{% macro twice(n) %}{% if n %}{{ twice(n - 1) }}{{ twice(n - 1) }}{% endif %}{% endmacro %}"
        "{{ twice(60) }}",
        "{% macro block() %}{% for i in range(100000) %}{{ big }}{% endfor %}{% endmacro %}"
        "{{ block()|length }}",
    ],
)
def test_resource_exhaustion_is_refused_quickly(source: str) -> None:
    started = time.monotonic()
    refused = _refusal(source, {"big": "x" * 200_000})
    assert time.monotonic() - started < 5
    assert str(refused).startswith("the body went over a limit: ")
    assert refused.location == ("template", "body")


def test_big_but_bounded_arithmetic_still_works() -> None:
    # Jinja's `**` is left-associative: (9 ** 9) ** 9 has 78 digits.
    assert len(_body("{{ 9**9**9 }}")) == 78
    assert _body("{{ '-' * 3 }}{{ 2 ** 10 }}{{ '%05.1f' % 3.14159 }}") == "---1024003.1"
    assert _body("{{ price * 1000000 }} {{ 1000000 * price }}", {"price": 1.5}) == "1500000.0 1500000.0"
    assert _body("{{ 10 ** 300 * 10 ** 300 }}") == "1" + "0" * 600


def test_a_part_over_the_size_limit_is_refused() -> None:
    kilobyte = "x" * 1024
    source = "{% for i in range(count) %}{{ kilobyte }}{% endfor %}"
    assert len(_body(source, {"kilobyte": kilobyte, "count": 256})) == LIMITS.max_chars
    refused = _refusal(source, {"kilobyte": kilobyte, "count": 257})
    assert str(refused) == "the rendered body is longer than 256 KiB"


def test_unbounded_recursion_fails_without_a_traceback() -> None:
    refused = _refusal("{% macro down(n) %}{{ down(n) }}{% endmacro %}{{ down(1) }}")
    assert "recursion" in str(refused)
    _assert_no_internals(str(refused))


def test_arithmetic_errors_fail_the_render_with_a_reason() -> None:
    assert str(_refusal("{{ 1 / 0 }}")) == "the body failed to render: division by zero"


# --- compiled templates are cached --------------------------------------------------------------


@pytest.fixture
def compiled(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The parts compiled from now on, in order."""
    parts: list[str] = []
    compile_part = compiling._compile

    def counting(part: str, source: str, **options: Any) -> Any:
        parts.append(part)
        return compile_part(part, source, **options)

    monkeypatch.setattr(compiling, "_compile", counting)
    return parts


def test_a_template_version_is_compiled_once(compiled: list[str]) -> None:
    template = _template("Hi {{ name }}", subject="S", variables=["name"])
    for name in ("Ada", "Bob", "Cy"):
        assert render_template(template, {"name": name})["body"] == f"Hi {name}"
    assert sorted(compiled) == ["body", "subject"]

    template.body, template.version = "Bye {{ name }}", 2
    assert render_template(template, {"name": "Ada"})["body"] == "Bye Ada"
    assert len(compiled) == 4


def test_the_cache_never_serves_other_source_for_the_same_version() -> None:
    template = _template("first")
    assert render_template(template, {})["body"] == "first"
    template.body = "second"  # as after an update that was rolled back and redone
    assert render_template(template, {})["body"] == "second"


def test_the_cache_holds_compiled_parts_up_to_a_size(
    monkeypatch: pytest.MonkeyPatch, compiled: list[str]
) -> None:
    # A count of entries would not bound the memory: 10,000 tokens compile to 0.75 MB.
    monkeypatch.setattr(compiling, "_compiled", compiling._CompiledTemplates(max_bytes=200_000))
    dense = [_template("{{ x }}" * 700 + str(i)) for i in range(2)]  # 2,100 tokens: about 160 KB
    small = [_template(f"Hi {i}") for i in range(100)]
    for template in (dense[0], dense[1], dense[0]):
        render_template(template, {"x": 1})
    assert len(compiled) == 3  # the second pushed the first out
    for template in small + small:
        render_template(template, {})
    assert len(compiled) == 3 + 100  # many small ones fit
