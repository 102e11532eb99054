"""What the DHCP, DNS, Firewall & NAT and System pages share: reading form
fields of the right shape, the Post/Redirect/Get answer after a success, the
re-rendered page after a refusal, and paging of the big tables."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Response, flash, redirect, request, url_for
from werkzeug.exceptions import RequestEntityTooLarge

from homegw.control import ApplyResult, Conflict, NotFound
from homegw.control import Page as TablePage

log = logging.getLogger(__name__)

ROWS_PER_PAGE = 100
MAX_OFFSET = 1_000_000_000


def text(name: str) -> str:
    """A form field, stripped ('' when missing)."""
    return request.form.get(name, "").strip()


def lines(name: str) -> list[str]:
    """A textarea with one value per line: the non-empty lines, stripped."""
    return [line.strip() for line in request.form.get(name, "").splitlines() if line.strip()]


def whole_number(value: str, loc: str, errors: dict[str, str], what: str = "a number") -> Any:
    """``value`` as an int when it is one; else the error for ``loc`` (the
    form's own shape check; the config's validation judges the number)."""
    if value.isdigit():
        return int(value)
    errors[loc] = f"must be {what}, not {value!r}" if value else f"required: enter {what}"
    return value


def port_or_range(value: str) -> Any:
    """A port as an int, a range ("8000-8010") as the text the config reads."""
    return int(value) if value.isdigit() else value


def editing_arg(name: str = "edit") -> int | None:
    """The row of a list shown for editing (``?edit=<index>``), if any."""
    value = request.args.get(name, "")
    return int(value) if value.isdigit() else None


def done(message: str, endpoint: str, **values: Any) -> Response:
    """Post/Redirect/Get: flash what happened, then back to the page."""
    flash(message, "ok")
    return redirect(url_for(endpoint, **values))


def failed(message: str, endpoint: str, **values: Any) -> Response:
    flash(message, "error")
    return redirect(url_for(endpoint, **values))


def saved(what: str, result: ApplyResult | None) -> str:
    """The flash message after a config change: what, and how it applied."""
    if result is None or not result.changed:
        return f"{what}: nothing changed."
    how = set(result.applied.values())
    if "restart" in how:
        return f"{what} saved; homegw restarts to apply it (the internet keeps working)."
    return f"{what} saved."


@dataclass(frozen=True)
class Pager:
    """Where a page of a table is: rows first..last of total, and the
    offsets of the previous and next pages (None at the ends)."""

    total: int
    first: int
    last: int
    previous: int | None
    next: int | None

    @classmethod
    def of(cls, page: TablePage) -> Pager:
        shown = len(page.items)
        previous = max(0, page.offset - page.limit) if page.offset > 0 else None
        following = page.offset + page.limit if page.offset + page.limit < page.total else None
        first = page.offset + 1 if shown else 0
        return cls(page.total, first, page.offset + shown, previous, following)


def iso_utc(seconds: float) -> str:
    """Unix seconds as ``2026-12-01T15:56:58Z``, for <time datetime> (the
    ``iso_utc`` filter; people read the ``time`` filter's local time)."""
    return datetime.fromtimestamp(float(seconds), tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def install(bp: Blueprint) -> None:
    """The template filters, and the page's answer to an upload over the
    request limit (a message on the page, not the API's JSON)."""
    bp.add_app_template_filter(iso_utc, "iso_utc")
    index = f"{bp.name}.index"

    def too_big(exc: RequestEntityTooLarge) -> Response:
        limit = _mib(request.max_content_length)  # the request's: a bundle's route admits more
        return failed(f"The upload is too big: at most {limit} MiB.", index)

    bp.register_error_handler(RequestEntityTooLarge, too_big)


def action(view: Callable[..., Any]) -> Callable[..., Any]:
    """A POST view of a page: what the Control refuses as a whole (Conflict,
    NotFound) comes back to the page as a message, not as the API's JSON."""

    @functools.wraps(view)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return view(*args, **kwargs)
        except (Conflict, NotFound) as exc:
            log.warning("%s %s refused: %s", request.method, request.path, _message(exc))
            return failed(_message(exc), f"{request.blueprint}.index")

    return run


def _message(exc: Exception) -> str:
    # KeyError (NotFound) quotes its argument in str()
    return str(exc.args[0]) if exc.args else type(exc).__name__


def _mib(limit: int | None) -> int:
    return int(limit or 0) // (1024 * 1024)


STALE = "The list changed meanwhile (another window or user): nothing was changed; look again."


def still_there(items: list[dict[str, Any]], index: int, identity: Callable[[Any], str]) -> bool:
    """Row ``index`` of ``items`` is still the row the form showed: its
    identity matches the form's hidden ``original`` field (a row form edits
    by index, so a list changed meanwhile must not be written over)."""
    return 0 <= index < len(items) and identity(items[index]) == text("original")
