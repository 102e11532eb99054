"""The web UI's pages: server-rendered HTML over homegw.control.Control, the
same operations the JSON API calls (the UI can do nothing the API cannot).

Each page is a module here with a ``PAGE`` (its place in the navigation) and
a ``bp`` (its Flask blueprint); PAGES is the one list of them, and the
navigation bar is drawn from it.
"""

from __future__ import annotations

from flask import Flask

from webui.views import auth_pages, devices, dhcp, dns, firewall, modules, overview, system
from webui.views.nav import Page

#: the navigation, in order; each module's PAGE says its label and endpoint
PAGE_MODULES = (overview, devices, dhcp, dns, firewall, modules, system)


def pages() -> list[Page]:
    return [module.PAGE for module in PAGE_MODULES]


def register(app: Flask) -> None:
    app.register_blueprint(auth_pages.bp)
    for module in PAGE_MODULES:
        app.register_blueprint(module.bp)
    app.jinja_env.globals["nav_pages"] = pages
