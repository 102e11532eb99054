"""Bad input is a 400 with a clear message, never a 500: request parsing
helpers and the mapping of homegw.control's errors to HTTP status codes."""

from __future__ import annotations

import logging
from typing import Any, TypeVar

from flask import Flask, Response, jsonify, request
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import HTTPException

from homegw.control import ConfigRejected, Conflict, ModuleRefused, NotFound

log = logging.getLogger(__name__)

M = TypeVar("M", bound=BaseModel)


class BadInput(Exception):
    """A request the API refuses before asking the appliance. -> 400"""

    def __init__(self, message: str, problems: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.problems = problems


def json_body() -> Any:
    if not request.is_json:
        raise BadInput("send the body as JSON with Content-Type: application/json")
    data = request.get_json(silent=True)
    if data is None:
        raise BadInput("the body is not valid JSON (or is null)")
    return data


def json_object() -> dict[str, Any]:
    data = json_body()
    if not isinstance(data, dict):
        raise BadInput(f"the body must be a JSON object, not {type(data).__name__}")
    return data


def parse(model: type[M], data: Any) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = [
            {"loc": ".".join(str(p) for p in e["loc"]) or "(body)", "msg": e["msg"]}
            for e in exc.errors(include_url=False)
        ]
        raise BadInput("invalid request", problems) from None


def body(model: type[M]) -> M:
    return parse(model, json_body())


def _error(status: int, error: str, **extra: Any) -> tuple[Response, int]:
    return jsonify(error=error, **extra), status


def _bad_input(exc: BadInput) -> tuple[Response, int]:
    if exc.problems is None:
        return _error(400, str(exc))
    return _error(400, str(exc), problems=exc.problems)


def _rejected(exc: ConfigRejected) -> tuple[Response, int]:
    problems = [{"loc": p.loc, "msg": p.msg} for p in exc.problems]
    return _error(400, "config rejected; nothing was changed", problems=problems)


REFUSED_BY = {
    "check": "the source check",
    "compile": "the compiler",
    "verifier": "the verifier",
    "limit": "a build limit (time or memory)",
}


def _refused(exc: ModuleRefused) -> tuple[Response, int]:
    """The source check, the compiler or the verifier said no: their words
    and the line of the uploaded source."""
    by = REFUSED_BY.get(exc.stage, exc.stage)
    return _error(
        400,
        f"module refused by {by}; nothing was changed",
        stage=exc.stage,
        line=exc.line,
        message=exc.message,
        log=exc.log,
    )


def _message(exc: Exception) -> str:
    # KeyError's str() quotes its argument
    return str(exc.args[0]) if exc.args else type(exc).__name__


def _not_found(exc: NotFound) -> tuple[Response, int]:
    return _error(404, _message(exc))


def _conflict(exc: Conflict) -> tuple[Response, int]:
    return _error(409, _message(exc))


def _http(exc: HTTPException) -> Response:
    response = exc.get_response()
    response.data = jsonify(error=exc.description or exc.name).get_data()
    response.content_type = "application/json"
    return response


def _unexpected(exc: Exception) -> tuple[Response, int]:
    log.exception("%s %s failed", request.method, request.path)
    return _error(500, "internal error (logged)")


def install(app: Flask) -> None:
    app.register_error_handler(BadInput, _bad_input)
    app.register_error_handler(ConfigRejected, _rejected)
    app.register_error_handler(ModuleRefused, _refused)
    app.register_error_handler(NotFound, _not_found)
    app.register_error_handler(Conflict, _conflict)
    app.register_error_handler(HTTPException, _http)
    app.register_error_handler(Exception, _unexpected)
