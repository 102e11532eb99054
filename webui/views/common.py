"""What every page's view uses: the Control, rendering with the shared
context, applying a config section with field-level errors, reading paging
and number fields from a request, and the template filters that format
bytes, times and durations."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from flask import render_template, request, url_for

from homegw.control import ApplyResult, ConfigRejected, Control
from webui.security import state

PAGE_SIZE = 100
MAX_OFFSET = 10_000_000


def control() -> Control:
    return state().control


def render(template: str, **context: Any) -> str:
    return render_template(template, **context)


@dataclass
class FormResult:
    """The outcome of a form: the ApplyResult, or the problems by key path
    (``nat.port_forwards.0.external_port``) for the template to put next to
    their fields, with the user's input kept."""

    applied: ApplyResult | None = None
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.applied is not None


def rejected_errors(rejected: ConfigRejected, fallback: str) -> dict[str, str]:
    """The problems of a refusal by dotted key path (the first per path);
    a problem without a path goes under `fallback`."""
    errors: dict[str, str] = {}
    for problem in rejected.problems:
        errors.setdefault(problem.loc or fallback, problem.msg)
    return errors


def apply_section(section: str, document: Any) -> FormResult:
    """Apply one config section as the API's PUT /config/<section> does; a
    refusal comes back as errors keyed by the full dotted key path."""
    try:
        return FormResult(applied=control().config_apply(document, section=section))
    except ConfigRejected as rejected:
        return FormResult(errors=rejected_errors(rejected, section))


def offset_arg(name: str = "offset") -> int:
    """A paging offset from the query string: a bad or negative one is 0."""
    try:
        value = int(request.args.get(name, "0"))
    except ValueError:
        return 0
    return min(max(value, 0), MAX_OFFSET)


def int_field(value: str, low: int, high: int) -> int | None:
    """A whole number in [low, high] from a form field, or None (the form's
    shape is wrong: say so next to the field)."""
    try:
        number = int(value.strip())
    except ValueError:
        return None
    return number if low <= number <= high else None


def page_url(endpoint: str, offset: int, values: dict[str, Any], args: dict[str, Any]) -> str:
    """The URL of another page of a list: the route's `values`, then the
    query `args` (filters, which may be named like a route value: a table's
    column "name") and the offset."""
    query = {k: v for k, v in args.items() if v not in (None, "")}
    query["offset"] = max(offset, 0)
    return f"{url_for(endpoint, **values)}?{urlencode(query)}"


# -- template filters ---------------------------------------------------------

UNITS = ("B", "kB", "MB", "GB", "TB")


def format_bytes(value: Any) -> str:
    """1234567 -> "1.2 MB" (decimal units, as network tools show them)."""
    if not isinstance(value, int | float):
        return "–"
    size, unit = float(value), 0
    while size >= 1000 and unit < len(UNITS) - 1:
        size, unit = size / 1000, unit + 1
    return f"{int(size)} {UNITS[unit]}" if unit == 0 else f"{size:.1f} {UNITS[unit]}"


def format_time(value: Any) -> str:
    """Unix seconds -> "2026-12-01 14:05:09" in the gateway's local time."""
    if not isinstance(value, int | float) or value <= 0:
        return "–"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(value))


def format_duration(value: Any) -> str:
    """Seconds -> "3 days 4 h", "5 h 12 min", "42 s"."""
    if not isinstance(value, int | float) or value < 0:
        return "–"
    seconds = int(value)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} day{'s' if days != 1 else ''} {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"


FILTERS = {"bytes": format_bytes, "time": format_time, "duration": format_duration}
