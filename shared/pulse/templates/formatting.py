"""Locale-aware filters: `currency(code="USD", locale=None)`, `format_number(format=None, locale=None)`,
`format_date(format="medium", locale=None)` and `format_datetime(format="medium", timezone=None,
locale=None)`. A date may be a date, a datetime or an ISO 8601 string; a format is a name (`short`,
`medium`, `long`, `full`) or a CLDR pattern (`d MMM y`). `locale` defaults to the render's (the
recipient's)."""

from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel import Locale, UnknownLocaleError
from babel.dates import format_date as babel_format_date
from babel.dates import format_datetime as babel_format_datetime
from babel.numbers import format_currency, format_decimal, is_currency
from jinja2.runtime import Undefined
from markupsafe import soft_str

from pulse.templates.limits import LimitExceeded, current_render

# CLDR patterns are a few characters; babel takes time in proportion to a pattern's length.
MAX_PATTERN: Final = 100
# Locales one render's filters may name (`currency('EUR', 'fr_FR')`): loading one's data takes time.
MAX_NAMED_LOCALES: Final = 10


def normalize_locale(value: str) -> str:
    """A known locale in canonical form ("fr-FR" and "fr_fr" give "fr_FR"); ValueError otherwise."""
    return str(locale_named(value))


@lru_cache(maxsize=256)
def locale_named(value: str) -> Locale:
    """The locale, its data loaded (babel loads it on first use otherwise, possibly mid-render)."""
    try:
        locale = Locale.parse(value.strip().replace("-", "_"))
    except (ValueError, TypeError, UnknownLocaleError) as error:
        raise ValueError(f"unknown locale {value!r} (use a language tag like en, fr_FR or pt-BR)") from error
    _ = locale.number_symbols
    return locale


def _filter_locale(locale: Any) -> Locale:
    render = current_render.get()
    if locale is None:
        return render.locale
    name = soft_str(locale)
    if name not in render.named_locales and len(render.named_locales) >= MAX_NAMED_LOCALES:
        raise LimitExceeded(f"the filters of one render may name at most {MAX_NAMED_LOCALES} locales")
    render.named_locales.add(name)
    # The first use of a locale in a process loads its data (tens of milliseconds): not the
    # template's doing, so not counted against its deadline.
    with render.deadline_paused():
        return locale_named(name)


def _pattern(format: Any, filter_name: str) -> Any:
    if isinstance(format, str) and len(format) > MAX_PATTERN:
        raise ValueError(f"{filter_name}: a format is at most {MAX_PATTERN} characters")
    return format


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
    try:
        return format_currency(_decimal(value, "currency"), code, locale=_filter_locale(locale))
    except InvalidOperation as error:  # babel's, for more digits than its decimal context holds
        raise ValueError(f"currency cannot format {value!r}") from error


def _format_number(value: Any, format: str | None = None, locale: str | None = None) -> str:
    """`{{ 1234567.891|format_number }}` → "1,234,567.891" (en), "1.234.567,891" (de)."""
    number = _decimal(value, "format_number")
    try:
        return format_decimal(number, format=_pattern(format, "format_number"), locale=_filter_locale(locale))
    except InvalidOperation as error:  # babel's, for more digits than its decimal context holds
        raise ValueError(f"format_number cannot format {value!r} as {format!r}") from error


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
        return babel_format_date(day, format=_pattern(format, "format_date"), locale=_filter_locale(locale))
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
    return babel_format_datetime(
        moment, format=_pattern(format, "format_datetime"), tzinfo=zone, locale=_filter_locale(locale)
    )


LOCALE_FILTERS: Final = {
    "currency": _currency,
    "format_number": _format_number,
    "format_date": _format_date,
    "format_datetime": _format_datetime,
}
