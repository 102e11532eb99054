"""The System page: change the admin's password, API tokens (list, create
showing the secret once, revoke), backup (the running config as YAML) and
restore (validated with a dry run first, its problems listed by key path),
restart with a confirmation step, the last 500 log lines by module, the
version, and on an image the upgrade (a .hgwup upload, read in chunks into
the inactive slot, then a reboot once the answer is out) and the factory
reset with a typed confirmation (homegw/upgrade, the API's same calls).

The password and tokens go through the same AuthStore calls as the API's
/api/v1/auth routes (webui/api/session_routes.py): the current password is
checked under the login rate limit, and a new one ends every other session.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import yaml
from flask import Blueprint, Response, make_response, request
from pydantic import ValidationError

from homegw.auth import ADMIN, AuthError, check_password_rules
from homegw.control import ConfigRejected
from homegw.upgrade.manifest import BundleRejected
from webui.api.models import TokenRequest
from webui.api.system_routes import ChunkedBody, admit_bundles
from webui.security import start_session, state
from webui.views.common import control, render
from webui.views.formtools import action, done, failed, install, saved, text
from webui.views.nav import Page

log = logging.getLogger(__name__)

bp = Blueprint("system", __name__, url_prefix="/system")
PAGE = Page("System", "system.index")
install(bp)
bp.url_value_preprocessor(admit_bundles)  # the upgrade's upload may be big

Errors = dict[str, str]
LOG_LINES = 500
MAX_BACKUP = 512 * 1024  # a config is a few KiB; a bigger file is not a backup of one
#: log sources besides the modules (homegw.control.Control.logs)
OTHER_LOG_SOURCES = ("appliance", "webui")
RESET_WORD = "factory-reset"


@bp.get("/")
def index() -> str:
    return _page()


def _page(errors: Errors | None = None, **values: Any) -> str:
    module = request.args.get("module", "")
    sources = _log_sources()
    chosen = module if module in sources else ""
    return render(
        "system.html",
        status=control().status(),
        system=control().system(),
        tokens=sorted(state().auth.tokens(), key=lambda t: t.created_at),
        logs=control().logs(chosen or None, LOG_LINES),
        log_options=[("", "All modules")] + [(name, name) for name in sources],
        log_module=chosen,
        errors=errors or {},
        new_token=values.get("new_token"),
        token_name=values.get("token_name", ""),
        restore_problems=values.get("restore_problems", []),
    )


def _refused(errors: Errors, status: int = 400, **values: Any) -> tuple[str, int]:
    return _page(errors, **values), status


def _log_sources() -> list[str]:
    names = {module["name"] for module in control().modules()}
    return sorted(names | set(OTHER_LOG_SOURCES))


# -- password -----------------------------------------------------------------


def _client() -> str:
    return request.remote_addr or "?"


@bp.post("/password")
@action
def password() -> Response | tuple[str, int]:
    form = request.form  # passwords as typed: no stripping
    current, new = form.get("current_password", ""), form.get("new_password", "")
    again = form.get("new_password_again", "")
    web = state()
    wait = web.limiter.retry_after(_client(), web.clock())
    if wait > 0:
        message = f"Too many failed attempts. Try again in {int(wait) + 1} seconds."
        return _refused({"current_password": message}, 429)
    if not web.auth.check_login(ADMIN, current):
        web.limiter.failed(_client(), web.clock())
        log.warning("password change refused from %s: wrong current password", _client())
        return _refused({"current_password": "The current password is wrong."}, 403)
    if new != again:
        return _refused({"new_password_again": "The two new passwords differ."})
    try:
        check_password_rules(new)
    except AuthError as exc:
        return _refused({"new_password": f"{str(exc).capitalize()}."})
    web.auth.set_password(new)
    web.sessions.close_all()  # every other browser logs in again with the new one
    start_session()  # this one stays logged in
    return done("Password changed. Every other session was logged out.", "system.index")


# -- API tokens -----------------------------------------------------------------


@bp.post("/tokens")
@action
def token_create() -> tuple[str, int]:
    name = text("token_name")
    try:
        TokenRequest(name=name)  # the API's rules for a token's name
    except ValidationError:
        message = "1-64 letters, digits, spaces, '.', '_' or '-', starting with a letter or digit."
        return _refused({"token_name": message}, token_name=name)
    info, secret = state().auth.create_token(name)
    log.info("token %s (%s) created from the web UI", info.id, info.name)
    # shown in this answer only: never stored, never put in the session cookie
    return _page(new_token={"name": info.name, "secret": secret}), 200


@bp.post("/tokens/<token_id>/revoke")
@action
def token_revoke(token_id: str) -> Response:
    if not state().auth.revoke(token_id):
        return failed("That token does not exist (any more).", "system.index")
    return done(f"Token {token_id} revoked: it no longer works.", "system.index")


# -- backup and restore ------------------------------------------------------------


@bp.get("/backup")
def backup() -> Response:
    text_ = "# homegw configuration backup\n" + yaml.safe_dump(
        control().config_get(), sort_keys=False
    )
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    response = Response(text_, content_type="application/yaml; charset=utf-8")
    response.headers["Content-Disposition"] = f'attachment; filename="homegw-config-{stamp}.yaml"'
    return response


def _backup_document() -> tuple[dict[str, Any] | None, str]:
    """The uploaded backup as a mapping, or why it is not one."""
    upload = request.files.get("backup")
    if upload is None or not upload.filename:
        return None, "Choose a backup file (a .yaml file from Download backup)."
    content = upload.stream.read(MAX_BACKUP + 1)
    if len(content) > MAX_BACKUP:
        return None, f"The file is too big for a backup (at most {MAX_BACKUP // 1024} KiB)."
    try:
        text_ = content.decode("utf-8")
        if any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text_, yaml.SafeLoader)):
            # a backup never has them, and nested aliases blow up to billions of values
            return None, "The file is not a homegw backup: it uses YAML aliases (*name)."
        document = yaml.safe_load(text_)
    except (UnicodeDecodeError, yaml.YAMLError):
        return None, "The file is not a homegw backup: it is not YAML text."
    if not isinstance(document, dict):
        return None, "The file is not a homegw backup: it holds no configuration sections."
    return document, ""


@bp.post("/restore")
@action
def restore() -> Response | tuple[str, int]:
    document, why = _backup_document()
    if document is None:
        return _refused({"backup": why})
    try:
        control().config_apply(document, dry_run=True)
    except ConfigRejected as rejected:
        problems = [(p.loc or "top level", p.msg) for p in rejected.problems]
        message = f"Nothing was restored: the backup has {len(problems)} problem(s)."
        return _refused({"backup": message}, restore_problems=problems)
    result = control().config_apply(document)
    log.info("config restored from a backup: %s", ", ".join(result.changed) or "no change")
    return done(saved("The restored configuration", result), "system.index")


# -- upgrade and factory reset (on an image) ------------------------------------------


@bp.post("/upgrade")
@action
def upgrade() -> Response:
    bundle = request.files.get("bundle")
    if bundle is None or not bundle.filename:
        return failed("Choose an upgrade file (homegw-<version>.hgwup).", "system.index")
    log.warning("upgrade uploaded from the web UI by %s: %s", _client(), bundle.filename)
    try:
        result = control().system_upgrade(ChunkedBody(bundle.stream))
    except BundleRejected as exc:
        return failed(f"The upgrade was refused: {exc.reason}. Nothing changed.", "system.index")
    return _then_reboot(render("system_rebooting.html", upgrade=result))


@bp.post("/factory-reset")
@action
def factory_reset() -> Response | tuple[str, int]:
    if text("reset_confirm") != RESET_WORD:
        return _refused({"reset_confirm": f"Type {RESET_WORD} to confirm."})
    log.warning("factory reset asked from the web UI by %s", _client())
    result = control().system_factory_reset()
    if not result["rebooting"]:
        return done(f"Factory reset: {result['message']}.", "system.index")
    return _then_reboot(render("system_rebooting.html", reset=result))


def _then_reboot(html: str) -> Response:
    """The answer; the machine reboots once it is sent."""
    response = make_response(html)
    response.call_on_close(control().system_reboot)
    return response


# -- restart -------------------------------------------------------------------------


@bp.get("/restart")
def restart_confirm() -> str:
    return render("system_restart.html", restarting=False)


@bp.post("/restart")
@action
def restart() -> str:
    log.warning("restart asked from the web UI by %s", _client())
    control().restart()
    return render("system_restart.html", restarting=True)
