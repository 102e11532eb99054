"""Error pages in the layout of the UI: a page URL that fails answers an
HTML page (404, 405, 500, ...); the API, /metrics and /healthz keep the JSON
errors of webui.api.errors, whose handlers these wrap."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, render_template, request
from werkzeug.exceptions import HTTPException

from homegw.control import ConfigRejected, Conflict, NotFound
from webui.security import is_page_request, login_method

log = logging.getLogger(__name__)

Handler = Callable[[Any], Any]
TITLES = {
    400: "Bad request",
    403: "Not allowed",
    404: "Page not found",
    405: "Not allowed here",
    409: "Not possible now",
    413: "Too large",
}
MESSAGES = {
    404: "There is no such page here. It may have been removed, or the link is wrong.",
    405: "This address does not take that kind of request.",
}


def error_page(status: int, message: str | None = None) -> tuple[str, int]:
    """The HTML page for `status`, with the navigation when logged in."""
    try:
        logged_in = login_method() is not None
    except Exception:  # the login check itself failed: no navigation
        logged_in = False
    title = TITLES.get(status, "Something went wrong")
    text = message or MESSAGES.get(status) or "The request could not be answered."
    return render_template("error.html", title=title, message=text, show_nav=logged_in), status


def _first_arg(exc: Exception) -> str:
    return str(exc.args[0]) if exc.args else type(exc).__name__


def _plain_500() -> Response:
    return Response("internal error (logged)\n", status=500, content_type="text/plain")


def install(app: Flask) -> None:
    """Put HTML in front of the API's handlers for HTTP errors, the
    Control's errors (a page that does not catch one) and unexpected
    exceptions, for page requests only."""
    handlers: dict[type, Handler] = app.error_handler_spec[None][None]
    for kind in (HTTPException, NotFound, Conflict, ConfigRejected, Exception):
        _wrap(app, kind, handlers.get(kind))


def _wrap(app: Flask, kind: type[BaseException], api_handler: Handler | None) -> None:
    def handle(exc: Any) -> Any:
        if not is_page_request():
            if api_handler is None:
                raise exc
            return api_handler(exc)
        if isinstance(exc, HTTPException):
            return error_page(exc.code or 500)
        if isinstance(exc, NotFound):
            return error_page(404)
        if isinstance(exc, Conflict):
            return error_page(409, _first_arg(exc))
        if isinstance(exc, ConfigRejected):
            problems = "; ".join(f"{p.loc}: {p.msg}" if p.loc else p.msg for p in exc.problems)
            return error_page(400, f"The change was refused, nothing was changed: {problems}")
        log.exception("page %s failed", request.path)
        try:
            return error_page(500, "The gateway could not build this page; the error is logged.")
        except Exception:  # the layout itself is broken: plain text
            log.exception("the error page failed too")
            return _plain_500()

    app.register_error_handler(kind, handle)
