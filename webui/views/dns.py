"""The DNS page: upstream servers (``wan.dns``), block lists (the sources
with their entry count, last update and error; add by URL or by file
upload, remove, update now), the always-allow and always-block lists,
device groups, the query log (search, filter by device, paged) and the top
and top blocked domains.

Each change is one config_apply of its section (``wan`` for the upstreams,
``dns`` for the rest), so the config's own validation judges it; its errors
land next to their fields (``dns.deny.2`` as line 3 of "Always block").
"""

from __future__ import annotations

import logging
import re
from typing import Any

from flask import Blueprint, Response, request

from homegw.control import ConfigRejected
from homegw.control import Page as TablePage
from webui.views.common import FormResult, apply_section, control, offset_arg, render
from webui.views.formtools import (
    ROWS_PER_PAGE,
    STALE,
    Pager,
    action,
    done,
    editing_arg,
    failed,
    install,
    lines,
    saved,
    still_there,
    text,
)
from webui.views.nav import Page

log = logging.getLogger(__name__)

bp = Blueprint("dns", __name__, url_prefix="/dns")
PAGE = Page("DNS", "dns.index")
install(bp)

Errors = dict[str, str]
TOP = 10
ALL_ROWS = 10_000_000  # a table's every row, for the device filter (see _queries)


@bp.get("/")
def index() -> str:
    return _page()


def _page(errors: Errors | None = None, **values: Any) -> str:
    """The page; after a refusal, ``values`` holds the user's input by form:
    ``upstreams``, ``lists`` ({allow, deny}), ``blocklist_url``,
    ``new_group``, ``edited_groups`` ({index: values})."""
    dns = control().config_get("dns")
    devices = control().devices()
    search, device = request.args.get("q", "").strip(), request.args.get("device", "").strip()
    queries = _queries(search, device)
    stats = control().dns_stats(TOP)
    return render(
        "dns.html",
        upstreams=values.get("upstreams", control().config_get("wan").get("dns", [])),
        blocklists=control().blocklists(),
        lists=values.get("lists") or {"allow": dns.get("allow", []), "deny": dns.get("deny", [])},
        blocklist_url=values.get("blocklist_url", ""),
        url_loc=f"dns.blocklists.{len(dns.get('blocklists', []))}",
        groups=list(dns.get("groups", [])),
        new_group=values.get("new_group", {}),
        edited_groups=values.get("edited_groups", {}),
        editing_group=editing_arg("edit_group"),
        stats=stats,
        queries=queries,
        pager=Pager.of(queries),
        search=search,
        device=device,
        device_options=_device_options(devices, stats.get("top_clients", [])),
        names=_names(devices),
        errors=errors or {},
    )


def _refused(errors: Errors, **values: Any) -> tuple[str, int]:
    log.info("DNS change refused: %s", errors)
    return _page(errors, **values), 400


# -- the query log ---------------------------------------------------------------


def _queries(search: str, device: str) -> TablePage:
    """One page of the query log. The table's filters match strings as
    substrings, so 192.168.1.1 would match 192.168.1.10 too: with a device
    chosen, its rows are picked exactly here and paged here."""
    filters = {"name": search} if search else {}
    offset = offset_arg()
    if not device:
        return control().table("dns_queries", offset, ROWS_PER_PAGE, filters)
    every = control().table("dns_queries", 0, ALL_ROWS, filters | {"client": device}).items
    mine = [row for row in every if row.get("client") == device]
    return TablePage(len(mine), offset, ROWS_PER_PAGE, mine[offset : offset + ROWS_PER_PAGE])


def _device_options(
    devices: list[dict[str, Any]], top_clients: list[dict[str, Any]]
) -> list[tuple[str, str]]:
    """The Device select: every known device's addresses, then the clients of
    the query log the gateway knows no device for."""
    options = [("", "All devices")]
    for device in devices:
        for address in device.get("addresses", []):
            options.append((address, f"{device.get('name') or device.get('mac')} ({address})"))
    known = {value for value, _ in options}
    options += [(c["name"], c["name"]) for c in top_clients if c.get("name") not in known]
    return options


def _names(devices: list[dict[str, Any]]) -> dict[str, str]:
    """Client address -> device name, for the query log."""
    return {a: d["name"] for d in devices if d.get("name") for a in d.get("addresses", [])}


# -- upstreams, allow and deny --------------------------------------------------------


@bp.post("/upstreams")
@action
def upstreams() -> Response | tuple[str, int]:
    servers = lines("upstreams")
    wan = control().config_get("wan")
    wan["dns"] = servers
    result = apply_section("wan", wan)
    if not result.ok:
        return _refused(result.errors, upstreams=servers)
    return done(saved("Upstream DNS servers", result.applied), "dns.index")


def _apply_dns(change: dict[str, Any]) -> FormResult:
    dns = control().config_get("dns")
    dns.update(change)
    return apply_section("dns", dns)


@bp.post("/lists")
@action
def allow_deny() -> Response | tuple[str, int]:
    typed = {"allow": lines("allow"), "deny": lines("deny")}
    result = _apply_dns(typed)
    if not result.ok:
        return _refused(result.errors, lists=typed)
    return done(saved("Always allow and always block", result.applied), "dns.index")


# -- block lists --------------------------------------------------------------------


def _blocklists() -> list[str]:
    return list(control().config_get("dns").get("blocklists", []))


@bp.post("/blocklists")
@action
def blocklist_add() -> Response | tuple[str, int]:
    url = text("blocklist_url")
    sources = _blocklists()
    loc = f"dns.blocklists.{len(sources)}"
    if not url:
        return _refused({loc: "required: e.g. https://example.com/hosts.txt"}, blocklist_url=url)
    if url in sources:
        return _refused({loc: "this block list is in the list already"}, blocklist_url=url)
    result = _apply_dns({"blocklists": [*sources, url]})
    if not result.ok:
        return _refused(result.errors, blocklist_url=url)
    return done(saved(f"Block list {url}", result.applied), "dns.index")


def upload_name(filename: str) -> str:
    """A name to keep an uploaded list under: the file's name without its
    extension, in a-z 0-9 - (``Ad Servers.txt`` -> ``ad-servers``)."""
    stem = filename.rsplit("/", 1)[-1].rsplit("\\", 1)[-1].rsplit(".", 1)[0]
    name = re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-")[:32].strip("-")
    return name or "uploaded"


@bp.post("/blocklists/upload")
@action
def blocklist_upload() -> Response | tuple[str, int]:
    upload = request.files.get("blocklist_file")
    if upload is None or not upload.filename:
        return _refused({"blocklist": "Choose a file: one domain per line, or a hosts file."})
    name = upload_name(upload.filename)
    try:
        stored = control().blocklist_store(name, upload.stream.read())
    except ConfigRejected as rejected:
        return _refused({"blocklist": "; ".join(p.msg for p in rejected.problems)})
    sources = _blocklists()
    if stored["source"] not in sources:
        result = _apply_dns({"blocklists": [*sources, stored["source"]]})
        if not result.ok:
            return _refused({"blocklist": "; ".join(result.errors.values())})
    return done(f"Block list {name} uploaded: {stored['entries']} entries.", "dns.index")


@bp.post("/blocklists/remove")
@action
def blocklist_remove() -> Response | tuple[str, int]:
    source = text("source")
    dns = control().config_get("dns")
    groups = [
        dict(g, blocklists=[s for s in g.get("blocklists", []) if s != source])
        for g in dns.get("groups", [])
    ]
    kept = [s for s in dns.get("blocklists", []) if s != source]
    result = _apply_dns({"blocklists": kept, "groups": groups})
    if not result.ok:
        return _refused(result.errors)
    return done(f"Block list {source} removed.", "dns.index")


@bp.post("/blocklists/refresh")
@action
def blocklist_refresh() -> Response:
    control().blocklists_refresh()
    return done("Block lists updated from their URLs.", "dns.index")


# -- groups ---------------------------------------------------------------------------


def group_name(group: dict[str, Any]) -> str:
    return str(group.get("name", ""))


def _group_form() -> tuple[dict[str, Any], dict[str, Any]]:
    """The group form's values as typed and the group's fields as the config
    holds them (its allow and deny lists are kept by the caller)."""
    typed = {
        "name": text("name"),
        "clients": lines("clients"),
        "blocklists": lines("blocklists"),
        "use_default": request.form.get("use_default") == "on",
    }
    return typed, dict(typed)


def _apply_groups(groups: list[dict[str, Any]]) -> FormResult:
    return _apply_dns({"groups": groups})


@bp.post("/groups")
@action
def group_add() -> Response | tuple[str, int]:
    groups = list(control().config_get("dns").get("groups", []))
    typed, group = _group_form()
    result = _apply_groups([*groups, group])
    if not result.ok:
        return _refused(result.errors, new_group=typed)
    return done(saved(f"Group {typed['name']}", result.applied), "dns.index")


@bp.post("/groups/<int:index>")
@action
def group_save(index: int) -> Response | tuple[str, int]:
    groups = list(control().config_get("dns").get("groups", []))
    if not still_there(groups, index, group_name):
        return failed(STALE, "dns.index")
    typed, group = _group_form()
    groups[index] = {**groups[index], **group}
    result = _apply_groups(groups)
    if not result.ok:
        return _refused(result.errors, edited_groups={index: typed})
    return done(saved(f"Group {typed['name']}", result.applied), "dns.index")


@bp.post("/groups/<int:index>/delete")
@action
def group_delete(index: int) -> Response | tuple[str, int]:
    groups = list(control().config_get("dns").get("groups", []))
    if not still_there(groups, index, group_name):
        return failed(STALE, "dns.index")
    gone = groups.pop(index)
    result = _apply_groups(groups)
    if not result.ok:
        return _refused(result.errors)
    return done(f"Group {gone['name']} deleted.", "dns.index")
