"""The Overview page."""

from __future__ import annotations

from flask import Blueprint

from webui.views.common import render
from webui.views.nav import Page

bp = Blueprint("overview", __name__, url_prefix="/" if "overview" == "overview" else "/overview")
PAGE = Page("Overview", "overview.index")


@bp.get("/")
def index() -> str:
    return render("overview.html")
