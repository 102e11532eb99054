"""The Firewall & NAT page."""

from __future__ import annotations

from flask import Blueprint

from webui.views.common import render
from webui.views.nav import Page

bp = Blueprint("firewall", __name__, url_prefix="/" if "firewall" == "overview" else "/firewall")
PAGE = Page("Firewall & NAT", "firewall.index")


@bp.get("/")
def index() -> str:
    return render("firewall.html")
