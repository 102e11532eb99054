"""The DHCP page."""

from __future__ import annotations

from flask import Blueprint

from webui.views.common import render
from webui.views.nav import Page

bp = Blueprint("dhcp", __name__, url_prefix="/" if "dhcp" == "overview" else "/dhcp")
PAGE = Page("DHCP", "dhcp.index")


@bp.get("/")
def index() -> str:
    return render("dhcp.html")
