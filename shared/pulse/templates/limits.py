"""What one render may cost (`PULSE_TEMPLATE_*`), and the account a render keeps against it.

Template code comes from API users and runs in the gateway's request threads (inside the request's
transaction) and in the scheduler's single thread, so a render must never hold a thread, memory or a
transaction for long. The bounds are kept in-process rather than by rendering in a pool of child
processes with rlimits: a templated send renders in tens of microseconds, less than a round trip to a
child process (pickling variables and result) would cost. The account is watertight because the
sandbox (sandbox.py) routes through it every operation whose cost grows with its values:

- every value a render builds (operators, `~`, slices, filters, tests, calls and method results,
  printed output) is at most `max_chars` long, checked before it is built wherever its inputs do not
  bound it (`'a' * n`, `'%9999d' % x`, `|center(n)`...), after otherwise;
- its size is charged to `max_work_chars`, the render's allowance for all it produces, which bounds
  the memory one render can hold;
- loop iterations, calls, and the items of filters that run Python code for each (`sort`, `map`...)
  are steps, at most `max_steps`;
- the deadline, on the render's processor time, is checked at each of these, and at each comparison
  and attribute lookup.
  No single operation runs long: each takes time at most linear in values of at most `max_chars`
  (`sum` of lists and `round` to a huge precision, which would not, are checked; `pprint` is not
  provided); the slowest, pure-Python filters such as `wordwrap` or `urlize` over 256 KiB, take about
  0.25 s. A render ends within the deadline plus that.

Compiling is bounded apart, by the number of tokens of a part's source (`max_tokens`).
"""

import re
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from babel import Locale
from jinja2.sandbox import SecurityError
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

MAX_INT_BITS: Final = 4096  # integers a template computes with (about 1233 digits)
# A printf conversion: `%(name)-10.2f`; its width and precision size the output.
_PRINTF_SPEC: Final = re.compile(r"%(?:\([^)]*\))?[#0 +-]*(\*|\d+)?(?:\.(\*|\d*))?[hlL]?(.)", re.DOTALL)

_Value = TypeVar("_Value")


class TemplateLimits(BaseSettings):
    """Read once per process by the ones that render: the gateway and the scheduler."""

    model_config = SettingsConfigDict(env_prefix="PULSE_TEMPLATE_", env_file=".env", extra="ignore")

    max_chars: int = Field(
        256 * 1024,
        ge=1024,
        description="Longest value a render may build, each rendered part included: characters of a "
        "string, or about the characters a list or dict prints as.",
    )
    max_work_chars: int = Field(
        4 * 1024 * 1024,
        ge=1024,
        description="Characters one render may produce in all, every intermediate value, printed "
        "value and buffer counted: what bounds its memory.",
    )
    max_steps: int = Field(
        100_000,
        ge=1,
        description="Loop iterations, calls and items that filters such as `sort` go through, in one render.",
    )
    deadline_ms: float = Field(
        100, gt=0, description="Processor time one render (all its parts) may take, in milliseconds."
    )
    max_tokens: int = Field(
        10_000,
        ge=100,
        description="Tokens (names, literals, operators, tag delimiters, runs of text) in the source of "
        "one part: what bounds the time to compile it.",
    )


LIMITS = TemplateLimits()


class LimitExceeded(SecurityError):
    """A render went over one of its limits."""


@dataclass
class Render:
    """What one render (all its parts) has used so far, and the locale its filters format for.

    The deadline is on the thread's processor time: on a busy machine a thread also waits for the CPU
    or the GIL, and that must not make an ordinary render fail. The processor time is slow to read
    (a system call), so the wall clock, which can only be ahead of it, is read first.
    """

    locale: Locale
    limits: TemplateLimits
    cpu_started: float  # time.thread_time() at the start, moved on by what is not counted
    deadline: float  # on time.monotonic()'s clock, when the processor time is next read
    steps: int = 0
    work: int = 0
    named_locales: set[str] = field(default_factory=set)  # by its filters (see formatting.py)

    @classmethod
    def start(cls, locale: Locale, limits: TemplateLimits) -> "Render":
        return cls(locale, limits, time.thread_time(), time.monotonic() + limits.deadline_ms / 1000)

    def step(self) -> None:
        self.steps += 1
        if self.steps > self.limits.max_steps:
            raise LimitExceeded(
                f"more than {self.limits.max_steps} loop iterations, calls and filtered items"
            )
        self.check_deadline()

    def charge(self, characters: int) -> None:
        self.work += characters
        if self.work > self.limits.max_work_chars:
            raise LimitExceeded(f"more than {_kib(self.limits.max_work_chars)} produced while rendering")
        self.check_deadline()

    def size_within(self, value: object, what: str) -> int:
        """How long `value` is (see `size_of`), refused if longer than max_chars."""
        limit = self.limits.max_chars
        size = size_of(value, limit)
        if size > limit:
            raise LimitExceeded(f"{what} would exceed {_kib(limit)}")
        return size

    def check_deadline(self) -> None:
        if time.monotonic() > self.deadline:
            left = self.limits.deadline_ms / 1000 - (time.thread_time() - self.cpu_started)
            if left <= 0:
                raise LimitExceeded(f"rendering took more than {self.limits.deadline_ms:g} ms of CPU time")
            self.deadline = time.monotonic() + left

    @contextmanager
    def deadline_paused(self) -> Iterator[None]:
        wall, cpu = time.monotonic(), time.thread_time()
        try:
            yield
        finally:
            self.deadline += time.monotonic() - wall
            self.cpu_started += time.thread_time() - cpu


current_render: ContextVar[Render] = ContextVar("pulse_template_render")


def size_of(value: object, limit: int) -> int:
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
        total += size_of(child, limit - total) + 2
        if total > limit:
            break
    return total


def refuse_over(estimate: int, what: str) -> None:
    """Refuse a value about to be built whose size is estimated to exceed max_chars."""
    limit = current_render.get().limits.max_chars
    if estimate > limit:
        raise LimitExceeded(f"{what} would exceed {_kib(limit)}")


def refuse_bits_over(bits: int, what: str) -> None:
    if bits > MAX_INT_BITS:
        raise LimitExceeded(f"{what} would exceed {MAX_INT_BITS} bits")


def checked(value: _Value, what: str) -> _Value:
    """`value`, refused if it is longer than max_chars."""
    current_render.get().size_within(value, what)
    return value


def produced(value: _Value, what: str) -> _Value:
    """`value`, just built by the template: refused if it is longer than max_chars (or an integer
    over MAX_INT_BITS), else charged to the render's work."""
    render = current_render.get()
    if isinstance(value, int):
        refuse_bits_over(value.bit_length(), what)
    render.charge(render.size_within(value, what))
    return value


def check_printf(fmt: str, values: Any) -> None:
    """Refuse `fmt % values` when its result could exceed max_chars."""
    limit = current_render.get().limits.max_chars
    conversions = widths = 0
    for match in _PRINTF_SPEC.finditer(fmt):
        width, precision, conversion = match.groups()
        if "*" in (width, precision):
            raise LimitExceeded("`*` widths are not supported in format strings")
        widths += int(width or 0) + int(precision or 0)
        conversions += conversion != "%"
    if isinstance(values, tuple):
        substituted = sum(size_of(value, limit) for value in values)
    else:
        sizes = [
            size_of(value, limit) for value in (values.values() if isinstance(values, Mapping) else [values])
        ]
        substituted = conversions * max(sizes, default=0)
    refuse_over(len(fmt) + widths + substituted, "the formatted string")


def _kib(characters: int) -> str:
    return f"{characters // 1024} KiB"
