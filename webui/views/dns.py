"""The DNS page."""

from __future__ import annotations

from flask import Blueprint

from webui.views.common import render
from webui.views.nav import Page

bp = Blueprint("dns", __name__, url_prefix="/" if "dns" == "overview" else "/dns")
PAGE = Page("DNS", "dns.index")


@bp.get("/")
def index() -> str:
    return render("dns.html")
