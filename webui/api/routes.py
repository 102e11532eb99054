"""/api/v1: status, config, modules, tables and actions, each a thin call
of homegw.control.Control (the appliance's interface)."""

from __future__ import annotations

import re
from dataclasses import asdict
from typing import Any

from flask import Blueprint, Response, jsonify, request

from homegw.control import Control, NotFound
from webui.api.errors import BadInput, body, json_object, parse
from webui.api.models import OrderRequest, TableQuery, config_sections
from webui.security import state

NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
NICS = ("lan", "wan")
MAX_FILTERS = 16
MAX_FILTER_VALUE = 256


def _name(value: str, what: str) -> str:
    """A module, table or section name; anything else cannot exist."""
    if not NAME.match(value):
        raise NotFound(f"no {what} {value!r}")
    return value


def _control() -> Control:
    return state().control


def add_routes(bp: Blueprint) -> None:
    _status_and_config(bp)
    _modules(bp)
    _tables_and_actions(bp)


def _status_and_config(bp: Blueprint) -> None:
    # only real sections match: PUT /config/history is a 405, not a section
    section = f"<any({','.join(config_sections())}):section>"

    @bp.get("/status")
    def status() -> Response:
        return jsonify(_control().status())

    @bp.get("/config")
    def config_get() -> Response:
        return jsonify(_control().config_get())

    @bp.put("/config")
    def config_put() -> Response:
        return jsonify(asdict(_control().config_apply(json_object())))

    @bp.post("/config/validate")
    def config_validate() -> Response:
        return jsonify(asdict(_control().config_apply(json_object(), dry_run=True)))

    @bp.post(f"/config/validate/{section}")
    def config_validate_section(section: str) -> Response:
        result = _control().config_apply(json_object(), section=section, dry_run=True)
        return jsonify(asdict(result))

    @bp.get("/config/history")
    def config_history() -> Response:
        return jsonify(history=_control().config_history())

    @bp.post("/config/rollback/<int:version>")
    def config_rollback(version: int) -> Response:
        return jsonify(asdict(_control().config_rollback(version)))

    @bp.get(f"/config/{section}")
    def config_get_section(section: str) -> Response:
        return jsonify(_control().config_get(section))

    @bp.put(f"/config/{section}")
    def config_put_section(section: str) -> Response:
        return jsonify(asdict(_control().config_apply(json_object(), section=section)))


def _modules(bp: Blueprint) -> None:
    @bp.get("/modules")
    def modules() -> Response:
        control = _control()
        return jsonify(modules=control.modules(), user_modules=control.user_modules())

    @bp.post("/modules/<name>/enable")
    def module_enable(name: str) -> Response:
        return jsonify(_control().module_set_enabled(_name(name, "module"), True))

    @bp.post("/modules/<name>/disable")
    def module_disable(name: str) -> Response:
        return jsonify(_control().module_set_enabled(_name(name, "module"), False))

    @bp.put(f"/modules/order/<any({','.join(NICS)}):nic>")
    def module_order(nic: str) -> Response:
        order = body(OrderRequest)
        return jsonify(_control().module_set_order(nic, list(order.modules)))


def _table_query() -> tuple[TableQuery, dict[str, str]]:
    paging: dict[str, Any] = {}
    filters: dict[str, str] = {}
    for key in request.args:
        values = request.args.getlist(key)
        if len(values) > 1:
            raise BadInput(f"query parameter {key!r} given {len(values)} times")
        if key in TableQuery.model_fields:
            paging[key] = values[0]
        elif not NAME.match(key):
            raise BadInput(f"{key!r} is not a column name (lower case, digits, _)")
        elif len(values[0]) > MAX_FILTER_VALUE:
            raise BadInput(f"filter {key!r} is longer than {MAX_FILTER_VALUE} characters")
        else:
            filters[key] = values[0]
    if len(filters) > MAX_FILTERS:
        raise BadInput(f"at most {MAX_FILTERS} filters")
    return parse(TableQuery, paging), filters


def _tables_and_actions(bp: Blueprint) -> None:
    @bp.get("/tables")
    def tables() -> Response:
        return jsonify(tables=_control().tables())

    @bp.get("/tables/<name>")
    def table(name: str) -> Response:
        name = _name(name, "table")
        query, filters = _table_query()
        page = _control().table(name, query.offset, query.limit, filters)
        return jsonify(asdict(page))

    @bp.post("/actions/wan/renew")
    def renew_wan() -> Response:
        _control().renew_wan_lease()
        return jsonify(done=True, action="wan/renew")

    @bp.post("/actions/tables/<name>/flush")
    def flush_table(name: str) -> Response:
        name = _name(name, "table")
        return jsonify(table=name, removed=_control().flush_table(name))

    @bp.post("/actions/modules/<name>/restart")
    def restart_module(name: str) -> Response:
        name = _name(name, "module")
        _control().restart_module(name)
        return jsonify(done=True, action=f"modules/{name}/restart")
