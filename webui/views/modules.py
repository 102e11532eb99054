"""The IO modules page."""

from __future__ import annotations

from flask import Blueprint

from webui.views.common import render
from webui.views.nav import Page

bp = Blueprint("modules", __name__, url_prefix="/" if "modules" == "overview" else "/modules")
PAGE = Page("IO modules", "modules.index")


@bp.get("/")
def index() -> str:
    return render("modules.html")
