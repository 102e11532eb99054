"""User IO modules in the web UI (issue 14): the upload and replace form
(read into a ModuleUpload's fields, what the user typed kept on a refusal),
where user modules sit in their chains, and a module's own page under
/modules/user/<name>: its source (escaped, read-only), its exposed maps
(entries as hex, add / delete one), its audit records, the replace form,
Confirm / Revert now / Move / Delete (behind a confirmation page).

The IO modules page itself (webui/views/modules.py) lists the user modules
and carries the upload form; it registers this blueprint under its own."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, abort, flash, redirect, request, url_for
from pydantic import ValidationError
from werkzeug import Response
from werkzeug.datastructures import FileStorage

from homegw.control import ConfigRejected, Conflict, ModuleRefused, NotFound
from homegw.usermodules.spec import (
    MAX_SOURCE_BYTES,
    TRIAL_DEFAULT_S,
    TRIAL_MAX_S,
    TRIAL_MIN_S,
    MapEntry,
)
from homegw.usermodules.uploads import placed
from webui.views.common import control, int_field, render

log = logging.getLogger(__name__)

bp = Blueprint("user_modules", __name__, url_prefix="/user")
NAME = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
MAP_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,31}$")
DEFINE = re.compile(r"^(?:-D)?([A-Za-z_]\w*)(?:=(.*))?$")
INTEGER = re.compile(r"^-?[0-9]+$")
HEX_SEPARATORS = re.compile(r"[\s:.-]")
AUDIT_LIMIT = 500
#: the text fields of the form, as typed, with their defaults
FORM_DEFAULTS = {
    "name": "",
    "nic": "lan",
    "hook": "xdp",
    "position": "first",
    "function": "",
    "source": "",
    "defines": "",
    "maps": "",
    "counters": "",
    "trial_s": str(TRIAL_DEFAULT_S),
}


@dataclass
class UploadForm:
    """The upload form: what the user typed (fields), the problems by field
    name, and the refusal of the compiler or verifier (ModuleRefused) with
    the source's lines for showing the refused one."""

    fields: dict[str, str] = field(default_factory=lambda: dict(FORM_DEFAULTS))
    errors: dict[str, str] = field(default_factory=dict)
    refusal: ModuleRefused | None = None

    @property
    def source_lines(self) -> list[str]:
        return self.fields.get("source", "").splitlines()


def form_of_upload(upload: dict[str, Any]) -> UploadForm:
    """The form filled from a module's (or an example's) upload fields."""
    fields = dict(FORM_DEFAULTS)
    for key in ("name", "nic", "hook", "position", "source"):
        if upload.get(key) is not None:
            fields[key] = str(upload[key])
    fields["function"] = upload.get("function") or ""
    fields["defines"] = "\n".join(f"{k}={v}" for k, v in (upload.get("defines") or {}).items())
    fields["maps"] = ", ".join(upload.get("maps") or [])
    fields["counters"] = ", ".join(upload.get("counters") or [])
    fields["trial_s"] = str(upload.get("trial_s") or TRIAL_DEFAULT_S)
    return UploadForm(fields)


def _uploaded_source(file: FileStorage | None, form: UploadForm) -> None:
    """A chosen source file replaces the textarea's text (and fills it, so
    the form keeps it on a refusal)."""
    if file is None or not file.filename:
        return
    data = file.read(MAX_SOURCE_BYTES + 1)
    if len(data) > MAX_SOURCE_BYTES:
        form.errors["source"] = f"the file is over {MAX_SOURCE_BYTES // 1024} KiB"
        return
    try:
        form.fields["source"] = data.decode("utf-8")
    except UnicodeDecodeError:
        form.errors["source"] = "the file is not UTF-8 text"


def _defines(text: str, form: UploadForm) -> dict[str, int | str]:
    """NAME=value (or -DNAME=value, or NAME for 1), one per line or
    separated by spaces."""
    out: dict[str, int | str] = {}
    for word in text.split():
        found = DEFINE.match(word)
        if not found:
            form.errors["defines"] = f"not NAME=value: {word!r}"
            continue
        name, value = found.group(1), found.group(2)
        value = "1" if value is None else value
        out[name] = int(value) if INTEGER.match(value) else value
    return out


def _names(text: str) -> list[str]:
    return [word for word in re.split(r"[\s,]+", text) if word]


def read_upload_form(name: str | None = None) -> tuple[UploadForm, dict[str, Any]]:
    """The request's upload form as typed, and the upload it makes (a
    replace's name comes from the path)."""
    form = UploadForm(
        {key: request.form.get(key, default) for key, default in FORM_DEFAULTS.items()}
    )
    if name is not None:
        form.fields["name"] = name
    form.fields["source"] = form.fields["source"].replace("\r\n", "\n")
    _uploaded_source(request.files.get("source_file"), form)
    trial_s = int_field(form.fields["trial_s"], TRIAL_MIN_S, TRIAL_MAX_S)
    if trial_s is None:
        form.errors["trial_s"] = f"{TRIAL_MIN_S} to {TRIAL_MAX_S} seconds"
    upload = {
        "name": form.fields["name"].strip(),
        "nic": form.fields["nic"],
        "hook": form.fields["hook"],
        "position": form.fields["position"].strip() or "first",
        "source": form.fields["source"],
        "function": form.fields["function"].strip() or None,
        "defines": _defines(form.fields["defines"], form),
        "maps": _names(form.fields["maps"]),
        "counters": _names(form.fields["counters"]),
        "trial_s": trial_s or TRIAL_DEFAULT_S,
    }
    return form, upload


def refused_into(form: UploadForm, exc: Exception) -> None:
    """A refusal of the Control put into the form: field problems next to
    their fields (by the first part of the problem's loc), a ModuleRefused
    as the form's refusal, a Conflict as the form's message."""
    if isinstance(exc, ConfigRejected):
        for problem in exc.problems:
            key = (problem.loc or "").split(".")[0]
            form.errors.setdefault(key if key in FORM_DEFAULTS else "form", problem.msg)
    elif isinstance(exc, ModuleRefused):
        form.refusal = exc
    else:
        form.errors["form"] = str(exc.args[0]) if exc.args else str(exc)


def submit_upload(name: str | None, admin: str | None) -> tuple[UploadForm, dict[str, Any] | None]:
    """Read the form and upload (name None) or replace the module; the
    module, or the form with its problems."""
    form, upload = read_upload_form(name)
    if form.errors:
        return form, None
    try:
        if name is None:
            return form, control().module_upload(upload, admin)
        return form, control().module_replace(name, upload, admin)
    except (ConfigRejected, ModuleRefused, Conflict) as exc:
        refused_into(form, exc)
        return form, None


# -- user modules in their chains ---------------------------------------------------


def chain_with_users(
    builtins: list[str], users: list[dict[str, Any]], nic: str, hook: str
) -> list[str]:
    """The names of nic's `hook` chain with its user modules in place, in
    upload order, placed as the manager places them (uploads.placed)."""
    order = list(builtins)
    for module in users:
        if module.get("nic") == nic and module.get("hook", "xdp") == hook:
            order = placed(order, module["name"], str(module.get("position") or "last"))
    return order


def move_choices(chain: list[str], name: str) -> list[tuple[str, str]]:
    """Where a module can move in its chain: (position, label)."""
    others = [n for n in chain if n != name]
    choices = [("first", "First"), ("last", "Last")]
    choices += [(f"before:{n}", f"Before {n}") for n in others]
    choices += [(f"after:{n}", f"After {n}") for n in others]
    return choices


def examples() -> list[dict[str, Any]]:
    try:
        return control().module_examples()
    except Exception:  # the page works without its examples
        log.exception("the example modules could not be read")
        return []


def example_form(name: str) -> UploadForm | None:
    for example in examples():
        if example.get("name") == name:
            return form_of_upload(example.get("upload") or {})
    return None


# -- a module's page --------------------------------------------------------------


def _module_or_404(name: str) -> dict[str, Any]:
    if not NAME.match(name):
        abort(404)
    try:
        return control().user_module(name)
    except NotFound:
        abort(404)


def _map_entries(name: str, maps: list[str]) -> list[tuple[str, list[dict[str, Any]]]]:
    out = []
    for map_name in maps:
        try:
            out.append((map_name, control().module_map(name, map_name)))
        except NotFound:
            log.warning("%s: its map %s is not readable", name, map_name)
    return out


def _module_page(
    name: str,
    status: int = 200,
    form: UploadForm | None = None,
    map_form: dict[str, Any] | None = None,
) -> tuple[str, int]:
    module = _module_or_404(name)
    audit = [r for r in control().module_audit(AUDIT_LIMIT) if r.get("module") == name]
    return render(
        "user_module.html",
        module=module,
        source_lines=(module.get("source") or "").splitlines(),
        maps=_map_entries(name, module.get("maps") or []),
        audit=audit,
        form=form or form_of_upload(module),
        map_form=map_form or {},
    ), status


@bp.get("/<name>")
def page(name: str) -> tuple[str, int]:
    return _module_page(name)


@bp.post("/<name>/replace")
def replace(name: str) -> Response | tuple[str, int]:
    _module_or_404(name)
    form, module = submit_upload(name, request.remote_addr)
    if module is None:
        return _module_page(name, 400, form=form)
    flash(f"{name} version {module.get('version')} is on trial: confirm it on this page.", "info")
    return redirect(url_for("modules.index"))


def _action(name: str, verb: str, act: Any) -> Response:
    if not NAME.match(name):
        abort(404)
    try:
        act(name)
    except NotFound:
        abort(404)
    except (Conflict, ConfigRejected) as exc:
        flash(f"{name} cannot be {verb}: {_reason(exc)}", "error")
        return redirect(url_for("modules.index"))
    flash(f"{name} {verb}.", "info")
    return redirect(url_for("modules.index"))


def _reason(exc: Exception) -> str:
    if isinstance(exc, ConfigRejected):
        return "; ".join(p.msg for p in exc.problems)
    return str(exc.args[0]) if exc.args else str(exc)


@bp.post("/<name>/confirm")
def confirm(name: str) -> Response:
    return _action(name, "confirmed", control().module_confirm)


@bp.post("/<name>/revert")
def revert(name: str) -> Response:
    return _action(name, "reverted", control().module_revert)


@bp.post("/<name>/move")
def move(name: str) -> Response:
    position = request.form.get("position", "")
    return _action(name, f"moved ({position})", lambda n: control().module_move(n, position))


@bp.get("/<name>/delete")
def delete_confirmation(name: str) -> tuple[str, int]:
    return render("user_module_delete.html", module=_module_or_404(name)), 200


@bp.post("/<name>/delete")
def delete(name: str) -> Response:
    if request.form.get("confirmed") != "yes":
        return redirect(url_for("modules.user_modules.delete_confirmation", name=name))
    return _action(name, "deleted", control().module_delete)


def _hex(text: str) -> str:
    return HEX_SEPARATORS.sub("", text).lower()


@bp.post("/<name>/maps/<map_name>")
def map_set(name: str, map_name: str) -> Response | tuple[str, int]:
    if not MAP_NAME.match(map_name):
        abort(404)
    typed = {
        "map": map_name,
        "key": request.form.get("key", ""),
        "value": request.form.get("value", ""),
    }
    errors: dict[str, str] = {}
    try:
        entry = MapEntry(key=_hex(typed["key"]), value=_hex(typed["value"]))
        control().module_map_set(name, map_name, entry.key, entry.value)
    except ValidationError as exc:
        for problem in exc.errors():
            errors.setdefault(
                str(problem["loc"][0]), "hex bytes, e.g. 0a1b2c (: and spaces allowed)"
            )
    except ConfigRejected as exc:
        for problem in exc.problems:
            errors.setdefault(
                problem.loc if problem.loc in ("key", "value") else "form", problem.msg
            )
    except Conflict as exc:
        errors["form"] = _reason(exc)
    except NotFound:
        abort(404)
    if errors:
        return _module_page(name, 400, map_form={**typed, "errors": errors})
    flash(f"{map_name}: entry {entry.key} set.", "info")
    return redirect(url_for("modules.user_modules.page", name=name))


@bp.post("/<name>/maps/<map_name>/delete")
def map_delete(name: str, map_name: str) -> Response:
    if not MAP_NAME.match(map_name):
        abort(404)
    key = _hex(request.form.get("key", ""))
    try:
        found = control().module_map_delete(name, map_name, key)
    except NotFound:
        abort(404)
    except ConfigRejected as exc:
        flash(f"{map_name}: {_reason(exc)}", "error")
        return redirect(url_for("modules.user_modules.page", name=name))
    flash(f"{map_name}: entry {key} deleted." if found else f"{map_name}: no entry {key}.", "info")
    return redirect(url_for("modules.user_modules.page", name=name))
