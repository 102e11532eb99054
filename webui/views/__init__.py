"""The web UI's pages: server-rendered HTML over homegw.control.Control, the
same operations the JSON API calls (the UI can do nothing the API cannot).

Each page is a module here with a ``PAGE`` (its place in the navigation) and
a ``bp`` (its Flask blueprint); PAGES is the one list of them, and the
navigation bar is drawn from it. Error pages (webui.views.errors) and the
template filters (webui.views.common.FILTERS) are installed here too.
"""

from __future__ import annotations

import logging
from pathlib import Path

from flask import Flask

from webui.views import (
    auth_pages,
    devices,
    dhcp,
    dns,
    errors,
    firewall,
    modules,
    overview,
    parental,
    system,
)
from webui.views.common import FILTERS, page_url
from webui.views.nav import Page

log = logging.getLogger(__name__)

#: the navigation, in order; each module's PAGE says its label and endpoint
PAGE_MODULES = (overview, devices, parental, dhcp, dns, firewall, modules, system)
#: the chart library scripts/vendor.sh brings (git-ignored)
VENDORED = ("vendor/uPlot.iife.min.js", "vendor/uPlot.min.css")


def pages() -> list[Page]:
    return [module.PAGE for module in PAGE_MODULES]


def register(app: Flask) -> None:
    app.register_blueprint(auth_pages.bp)
    for module in PAGE_MODULES:
        app.register_blueprint(module.bp)
    app.jinja_env.globals["nav_pages"] = pages
    app.jinja_env.globals["page_url"] = page_url
    app.jinja_env.filters.update(FILTERS)
    errors.install(app)
    check_vendored(Path(app.static_folder or ""))


def check_vendored(static: Path) -> None:
    missing = [name for name in VENDORED if not (static / name).is_file()]
    if missing:
        log.error("the pages' charts are missing (%s): run scripts/vendor.sh", ", ".join(missing))
